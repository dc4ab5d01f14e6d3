/* Private to the CPU backend (backend_cpu*.c): its context, the ops each file contributes to the table,
 * and the small inline kernels they share (a vectorisable exp, fixed-order sums). Nothing outside
 * model/backend_cpu*.c includes this. */
#ifndef UPM_BACKEND_CPU_H
#define UPM_BACKEND_CPU_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "backend.h"

/* One op runs at a time on a backend (the model calls ops from one thread), so the scratch arena
 * needs no lock. */
typedef struct upm_cpu_ctx {
    int threads;          /* > 0: applied to the calling thread's OpenMP thread count at every op */
    float *scratch;       /* per-thread working memory of attention, grown on demand, 64-byte aligned */
    size_t scratch_bytes;
    char failed[256];     /* the first op failure ("" = none), for status() */
} upm_cpu_ctx;

/* Parallel loops below this many elements run on the calling thread: the fork costs more. */
#define UPM_CPU_PAR_MIN 16384
/* Column-parallel reductions give each thread blocks of this many columns, summed over rows in
 * order, so every output is summed by one thread in a fixed order whatever the thread count. */
#define UPM_CPU_COLBLOCK 16
/* Long reductions are cut into at most this many fixed chunks, summed in order. */
#define UPM_CPU_MAX_CHUNKS 256

/* Applies the backend's thread count (if any) to the calling thread and returns the team size the
 * next parallel region will get. */
int upm_cpu_threads(upm_backend *be);
/* `per_thread` floats for each of `threads` threads (each slice 64-byte aligned, `stride` floats
 * apart), or NULL when memory ran out. Valid until the next call. */
float *upm_cpu_scratch(upm_backend *be, size_t per_thread, int threads, size_t *stride);
/* Fills n floats with NaN: what a void op leaves when it could not get scratch memory, so the
 * trainer's non-finite check stops the run instead of it going on with wrong numbers. */
void upm_cpu_poison(float *p, size_t n);
/* Records that op failed and why (the first failure sticks; status() reports it). Called on the op's
 * calling thread, outside parallel regions. */
void upm_cpu_fail(upm_backend *be, const char *op, const char *why);

/* Hot elementwise loops are compiled for AVX-512, AVX2 and baseline x86-64 and picked at load time:
 * the build targets baseline x86-64 (SSE2) and the wide versions of GELU run ~3.5x faster. ISO C
 * mode (-std=c17) keeps -ffp-contract off, so no version fuses multiply-adds and all give the same
 * bits. */
#if defined(__x86_64__) && defined(__GNUC__)
#define UPM_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define UPM_CPU_CLONES
#endif

/* Chunk length for a fixed-order chunked reduction over n items: depends on n only, never on the
 * thread count, and gives at most UPM_CPU_MAX_CHUNKS chunks. */
static inline size_t upm_cpu_chunk(size_t n, size_t min_chunk)
{
    size_t c = (n + UPM_CPU_MAX_CHUNKS - 1) / UPM_CPU_MAX_CHUNKS;
    return c < min_chunk ? min_chunk : c;
}

/* c ? a : b done on the bits. A float ?: whose arm does arithmetic is a branch to GCC under the
 * default -ftrapping-math (it will not speculate the arm), and a branch stops vectorisation. */
static inline float upm_cpu_fsel(int c, float a, float b)
{
    uint32_t ab, bb, m = -(uint32_t)(c != 0);
    memcpy(&ab, &a, 4);
    memcpy(&bb, &b, 4);
    ab = (ab & m) | (bb & ~m);
    memcpy(&a, &ab, 4);
    return a;
}

/* exp for float vectors: Cephes' range reduction and polynomial (relative error < 1e-7), with no
 * branches or libm calls so loops over it vectorise (at -O3). exp(x < -87.3) = 0, exp(x > 88.7) =
 * inf, NaN stays NaN. The rounding uses the 1.5*2^23 trick, valid because nothing here is built
 * with -ffast-math. */
