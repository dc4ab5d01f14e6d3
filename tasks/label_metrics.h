/* Label formulation: the paper's multi-view scoring. A video is classified from several views (spatial
 * crops x temporal clips); its class probabilities are the views' softmaxes averaged (not their logits),
 * as the official evaluation does. */
#ifndef UPM_TASKS_LABEL_METRICS_H
#define UPM_TASKS_LABEL_METRICS_H

#include <stdint.h>

/* scores: host [n*V][C] logits, the V views of sample i in rows i*V .. i*V+V-1; on return rows 0..n-1 hold
 * log(mean over views of softmax(view logits)) (floored at log 1e-300), so ranking them ranks by averaged
 * probability and their log-softmax is the log of it; labels [n*V] compacted alike (labels[i] = the
 * label of sample i's first view). V = 1 leaves both as they are. -1 when out of memory. */
int upm_label_average_views(float *scores, int32_t *labels, int n, int V, int C);

#endif
