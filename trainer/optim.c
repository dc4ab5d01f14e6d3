/* AdamW, schedule and clipping (see optim.h). */
#include "optim.h"

#include <math.h>
#include <stdlib.h>

void upm_optim_config_default(upm_optim_config *c)
{
    *c = (upm_optim_config){.lr = 5e-4f, .min_lr = 1e-6f, .weight_decay = 0.05f, .beta1 = 0.9f, .beta2 = 0.98f,
                            .eps = 1e-6f, .clip = 0.5f, .warmup_steps = 0, .total_steps = 1};
}

int upm_optim_init(upm_optim *o, upm_model *m, const upm_optim_config *c, upm_err *err)
{
    upm_backend *be = m->be;
    size_t n = m->L.total;
    *o = (upm_optim){.cfg = *c};
    o->m = be->alloc(be, n * sizeof(float));
    o->v = be->alloc(be, n * sizeof(float));
    o->decay = be->alloc(be, n);
    uint8_t *mask = malloc(n ? n : 1);
    if (!o->m || !o->v || !o->decay || !mask) {
        free(mask);
        upm_optim_free(o, m);
        return upm_errf(err, UPM_ENOMEM, "optimizer: no memory for %zu moments", n);
    }
    upm_layout_decay_mask(&m->L, mask);
    be->upload(be, o->decay, mask, n);
    free(mask);
    return 0;
}

void upm_optim_free(upm_optim *o, upm_model *m)
{
    upm_backend *be = m->be;
    void *p[] = {o->m, o->v, o->decay};
    for (int i = 0; i < 3; i++)
        if (p[i])
            be->free(be, p[i]);
    o->m = o->v = NULL;
    o->decay = NULL;
}

float upm_optim_lr(const upm_optim_config *c, int64_t step)
{
    if (step < c->warmup_steps)
        return c->lr * (float)(step + 1) / (float)c->warmup_steps;
    int64_t span = c->total_steps - c->warmup_steps;
    double progress = span > 0 ? (double)(step - c->warmup_steps) / (double)span : 1.0;
    progress = progress < 0 ? 0 : progress > 1 ? 1 : progress;
    return (float)(c->min_lr + 0.5 * (c->lr - c->min_lr) * (1.0 + cos(3.14159265358979323846 * progress)));
}

int upm_optim_step(upm_optim *o, upm_model *m, float *grad_norm, float *lr, upm_err *err)
{
    upm_backend *be = m->be;
    float rate = upm_optim_lr(&o->cfg, o->t);
    float *sumsq = m->stats + UPM_STAT_SUMSQ, *gscale = m->stats + UPM_STAT_GSCALE;
    o->t++;
    be->sumsq(be, sumsq, m->g, m->L.total);
    be->clip_scale(be, gscale, sumsq, o->cfg.clip); /* decided on the backend: no wait here */
    be->adamw(be, m->w, o->m, o->v, m->g, o->decay, m->L.total, rate, o->cfg.beta1, o->cfg.beta2, o->cfg.eps,
              o->cfg.weight_decay, gscale, (int)o->t);
    if (grad_norm) {
        float st[UPM_NSTATS];
        upm_model_stats_read(m, st);
        *grad_norm = sqrtf(st[UPM_STAT_SUMSQ]);
    }
    if (lr)
        *lr = rate;
    return be->status(be, err);
}
