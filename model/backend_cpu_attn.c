/* The CPU backend's multi-head self-attention, forward and backward. Work is one sequence per
 * iteration: its qkv rows (whole rows, all heads) are gathered through row_of into the thread's
 * scratch, or used in place when the sequence sits in consecutive rows; the S x S x head_dim products
 * go through oneDNN's sgemm (single-threaded inside the parallel region, ~20x faster than plain loops
 * at ViT-Ti sizes), and results are scattered back through row_of. Every output element is computed
 * by one thread in a fixed order, so the bits do not depend on the thread count. row_of must not
 * repeat a row (each token owns its row). */
#include "backend_cpu.h"

#include <dnnl.h>
#include <math.h>
#include <omp.h>

/* Row-major sgemm (beta 0 or 1); a failure (impossible with the sizes used here) poisons C rather than
 * leaving stale numbers, and returns 1 so that the op records it. */
static int mmb(char ta, char tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
               float beta, float *C, int ldc)
{
    if (dnnl_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc) == dnnl_success)
        return 0;
    for (int i = 0; i < M; i++)
        upm_cpu_poison(C + (size_t)i * ldc, (size_t)N);
    return 1;
}

static int mm(char ta, char tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
              float *C, int ldc)
{
    return mmb(ta, tb, M, N, K, alpha, A, lda, B, ldb, 0.0f, C, ldc);
}

/* A sequence whose tokens sit in consecutive rows (the usual case: one attribute pattern) is used in
 * place, with the matrices' own leading dimensions, instead of being gathered and scattered. */
static int rows_contiguous(const int32_t *rows, int S)
{
    for (int i = 0; i < S; i++)
        if (rows[i] != rows[0] + i || rows[i] < 0)
            return 0;
    return 1;
}

/* dst[i, :] = src[rows[i], :] for rows of n floats, ld apart (zeros for a row < 0) */
static void gather_rows(float *dst, const float *src, const int32_t *rows, int S, size_t n, size_t ld)
{
    for (int i = 0; i < S; i++) {
        float *d = dst + (size_t)i * n;
        if (rows[i] < 0)
            memset(d, 0, n * sizeof *d);
        else
            memcpy(d, src + (size_t)rows[i] * ld, n * sizeof *d);
    }
}

/* dst[i] += src[i]; restrict lets the compiler vectorise it. */
static void add_to(float *restrict dst, const float *restrict src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] += src[i];
}

/* The softmax loops are upm_cpu_vec_masked_softmax and upm_cpu_vec_softmax_bwd (backend_cpu_vec.c): rows
 * over the allowed keys (mask != 0), max-subtracted, a row with no allowed key all zeros. */
static void masked_softmax(float *P, const uint8_t *mask, int S)
{
    upm_cpu_check(P, (size_t)S * S * sizeof *P);
    upm_cpu_check(mask, (size_t)S * S);
    upm_cpu_vec_masked_softmax(P, mask, S);
}

static void softmax_bwd(float *dS, const float *P, int S)
{
    upm_cpu_check(dS, (size_t)S * S * sizeof *dS);
    upm_cpu_check(P, (size_t)S * S * sizeof *P);
    upm_cpu_vec_softmax_bwd(dS, P, S);
}

/* One sequence, every head: probs of head h at P + h*S*S. Returns 1 when a matmul failed. */
static int fwd_seq(float *out, float *P, const float *qkv, const upm_attn_desc *a, int s, float *buf)
{
    int bad = 0;
    int S = a->S, hd = a->head_dim, in_place = rows_contiguous(a->row_of + (size_t)s * S, S);
    size_t D = (size_t)a->heads * hd;
    const int32_t *rows = a->row_of + (size_t)s * S;
    float scale = 1.0f / sqrtf((float)hd);
    const float *X = qkv + (in_place ? (size_t)rows[0] * 3 * D : 0);
    float *O = in_place ? out + (size_t)rows[0] * D : buf + (size_t)S * 3 * D;
    if (!in_place) {
        gather_rows(buf, qkv, rows, S, 3 * D, 3 * D);
        X = buf;
    }
    for (int h = 0; h < a->heads; h++) {
        float *Ph = P + (size_t)h * S * S;
        const float *q = X + (size_t)h * hd;
        bad |= mm('N', 'T', S, S, hd, scale, q, (int)(3 * D), q + D, (int)(3 * D), Ph, S);
        masked_softmax(Ph, a->mask + (size_t)s * S * S, S);
        bad |= mm('N', 'N', S, hd, S, 1.0f, Ph, S, q + 2 * D, (int)(3 * D), O + (size_t)h * hd, (int)D);
    }
    if (!in_place)
        for (int i = 0; i < S; i++)
            if (rows[i] >= 0)
                memcpy(out + (size_t)rows[i] * D, O + (size_t)i * D, D * sizeof *O);
    return bad;
}

static int attn_items(const upm_attn_desc *a)
{
    if (a->nseq <= 0 || a->S <= 0 || a->heads <= 0 || a->head_dim <= 0)
        return 0;
    return a->nseq * a->heads;
}

