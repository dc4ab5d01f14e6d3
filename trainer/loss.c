/* The label and pair losses through backend ops (logits by one matmul, the fused cross-entropy with
 * label smoothing, then the matmuls of the backward). */
#include "loss.h"

#include <math.h>
#include <stdlib.h>

float upm_logit_scale(const upm_model *m, int *capped)
{
    float t;
    m->be->download(m->be, &t, upm_model_w(m, m->L.logit_scale), sizeof t);
    float s = expf(t);
    if (capped)
        *capped = !(s < UPM_LOGIT_SCALE_MAX);
    return s < UPM_LOGIT_SCALE_MAX ? s : UPM_LOGIT_SCALE_MAX;
}

/* dlogit_scale += sum(dlogits * logits) = dL/ds * s (logits = s * cos), unless the cap holds. */
static void temperature_grad(upm_model *m, const float *dlogits, const float *logits, int n, int capped)
{
    if (!capped)
        m->be->gemm(m->be, 0, 1, 1, 1, n, 1.0f, dlogits, n, logits, n, 1.0f, upm_model_g(m, m->L.logit_scale), 1);
}

typedef struct scratch {
    float *dlogits, *stats;
    int32_t *diag;
} scratch;

static int scratch_new(upm_backend *be, int rows, int cols, int diag, scratch *s, upm_err *err)
{
    s->dlogits = be->alloc(be, sizeof(float) * (size_t)rows * cols);
    s->stats = be->alloc(be, sizeof(float) * 4);
    s->diag = diag ? be->alloc(be, sizeof(int32_t) * (size_t)rows) : NULL;
    if (!s->dlogits || !s->stats || (diag && !s->diag)) {
        if (s->dlogits)
            be->free(be, s->dlogits);
        if (s->stats)
            be->free(be, s->stats);
        if (s->diag)
            be->free(be, s->diag);
        return upm_errf(err, UPM_ENOMEM, "loss: no memory for %d x %d logits", rows, cols);
    }
    if (diag) {
        int32_t *h = malloc(sizeof(int32_t) * (size_t)rows);
        if (!h)
            return upm_errf(err, UPM_ENOMEM, "loss: no memory");
        for (int i = 0; i < rows; i++)
            h[i] = i;
        be->upload(be, s->diag, h, sizeof(int32_t) * (size_t)rows);
        free(h);
    }
    return 0;
}

static void scratch_free(upm_backend *be, scratch *s)
{
    be->free(be, s->dlogits);
    be->free(be, s->stats);
    if (s->diag)
        be->free(be, s->diag);
}

int upm_loss_label(upm_model *m, const float *U, int B, const float *V, int C, const int32_t *labels,
                   const float *col_bias, float weight, float *dU, float *dV, float *logits, upm_loss_result *res,
                   upm_err *err)
{
    upm_backend *be = m->be;
    int D = m->cfg.dim, capped;
    scratch s;
    int rc = scratch_new(be, B, C, 0, &s, err);
    if (rc)
        return rc;
    float scale = upm_logit_scale(m, &capped), st[2];
    be->gemm(be, 0, 1, B, C, D, scale, U, D, V, D, 0.0f, logits, C);
    if (col_bias)
        be->add_bias(be, logits, col_bias, B, C);
    be->xent_fwd_bwd(be, s.stats, s.dlogits, logits, labels, B, C, UPM_LABEL_SMOOTHING, weight);
    if (col_bias) { /* back to s * cos for the temperature's gradient (the correction is a constant) */
        be->scale(be, logits, -1.0f, (size_t)B * C);
        be->add_bias(be, logits, col_bias, B, C);
        be->scale(be, logits, -1.0f, (size_t)B * C);
    }
    be->gemm(be, 0, 0, B, D, C, scale, s.dlogits, C, V, D, 1.0f, dU, D);
    be->gemm(be, 1, 0, C, D, B, scale, s.dlogits, C, U, D, 1.0f, dV, D);
    temperature_grad(m, s.dlogits, logits, B * C, capped);
    be->download(be, st, s.stats, sizeof st);
    *res = (upm_loss_result){st[0], st[1], B};
    scratch_free(be, &s);
    return 0;
}

int upm_loss_pair(upm_model *m, const float *U, const float *V, int B, float weight, float *dU, float *dV,
                  float *logits, upm_loss_result *res, upm_err *err)
{
    upm_backend *be = m->be;
    int D = m->cfg.dim, capped;
    scratch s, t;
    int rc = scratch_new(be, B, B, 1, &s, err);
    if (rc)
        return rc;
    if ((rc = scratch_new(be, B, B, 0, &t, err))) {
        scratch_free(be, &s);
        return rc;
    }
    float *logitsT = be->alloc(be, sizeof(float) * (size_t)B * B);
    if (!logitsT) {
        scratch_free(be, &s);
        scratch_free(be, &t);
        return upm_errf(err, UPM_ENOMEM, "loss: no memory for %d x %d logits", B, B);
    }
    float scale = upm_logit_scale(m, &capped), a[2], b[2];
    be->gemm(be, 0, 1, B, B, D, scale, U, D, V, D, 0.0f, logits, B);
    be->gemm(be, 0, 1, B, B, D, scale, V, D, U, D, 0.0f, logitsT, B);
    be->xent_fwd_bwd(be, s.stats, s.dlogits, logits, s.diag, B, B, UPM_LABEL_SMOOTHING, 0.5f * weight);
    be->xent_fwd_bwd(be, t.stats, t.dlogits, logitsT, s.diag, B, B, UPM_LABEL_SMOOTHING, 0.5f * weight);
    /* logits = s U V^T: dU += s dL V, dV += s dL^T U; logitsT = s V U^T: dV += s dLT U, dU += s dLT^T V */
    be->gemm(be, 0, 0, B, D, B, scale, s.dlogits, B, V, D, 1.0f, dU, D);
    be->gemm(be, 1, 0, B, D, B, scale, s.dlogits, B, U, D, 1.0f, dV, D);
    be->gemm(be, 0, 0, B, D, B, scale, t.dlogits, B, U, D, 1.0f, dV, D);
    be->gemm(be, 1, 0, B, D, B, scale, t.dlogits, B, V, D, 1.0f, dU, D);
    temperature_grad(m, s.dlogits, logits, B * B, capped);
    temperature_grad(m, t.dlogits, logitsT, B * B, capped);
    be->download(be, a, s.stats, sizeof a);
    be->download(be, b, t.stats, sizeof b);
    *res = (upm_loss_result){0.5f * (a[0] + b[0]), a[1], B};
    be->free(be, logitsT);
    scratch_free(be, &s);
    scratch_free(be, &t);
    return 0;
}