static inline float upm_cpu_expf(float x)
{
    float xc = upm_cpu_fsel(x < -87.0f, -87.0f, x);
    xc = upm_cpu_fsel(xc > 88.0f, 88.0f, xc);
    float t = xc * 1.44269504088896341f + 12582912.0f;
    float n = t - 12582912.0f;
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    uint32_t tb, mb;
    const float magic = 12582912.0f;
    memcpy(&tb, &t, 4);
    memcpy(&mb, &magic, 4);
    uint32_t sb = (tb - mb + 127u) << 23; /* 2^n: n sits in the low mantissa bits of t */
    float scale;
    memcpy(&scale, &sb, 4);
    float y = upm_cpu_fsel(x < -87.33654f, 0.0f, p * scale);
    return upm_cpu_fsel(x > 88.72283f, (float)INFINITY, y);
}

/* Sum of n floats in double over 8 fixed lanes (lane l takes i = l mod 8), lanes combined in order:
 * vectorisable, and the same bits whatever the alignment or thread count. */
static inline double upm_cpu_sum(const float *x, size_t n)
{
    double acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++)
            acc[l] += (double)x[i + l];
    for (size_t l = 0; i < n; i++, l++)
        acc[l] += (double)x[i];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* Dot product of n floats, the same way. */
static inline double upm_cpu_dot(const float *x, const float *y, size_t n)
{
    double acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++)
            acc[l] += (double)x[i + l] * (double)y[i + l];
    for (size_t l = 0; i < n; i++, l++)
        acc[l] += (double)x[i] * (double)y[i];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* ---- the per-element loops of backend_cpu_vec.c ----
 * The sanitizer build compiles that file without ASan and UBSan so that its loops vectorise; a caller
 * checks every range it passes, whole, with upm_cpu_check first (the ranges each loop touches are named
 * at its definition). */
#if defined(__SANITIZE_ADDRESS__)
/* Reports (through ASan, with this call's stack) the first byte of [p, p + bytes) that is not addressable. */
void upm_cpu_check(const void *p, size_t bytes);
#else
static inline void upm_cpu_check(const void *p, size_t bytes)
{
    (void)p;
    (void)bytes;
}
#endif

void upm_cpu_vec_layernorm_fwd(float *y, float *mean, float *rstd, const float *x, const float *g, const float *b,
                               int r0, int r1, int cols, float eps);
void upm_cpu_vec_layernorm_dx(float *dx, const float *dy, const float *x, const float *mean, const float *rstd,
                              const float *g, int r0, int r1, int cols);
void upm_cpu_vec_layernorm_bwd(float *dx, double *ag, double *ab, const float *dy, const float *x, const float *mean,
                               const float *rstd, const float *g, int r0, int r1, int cols);
void upm_cpu_vec_gelu_fwd(float *y, const float *x, size_t n);
void upm_cpu_vec_gelu_bwd(float *dx, const float *dy, const float *x, size_t n);
void upm_cpu_vec_masked_softmax(float *P, const uint8_t *mask, int S);
void upm_cpu_vec_softmax_bwd(float *dS, const float *P, int S);
void upm_cpu_vec_add_bias(float *Y, const float *b, int r0, int r1, int cols);
/* Columns per pass of the bias gradient: its double accumulators stay in L1. */
#define UPM_CPU_BIAS_RUN 512
void upm_cpu_vec_bias_grad(float *db, const float *dY, int rows, int cols, int c0, int c1);
/* Sum of x[i]^2 over [0, n) in double, as upm_cpu_dot. */
double upm_cpu_vec_sumsq(const float *x, size_t n);
/* AdamW's constants for one step: PyTorch's order of operations, the bias corrections folded into step
 * (lr / (1 - b1^t)) and sbc2 (sqrt(1 - b2^t)); decay = 1 - lr * weight decay; gscale scales the gradient. */