/* Poisons the rows of m (cols wide, starting at column 0) that row_of names. */
static void poison_rows(float *m, size_t cols, const upm_attn_desc *a)
{
    for (size_t i = 0; i < (size_t)a->nseq * a->S; i++)
        if (a->row_of[i] >= 0)
            upm_cpu_poison(m + (size_t)a->row_of[i] * cols, cols);
}

void upm_cpu_attention_fwd(upm_backend *be, float *out, float *probs, const float *qkv, const upm_attn_desc *a)
{
    int items = attn_items(a);
    if (!items)
        return;
    int nt = upm_cpu_threads(be);
    size_t S = (size_t)a->S, D = (size_t)a->heads * a->head_dim, stride;
    float *scr = upm_cpu_scratch(be, 4 * S * D, nt, &stride);
    if (!scr) {
        upm_cpu_poison(probs, (size_t)items * S * S);
        poison_rows(out, D, a);
        upm_cpu_fail(be, "attention_fwd", "no memory for its scratch");
        return;
    }
    int bad = 0;
#pragma omp parallel for schedule(dynamic) if (a->nseq > 1) reduction(| : bad)
    for (int s = 0; s < a->nseq; s++)
        bad |= fwd_seq(out, probs + (size_t)s * a->heads * S * S, qkv, a, s,
                       scr + stride * (size_t)omp_get_thread_num());
    if (bad)
        upm_cpu_fail(be, "attention_fwd", "oneDNN sgemm failed");
}

/* dV = P^T dO, dP = dO V^T, dS = P (dP - rowsum(dP P)), dQ = dS K / sqrt(hd), dK = dS^T Q / sqrt(hd) for
 * every head of sequence s, added into dqkv through row_of: straight by the gemms (beta 1) when the
 * sequence is in place, else into a gathered block added back row by row. */
static int bwd_seq(float *dqkv, const float *dout, const float *P, const float *qkv, const upm_attn_desc *a, int s,
                   float *buf)
{
    int bad = 0;
    int S = a->S, hd = a->head_dim, in_place = rows_contiguous(a->row_of + (size_t)s * S, S);
    size_t D = (size_t)a->heads * hd, S3 = (size_t)S * 3 * D;
    const int32_t *rows = a->row_of + (size_t)s * S;
    float scale = 1.0f / sqrtf((float)hd), beta = in_place ? 1.0f : 0.0f;
    int ld = (int)(3 * D);
    const float *X = qkv, *dO = dout;
    float *G = dqkv, *dS = buf;
    if (in_place) {
        X += (size_t)rows[0] * 3 * D, dO += (size_t)rows[0] * D, G += (size_t)rows[0] * 3 * D;
    } else {
        float *Xs = buf + (size_t)S * S, *dOs = Xs + S3;
        G = dOs + (size_t)S * D;
        gather_rows(Xs, qkv, rows, S, 3 * D, 3 * D);
        gather_rows(dOs, dout, rows, S, D, D);
        X = Xs, dO = dOs;
    }
    for (int h = 0; h < a->heads; h++) {
        const float *Ph = P + (size_t)h * S * S, *q = X + (size_t)h * hd, *dOh = dO + (size_t)h * hd;
        float *g = G + (size_t)h * hd;
        bad |= mmb('T', 'N', S, hd, S, 1.0f, Ph, S, dOh, (int)D, beta, g + 2 * D, ld);
        bad |= mm('N', 'T', S, S, hd, 1.0f, dOh, (int)D, q + 2 * D, ld, dS, S);
        softmax_bwd(dS, Ph, S);
        bad |= mmb('N', 'N', S, hd, S, scale, dS, S, q + D, ld, beta, g, ld);
        bad |= mmb('T', 'N', S, hd, S, scale, dS, S, q, ld, beta, g + D, ld);
    }
    if (!in_place)
        for (int i = 0; i < S; i++)
            if (rows[i] >= 0)
                add_to(dqkv + (size_t)rows[i] * 3 * D, G + (size_t)i * 3 * D, 3 * D);
    return bad;
}

void upm_cpu_attention_bwd(upm_backend *be, float *dqkv, const float *dout, const float *probs, const float *qkv,
                           const upm_attn_desc *a)
{
    int items = attn_items(a);
    if (!items)
        return;
    int nt = upm_cpu_threads(be);
    size_t S = (size_t)a->S, D = (size_t)a->heads * a->head_dim, stride;
    float *scr = upm_cpu_scratch(be, S * S + 7 * S * D, nt, &stride);
    if (!scr) {
        poison_rows(dqkv, 3 * D, a);
        upm_cpu_fail(be, "attention_bwd", "no memory for its scratch");
        return;
    }
    int bad = 0;
#pragma omp parallel for schedule(dynamic) if (a->nseq > 1) reduction(| : bad)
    for (int s = 0; s < a->nseq; s++)
        bad |= bwd_seq(dqkv, dout, probs + (size_t)s * a->heads * S * S, qkv, a, s,
                       scr + stride * (size_t)omp_get_thread_num());
    if (bad)
        upm_cpu_fail(be, "attention_bwd", "oneDNN sgemm failed");
}
