/* Merging a data-independent routed model's experts for a fixed set of attribute patterns of one task
 * (paper §3.3): the result is a UPM_MOE_MERGED model with one dense weight per pattern in each MoE linear.
 * Attribute, modality and task routing and task-specific weights merge; the gate of each pattern depends only
 * on the pattern's attribute byte, whether the task's visual input is video (modality routing) and the
 * task id (task routing, task-specific weights). */
#ifndef UPM_MERGE_H
#define UPM_MERGE_H

#include "model.h"

/* A new model (same backend) serving the given attribute bytes (any order; duplicates ignored) of a task
 * whose visual input is video or not (video) and whose id in the model's task table is task (1-based; 0
 * when the model has no task table). UPM_EINVAL for a model that cannot merge (dense, merged) and for a task
 * id outside the trained table. */
int upm_model_merge(const upm_model *m, const uint8_t *patterns, int npatterns, int video, int task,
                    upm_model **out, upm_err *err);

/* The gate values of every pattern for gate gi (UPM_GATE_*) of block l of a routed model (the training
 * forward's gate without noise; task-specific weights: the task's one-hot): host G[npatterns][experts], 0
 * where an expert is not kept. video and task as for upm_model_merge. The gate maps of upmoe-analyze (paper
 * Fig. 3) read these. UPM_EINVAL when the block has no such gate. */
int upm_model_gate_map(const upm_model *m, int l, int gi, const uint8_t *patterns, int npatterns, int video,
                       int task, float *G, upm_err *err);

#endif
