/* The label and pair losses through backend ops (logits by one matmul, the fused cross-entropy with
 * label smoothing, then the matmuls of the backward). */
#include "loss.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

float upm_logit_scale(const upm_model *m, int *capped)
{
    float t;
    m->be->download(m->be, &t, upm_model_w(m, m->L.logit_scale), sizeof t);
    float s = expf(t);
    if (capped)
        *capped = !(s < UPM_LOGIT_SCALE_MAX);
    return s < UPM_LOGIT_SCALE_MAX ? s : UPM_LOGIT_SCALE_MAX;
}

/* The losses' working memory, carved from the model's scratch (grown only when a larger batch arrives):
 * the gradient of the logits, twice for pair (both directions) with the transposed logits, and the
 * diagonal targets 0..rows-1 (pair). The statistics go to the model's step record (m->stats). */
typedef struct scratch {
    float *dlogits[2], *logitsT;
    int32_t *diag;
} scratch;

static size_t up64(size_t bytes) { return (bytes + 63) & ~(size_t)63; }

static int scratch_get(upm_model *m, int rows, int cols, int pair, scratch *s, upm_err *err)
{
    upm_backend *be = m->be;
    memset(s, 0, sizeof *s);
    size_t mat = up64(sizeof(float) * (size_t)rows * cols);
    size_t need = pair ? 3 * mat : mat;
    if (need > m->scratch_bytes) {
        if (m->scratch)
            be->free(be, m->scratch);
        m->scratch_bytes = 0;
        if (!(m->scratch = be->alloc(be, need)))
            return upm_errf(err, UPM_ENOMEM, "loss: no memory for %d x %d logits", rows, cols);
        m->scratch_bytes = need;
    }
    char *p = m->scratch;
    s->dlogits[0] = (float *)p, p += mat;
    if (pair) {
        s->dlogits[1] = (float *)p, p += mat;
        s->logitsT = (float *)p;
    }
    if (pair && rows > m->iota_n) { /* the diagonal targets 0..rows-1, uploaded when the batch grows */
        int32_t *h = malloc(sizeof(int32_t) * (size_t)rows);
        if (!h)
            return upm_errf(err, UPM_ENOMEM, "loss: no memory");
        for (int i = 0; i < rows; i++)
            h[i] = i;
        if (m->iota)
            be->free(be, m->iota);
        m->iota_n = 0;
        if ((m->iota = be->alloc(be, sizeof(int32_t) * (size_t)rows))) {
            be->upload(be, m->iota, h, sizeof(int32_t) * (size_t)rows);
            m->iota_n = rows;
        }
        free(h);
        if (!m->iota)
            return upm_errf(err, UPM_ENOMEM, "loss: no memory");
    }
    s->diag = pair ? m->iota : NULL;
    return 0;
}

/* The temperature s = min(exp(logit_scale), cap) is read on the backend (no download inside a step):
 * logits = s U V^T by gemm_temp, the feature gradients likewise scaled by s, and the temperature's
 * gradient dlogit_scale += sum(dlogits * logits) unless the cap holds. */
#define TEMP(m) upm_model_w(m, (m)->L.logit_scale), UPM_LOGIT_SCALE_MAX

static void temperature_grad(upm_model *m, const float *dlogits, const float *logits, size_t n)
{
    m->be->temperature_bwd(m->be, upm_model_g(m, m->L.logit_scale), dlogits, logits, n, TEMP(m));
}

int upm_loss_label(upm_model *m, const float *U, int B, const float *V, int C, const int32_t *labels,
                   const float *col_bias, float weight, float *dU, float *dV, float *logits, upm_err *err)
{
    upm_backend *be = m->be;
    int D = m->cfg.dim;
    size_t n = (size_t)B * C;
    scratch s;
    int rc = scratch_get(m, B, C, 0, &s, err);
    if (rc)
        return rc;
    be->gemm_temp(be, 0, 1, B, C, D, TEMP(m), U, D, V, D, 0.0f, logits, C);
    if (col_bias)
        be->add_bias(be, logits, col_bias, B, C);
    be->xent_fwd_bwd(be, m->stats + UPM_STAT_LOSS, s.dlogits[0], logits, labels, B, C, UPM_LABEL_SMOOTHING, weight);
    if (col_bias) { /* back to s * cos for the temperature's gradient (the correction is a constant) */
        be->scale(be, logits, -1.0f, n);
        be->add_bias(be, logits, col_bias, B, C);
        be->scale(be, logits, -1.0f, n);
    }
    be->gemm_temp(be, 0, 0, B, D, C, TEMP(m), s.dlogits[0], C, V, D, 1.0f, dU, D);
    be->gemm_temp(be, 1, 0, C, D, B, TEMP(m), s.dlogits[0], C, U, D, 1.0f, dV, D);
    temperature_grad(m, s.dlogits[0], logits, n);
    return 0;
}

int upm_loss_pair(upm_model *m, const float *U, const float *V, int B, float weight, float *dU, float *dV,
                  float *logits, upm_err *err)
{
    upm_backend *be = m->be;
    int D = m->cfg.dim;
    size_t n = (size_t)B * B;
    scratch s;
    int rc = scratch_get(m, B, B, 1, &s, err);
    if (rc)
        return rc;
    float *logitsT = s.logitsT;
    be->gemm_temp(be, 0, 1, B, B, D, TEMP(m), U, D, V, D, 0.0f, logits, B);
    be->gemm_temp(be, 0, 1, B, B, D, TEMP(m), V, D, U, D, 0.0f, logitsT, B);
    be->xent_fwd_bwd(be, m->stats + UPM_STAT_LOSS, s.dlogits[0], logits, s.diag, B, B, UPM_LABEL_SMOOTHING, 0.5f * weight);
    be->xent_fwd_bwd(be, m->stats + UPM_STAT_LOSS_T, s.dlogits[1], logitsT, s.diag, B, B, UPM_LABEL_SMOOTHING, 0.5f * weight);
    /* logits = s U V^T: dU += s dL V, dV += s dL^T U; logitsT = s V U^T: dV += s dLT U, dU += s dLT^T V */
    be->gemm_temp(be, 0, 0, B, D, B, TEMP(m), s.dlogits[0], B, V, D, 1.0f, dU, D);
    be->gemm_temp(be, 1, 0, B, D, B, TEMP(m), s.dlogits[0], B, U, D, 1.0f, dV, D);
    be->gemm_temp(be, 0, 0, B, D, B, TEMP(m), s.dlogits[1], B, U, D, 1.0f, dV, D);
    be->gemm_temp(be, 1, 0, B, D, B, TEMP(m), s.dlogits[1], B, V, D, 1.0f, dU, D);
    temperature_grad(m, s.dlogits[0], logits, n);
    temperature_grad(m, s.dlogits[1], logitsT, n);
    return 0;
}

upm_loss_result upm_loss_result_of(const float *st, int pair, int rows)
{
    if (pair)
        return (upm_loss_result){0.5f * (st[UPM_STAT_LOSS] + st[UPM_STAT_LOSS_T]), st[UPM_STAT_CORRECT], rows};
    return (upm_loss_result){st[UPM_STAT_LOSS], st[UPM_STAT_CORRECT], rows};
}

upm_loss_result upm_loss_read(upm_model *m, int pair, int rows)
{
    float st[UPM_NSTATS];
    upm_model_stats_read(m, st);
    return upm_loss_result_of(st, pair, rows);
}
