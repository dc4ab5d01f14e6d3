/* AdamW with the paper's settings (betas 0.9/0.98, eps 1e-6, weight decay 0.05 on Linear weights only),
 * a linear-warmup + cosine learning-rate schedule, and global-norm gradient clipping. Moments live in
 * backend memory in the parameter layout, so the update is one flat op. */
#ifndef UPM_OPTIM_H
#define UPM_OPTIM_H

#include <stdint.h>

#include "model.h"

typedef struct upm_optim_config {
    float lr, min_lr, weight_decay, beta1, beta2, eps, clip; /* clip <= 0: no clipping */
    int64_t warmup_steps, total_steps;
} upm_optim_config;

typedef struct upm_optim {
    upm_optim_config cfg;
    float *m, *v;   /* backend [L.total] */
    uint8_t *decay; /* backend [L.total] */
    int64_t t;      /* updates applied */
} upm_optim;

void upm_optim_config_default(upm_optim_config *c);
int upm_optim_init(upm_optim *o, upm_model *m, const upm_optim_config *c, upm_err *err);
void upm_optim_free(upm_optim *o, upm_model *m);
/* The learning rate of update number step (0-based): linear warmup to lr, then cosine to min_lr. */
float upm_optim_lr(const upm_optim_config *c, int64_t step);
/* Clips by global norm and applies one AdamW update to m->w from m->g, without waiting: the squared norm
 * before clipping stays in the model's step record (UPM_STAT_SUMSQ). grad_norm: NULL, or the norm,
 * downloaded now (a wait: the trainer reads it with the step's statistics instead). *lr: the learning rate
 * used. Returns the backend's status (UPM_EBACKEND when an op of the step, or of the passes before it,
 * failed). */
int upm_optim_step(upm_optim *o, upm_model *m, float *grad_norm, float *lr, upm_err *err);

#endif