typedef struct upm_cpu_adamw_k {
    float b1, b2, eps, step, sbc2, decay, gscale;
} upm_cpu_adamw_k;
void upm_cpu_vec_adamw(float *restrict p, float *restrict m, float *restrict v, const float *restrict g,
                       const uint8_t *restrict wd_mask, size_t n, upm_cpu_adamw_k k);

/* ---- ops of backend_cpu_rows.c ---- */
void upm_cpu_layernorm_fwd(upm_backend *be, float *y, float *mean, float *rstd, const float *x, const float *g,
                           const float *b, int rows, int cols, float eps);
void upm_cpu_layernorm_bwd(upm_backend *be, float *dx, float *dg, float *db, const float *dy, const float *x,
                           const float *mean, const float *rstd, const float *g, int rows, int cols);
void upm_cpu_gelu_fwd(upm_backend *be, float *y, const float *x, size_t n);
void upm_cpu_gelu_bwd(upm_backend *be, float *dx, const float *dy, const float *x, size_t n);
void upm_cpu_residual_fwd(upm_backend *be, float *y, const float *x, const float *f, const float *ls,
                          const float *keep, const int32_t *seq_of, int rows, int cols);
void upm_cpu_residual_bwd(upm_backend *be, float *dx, float *df, float *dls, const float *dy, const float *f,
                          const float *ls, const float *keep, const int32_t *seq_of, int rows, int cols);
void upm_cpu_gather_add(upm_backend *be, float *Y, const float *T, const int32_t *idx, int n, int cols);
void upm_cpu_scatter_add(upm_backend *be, float *dT, const float *dY, const int32_t *idx, int n, int cols);
void upm_cpu_gather_rows(upm_backend *be, float *Y, const float *X, const int32_t *idx, int n, int cols);
void upm_cpu_patchify(upm_backend *be, float *P, const float *pixels, int n, int T, int H, int W);

/* ---- ops of backend_cpu_attn.c ---- */
void upm_cpu_attention_fwd(upm_backend *be, float *out, float *probs, const float *qkv, const upm_attn_desc *a);
void upm_cpu_attention_kv_fwd(upm_backend *be, float *out, const float *qkv, const upm_attn_kv_desc *a);
void upm_cpu_attention_bwd(upm_backend *be, float *dqkv, const float *dout, const float *probs, const float *qkv,
                           const upm_attn_desc *a);

/* ---- ops of backend_cpu_loss.c ---- */
void upm_cpu_topk_softmax_fwd(upm_backend *be, float *G, float *probs, const float *logits, const float *noise,
                              int rows, int E, int k, int renorm);
void upm_cpu_topk_softmax_bwd(upm_backend *be, float *dlogits, const float *dG, const float *G, const float *probs,
                              int rows, int E, int renorm);
void upm_cpu_l2norm_fwd(upm_backend *be, float *y, float *norm, const float *x, int rows, int cols);
void upm_cpu_l2norm_bwd(upm_backend *be, float *dx, const float *dy, const float *y, const float *norm, int rows,
                        int cols);
/* ---- ops of backend_cpu_route.c ---- */
void upm_cpu_moe_dispatch(upm_backend *be, int32_t *idx, float *w, float *stats, const float *G, const int32_t *order,
                          int n, int E, int k, int C);
void upm_cpu_moe_balance(upm_backend *be, float *stats, float *dlogits, const float *probs, const float *G,
                         const int32_t *order, int n, int E, float weight);
void upm_cpu_scale_rows(upm_backend *be, float *Y, const float *w, int rows, int cols);
void upm_cpu_expert_mix(upm_backend *be, float *Y, const float *G, const float *W, int P, int E, size_t n);
void upm_cpu_row_dot_scatter(upm_backend *be, float *dG, const float *A, const float *B, const int32_t *idx, int rows,
                             int cols, int E, int e);
void upm_cpu_xent_fwd_bwd(upm_backend *be, float *out, float *dlogits, const float *logits, const int32_t *target,
                          int rows, int C, float eps, float scale);

#endif
