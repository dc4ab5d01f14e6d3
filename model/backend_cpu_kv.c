/* The CPU backend's attention over a key/value cache (generation; backend.h, upm_attn_kv_desc). One
 * work item is one (sequence, head); its few new tokens each score the prefix, the cached text and
 * (a query) themselves with dot products in double, in key order, so the bits do not depend on the
 * thread count. Decoding steps are a few rows per sequence: plain loops, no gemm. */
#include "backend_cpu.h"

#include <omp.h>

/* The key/value row of key j for new token i of sequence s (k at [0, hd), v at D floats further). */
static const float *key_row(const upm_attn_kv_desc *a, const float *qkv, int s, int i, int j, size_t D)
{
    int P = a->prefix_len, n_cache = i < a->n_append ? a->len + i + 1 : a->len + a->n_append;
    if (j < P)
        return a->prefix + ((size_t)(s / a->group) * P + (size_t)j) * 3 * D + D;
    j -= P;
    if (j < n_cache)
        return a->cache + ((size_t)j * a->nseq + (size_t)s) * 2 * D;
    return qkv + (size_t)a->row_of[(size_t)s * a->n_new + (size_t)i] * 3 * D + D; /* a query's own key */
}

static void kv_item(float *out, const float *qkv, const upm_attn_kv_desc *a, int s, int h, float *sc)
{
    int hd = a->head_dim;
    size_t D = (size_t)a->heads * hd;
    double scale = 1.0 / sqrt((double)hd);
    for (int i = 0; i < a->n_new; i++) {
        int row = a->row_of[(size_t)s * a->n_new + (size_t)i];
        int nkeys = a->prefix_len + (i < a->n_append ? a->len + i + 1 : a->len + a->n_append + 1);
        const float *q = qkv + (size_t)row * 3 * D + (size_t)h * hd;
        float mx = -INFINITY;
        for (int j = 0; j < nkeys; j++) {
            sc[j] = (float)(upm_cpu_dot(q, key_row(a, qkv, s, i, j, D) + (size_t)h * hd, (size_t)hd) * scale);
            mx = sc[j] > mx ? sc[j] : mx;
        }
        for (int j = 0; j < nkeys; j++)
            sc[j] = upm_cpu_expf(sc[j] - mx);
        float inv = (float)(1.0 / upm_cpu_sum(sc, (size_t)nkeys));
        float *o = out + (size_t)row * D + (size_t)h * hd;
        memset(o, 0, sizeof(float) * (size_t)hd);
        for (int j = 0; j < nkeys; j++) {
            const float *v = key_row(a, qkv, s, i, j, D) + D + (size_t)h * hd;
            float p = sc[j] * inv;
            for (int d = 0; d < hd; d++)
                o[d] += p * v[d];
        }
    }
}

void upm_cpu_attention_kv_fwd(upm_backend *be, float *out, const float *qkv, const upm_attn_kv_desc *a)
{
    if (a->nseq <= 0 || a->n_new <= 0 || a->heads <= 0 || a->head_dim <= 0 || a->group <= 0)
        return;
    size_t D = (size_t)a->heads * a->head_dim, stride;
    for (int s = 0; s < a->nseq; s++) /* the appended text tokens join the cache first */
        for (int i = 0; i < a->n_append; i++) {
            const float *src = qkv + (size_t)a->row_of[(size_t)s * a->n_new + (size_t)i] * 3 * D + D;
            memcpy(a->cache + ((size_t)(a->len + i) * a->nseq + (size_t)s) * 2 * D, src, sizeof(float) * 2 * D);
        }
    int nt = upm_cpu_threads(be), items = a->nseq * a->heads;
    float *scr = upm_cpu_scratch(be, (size_t)a->prefix_len + (size_t)a->len + (size_t)a->n_append + 1, nt, &stride);
    if (!scr) {
        for (size_t r = 0; r < (size_t)a->nseq * a->n_new; r++)
            upm_cpu_poison(out + (size_t)a->row_of[r] * D, D);
        upm_cpu_fail(be, "attention_kv_fwd", "no memory for its scratch");
        return;
    }
#pragma omp parallel for schedule(static) if (items > 1)
    for (int it = 0; it < items; it++)
        kv_item(out, qkv, a, it / a->heads, it % a->heads, scr + stride * (size_t)omp_get_thread_num());
}
