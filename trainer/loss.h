/* Losses of the generic task formulations on encoded features (docs/model.md, "Losses"): cosine
 * similarity times the learnable temperature, cross-entropy with label smoothing. Each adds the
 * gradients of its features (dU, dV: backend memory, accumulated) and of the temperature (into the
 * model's gradient buffer), already multiplied by the batch's loss weight, and waits for nothing. */
#ifndef UPM_LOSS_H
#define UPM_LOSS_H

#include "model.h"

#define UPM_LABEL_SMOOTHING 0.1f
#define UPM_LOGIT_SCALE_MAX 100.0f

typedef struct upm_loss_result {
    float loss;    /* unweighted mean loss */
    float correct; /* rows whose best score is the target (pair: image-to-text direction) */
    int rows;
} upm_loss_result;

/* The temperature s = min(exp(logit_scale), 100) and whether the cap holds (no gradient then). */
float upm_logit_scale(const upm_model *m, int *capped);

/* label (and vocab): U [B, D] input features, V [C, D] candidate features (label texts, vocabulary
 * tokens), labels (backend int32 [B], -1 = ignore). logits (backend [B, C]) receives s U V^T.
 * col_bias (backend [C] or NULL) is added to every row's logits before the softmax and carries no
 * gradient: the sampled-softmax correction -log q_c of sampled vocabulary candidates. */
int upm_loss_label(upm_model *m, const float *U, int B, const float *V, int C, const int32_t *labels,
                   const float *col_bias, float weight, float *dU, float *dV, float *logits, upm_err *err);

/* pair: U, V [B, D] paired features; in-batch negatives both ways. logits receives s U V^T [B, B]. */
int upm_loss_pair(upm_model *m, const float *U, const float *V, int B, float weight, float *dU, float *dV,
                  float *logits, upm_err *err);

/* The losses leave their statistics on the backend, in the model's step record (model.h, UPM_STAT_*), so a
 * step waits only once, at its end. upm_loss_result_of reads a downloaded record (pair: the mean of the two
 * directions' losses, the image-to-text correct rows); upm_loss_read downloads it now. */
upm_loss_result upm_loss_result_of(const float *stats, int pair, int rows);
upm_loss_result upm_loss_read(upm_model *m, int pair, int rows);

#endif
