/* The backend op table: every tensor computation of the model goes through one of these ops, so the
 * CPU backend (oneDNN sgemm + OpenMP) and a CUDA backend run the same model code. Tensor pointers are
 * backend memory (device memory on a GPU): model code passes them along and never dereferences them;
 * host data reaches the backend only through upload/download. All tensors are fp32, row-major,
 * contiguous unless a leading dimension is given.
 *
 * Gradient convention: every backward op ADDS into its gradient outputs (dx, dW, db, dtable...), so
 * one buffer can gather contributions from several uses; callers zero what must start at zero.
 * Determinism: for the same inputs and thread count, every op gives the same bits on every call
 * (no atomics in reductions), which exact resume relies on. */
#ifndef UPM_BACKEND_H
#define UPM_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct upm_backend upm_backend;
typedef struct upm_event upm_event;

/* Element types (docs/model.md, "Element types"). Every op is fp32 today; bf16 (bfloat16: fp32's sign, its
 * 8 exponent bits and the top 7 of its 23 mantissa bits) is the GPU recipe's compute type for activations
 * and matmul inputs, with fp32 accumulation, fp32 master weights, moments, losses and metrics. */
typedef enum upm_dtype { UPM_F32 = 0, UPM_BF16 = 1 } upm_dtype;
static inline size_t upm_dtype_size(upm_dtype t) { return t == UPM_BF16 ? 2 : 4; }

/* Attention over sequences whose token rows live anywhere in the activation matrices: row_of[s*S + i]
 * is the row of token i of sequence s (tokens are grouped by attribute pattern, not by sequence, so
 * that each pattern's linears are one matmul). mask[s*S*S + i*S + j] != 0 lets token i attend to
 * token j; a token that may attend to nothing gets a zero output (it is padding). */
typedef struct upm_attn_desc {
    int nseq, S;           /* sequences, tokens per sequence (padded) */
    int heads, head_dim;   /* D = heads * head_dim */
    const int32_t *row_of; /* backend memory [nseq*S] */
    const uint8_t *mask;   /* backend memory [nseq*S*S] */
} upm_attn_desc;

/* Attention of new tokens over cached keys and values (generation, model/decode.c). Sequence s has n_new
 * new tokens; token i's q|k|v sit at row row_of[s*n_new + i] of qkv ([*, 3D]) and its output goes to the
 * same row of out ([*, D]). First the k|v of the first n_append new tokens of each sequence are stored at
 * cache positions len .. len+n_append-1 (cache row pos*nseq + s, width 2D: k | v). Then new token i
 * attends to the prefix shared by its `group` of sequences (prefix rows (s/group)*prefix_len + j, width
 * 3D: q | k | v, j < prefix_len), then to cache positions 0 .. len+i when i < n_append (appended tokens are
 * causal text), else to cache positions 0 .. len+n_append-1 and to itself (a query token nobody else
 * sees). Keys in that order; no probabilities kept (no backward). */
typedef struct upm_attn_kv_desc {
    int nseq, n_new, n_append;
    int heads, head_dim;
    const int32_t *row_of; /* backend memory [nseq*n_new] */
    const float *prefix;   /* backend memory [nseq/group][prefix_len][3D] */
    int prefix_len, group;
    float *cache;          /* backend memory [capacity][nseq][2D] */
    int len;               /* cached positions before this call */
} upm_attn_kv_desc;

struct upm_backend {
    const char *name;
    void *ctx;
    int cpu_threads; /* the threads of ops computed on the CPU (cpu, debug): oneDNN's sgemm splits its sums
                        by this count, so results are bit-exact only at the same count; 0 on a device */

    /* ---- memory ---- */
    void *(*alloc)(upm_backend *be, size_t bytes); /* zeroed, 64-byte aligned; NULL when out of memory */
    void (*free)(upm_backend *be, void *p);
    void (*upload)(upm_backend *be, void *dst, const void *host_src, size_t bytes);
    void (*download)(upm_backend *be, void *host_dst, const void *src, size_t bytes);
    void (*copy)(upm_backend *be, void *dst, const void *src, size_t bytes);
    void (*zero)(upm_backend *be, void *p, size_t bytes);
    /* n elements of src (type st) into dst (type dt): fp32 -> bf16 rounds to nearest, ties to even
     * (infinities and signs kept, values from the largest bf16 + half an ulp up become infinity), the bits
     * PyTorch's .to(torch.bfloat16) gives except for NaNs (a quiet NaN of the same sign here; PyTorch's CPU
     * path writes 0xffff); bf16 -> fp32 is exact; same types copy. */
    void (*convert)(upm_backend *be, void *dst, upm_dtype dt, const void *src, upm_dtype st, size_t n);
    void (*sync)(upm_backend *be); /* waits for queued work (no-op on the CPU) */

    /* ---- order and waiting ----
     * Ops are queued, in the order called, on the backend's stream, and may still be running when they
     * return (a GPU's are). download into host memory is the one implicit wait: it returns once everything
     * queued before it, and the copy, are done. upload from ordinary host memory returns once its source
     * has been read (the caller may reuse it at once); from host_alloc memory the copy may still be in flight,
     * and the caller may rewrite the source only after a later download, or an event recorded after the
     * upload, has completed. On the CPU everything completes before the call returns. An event marks a point of the stream:
     * record places it after everything queued so far; query says, without waiting, whether all of that has
     * completed; wait blocks the host until it has. The gradient reduction starts a bucket when the event
     * recorded after its backward ops has completed. */
    upm_event *(*event_new)(upm_backend *be); /* NULL when out of memory */
    void (*event_free)(upm_backend *be, upm_event *ev);
    void (*record)(upm_backend *be, upm_event *ev);
    int (*query)(upm_backend *be, upm_event *ev); /* 1: complete */
    void (*wait)(upm_backend *be, upm_event *ev);
    /* Host memory the backend moves data to and from fastest (page-locked on a GPU): staging of the
     * gradient reduction, uploads of batches. 64-byte aligned; NULL when out of memory. Both may be called
     * from any thread (the batches are allocated by the decoding thread). */
    void *(*host_alloc)(upm_backend *be, size_t bytes);
    void (*host_free)(upm_backend *be, void *p);
    /* Errors: ops return nothing; an op that fails (no scratch memory, a library or kernel error) records
     * it and leaves its outputs NaN. status returns 0, or UPM_EBACKEND with the first failure's op and
     * reason in err; the failure sticks (every later call reports it), as a GPU's does. Callers check it
     * once per pass and per optimizer step, not per op. */
    int (*status)(upm_backend *be, upm_err *err);
    /* The host address of backend memory p when the host may use it directly, every op having completed
     * when it returned (the CPU backend: p itself; a communicator then reduces gradients in place, and
     * token routing reads each expert's fill), else NULL: stage through download/upload. */
    void *(*host_ptr)(upm_backend *be, void *p);
    /* The device stream the ops are queued on (a cudaStream_t on the CUDA backend), so a device
     * communicator (NCCL) can queue its collectives behind them; NULL on backends without one. */
    void *(*native_stream)(upm_backend *be);
    /* Buckets of parameter ranges (gradient reduction): pack gathers the n ranges src[off[r] ..
     * off[r]+len[r]) one after another into dst; unpack_scale writes them back, times alpha. off and len
     * are host arrays, in floats. */
    void (*pack)(upm_backend *be, float *dst, const float *src, const size_t *off, const size_t *len, int n);
    void (*unpack_scale)(upm_backend *be, float *dst, const float *src, const size_t *off, const size_t *len, int n,
                         float alpha);

    /* ---- dense algebra ---- */
    /* C[M,N] = alpha * op(A) * op(B) + beta * C, op(X) = X or X^T (ta/tb != 0), leading dims as BLAS
     * row-major. beta = 0 overwrites C (NaNs in C do not propagate). */
    void (*gemm)(upm_backend *be, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc);
    /* gemm computed in type `compute`: UPM_F32 is gemm; UPM_BF16 rounds A and B to bfloat16 (nearest, ties
     * to even, as convert) and accumulates their products in fp32 (tensor cores on a GPU). The linears of
     * the model call it with the model's precision (upm_model.compute); C and everything else stay fp32. */
    void (*gemm_ct)(upm_backend *be, upm_dtype compute, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                    int lda, const float *B, int ldb, float beta, float *C, int ldc);
    /* y[i] += alpha * x[i] */
    void (*axpy)(upm_backend *be, float *y, const float *x, float alpha, size_t n);
    /* y[i] *= alpha */
    void (*scale)(upm_backend *be, float *y, float alpha, size_t n);
    /* Y[r, c] += b[c] for rows x cols */
    void (*add_bias)(upm_backend *be, float *Y, const float *b, int rows, int cols);
    /* db[c] += sum_r dY[r, c] */
    void (*bias_grad)(upm_backend *be, float *db, const float *dY, int rows, int cols);
    /* out[0] = sum_i x[i]^2, summed in double in a fixed order (global gradient norm) */
    void (*sumsq)(upm_backend *be, float *out, const float *x, size_t n);
    /* The learnable temperature, read where it lives (no download inside a step): gemm_temp is gemm with
     * alpha = s = min(exp(t[0]), cap); temperature_bwd adds dt[0] += sum_i dy[i] * y[i] (= dL/ds * s for
     * y = s * cos), summed as gemm sums a 1 x 1 x n product, unless the cap holds (s = cap: no gradient). */
    void (*gemm_temp)(upm_backend *be, int ta, int tb, int M, int N, int K, const float *t, float cap, const float *A,
                      int lda, const float *B, int ldb, float beta, float *C, int ldc);
    void (*temperature_bwd)(upm_backend *be, float *dt, const float *dy, const float *y, size_t n, const float *t,
                            float cap);

    /* ---- per-token ops (rows x cols) ---- */
    /* y = (x - mean) * rstd * g + b, eps inside the sqrt; saves mean and rstd per row */
    void (*layernorm_fwd)(upm_backend *be, float *y, float *mean, float *rstd, const float *x, const float *g,
                          const float *b, int rows, int cols, float eps);
    void (*layernorm_bwd)(upm_backend *be, float *dx, float *dg, float *db, const float *dy, const float *x,
                          const float *mean, const float *rstd, const float *g, int rows, int cols);
    /* GELU with erf: y = x/2 * (1 + erf(x / sqrt 2)) */
    void (*gelu_fwd)(upm_backend *be, float *y, const float *x, size_t n);
    void (*gelu_bwd)(upm_backend *be, float *dx, const float *dy, const float *x, size_t n);
    /* LayerScale + drop path + residual: y[r,:] = x[r,:] + keep[seq_of[r]] * ls[:] * f[r,:].
     * keep is per sequence (0 or 1/(1-p); NULL = all 1); seq_of maps a row to its sequence. y may be x. */
    void (*residual_fwd)(upm_backend *be, float *y, const float *x, const float *f, const float *ls,
                         const float *keep, const int32_t *seq_of, int rows, int cols);
    /* dx += dy; df += keep*ls*dy; dls += sum_r keep*f*dy */
    void (*residual_bwd)(upm_backend *be, float *dx, float *df, float *dls, const float *dy, const float *f,
                         const float *ls, const float *keep, const int32_t *seq_of, int rows, int cols);

    /* ---- attention ---- */
    /* qkv: [rows, 3D] (q | k | v, head h at columns h*hd of each); out: [rows, D] (overwritten at every
     * row of row_of); probs: [nseq, heads, S, S] saved for backward. Scale 1/sqrt(head_dim). */
    void (*attention_fwd)(upm_backend *be, float *out, float *probs, const float *qkv, const upm_attn_desc *a);
    void (*attention_bwd)(upm_backend *be, float *dqkv, const float *dout, const float *probs, const float *qkv,
                          const upm_attn_desc *a);
    /* Generation's attention over a key/value cache (upm_attn_kv_desc): forward only. */
    void (*attention_kv_fwd)(upm_backend *be, float *out, const float *qkv, const upm_attn_kv_desc *a);

    /* ---- embeddings and row movement ---- */
    /* Y[r,:] += T[idx[r],:] for r < n (idx rows of a cols-wide table) */
    void (*gather_add)(upm_backend *be, float *Y, const float *T, const int32_t *idx, int n, int cols);
    /* dT[idx[r],:] += dY[r,:], deterministic when indices repeat */
    void (*scatter_add)(upm_backend *be, float *dT, const float *dY, const int32_t *idx, int n, int cols);
    /* Y[r,:] = X[idx[r],:] (idx < 0: zeros) / dX[idx[r],:] += dY[r,:] */
    void (*gather_rows)(upm_backend *be, float *Y, const float *X, const int32_t *idx, int n, int cols);
    void (*scatter_rows_add)(upm_backend *be, float *dX, const float *dY, const int32_t *idx, int n, int cols);
    /* Image/video patches: pixels [n][T][3][H][W] -> P [n*T*(H/16)*(W/16)][3*16*16], rows in (n, t, py, px)
     * order, columns in (channel, y, x) order (a Conv2d weight [D,3,16,16] flattened). No backward
     * (pixels are inputs). */
    void (*patchify)(upm_backend *be, float *P, const float *pixels, int n, int T, int H, int W);

    /* ---- gates and losses ---- */
    /* Row-wise top-k of softmax(logits + noise) over E columns: G = the k largest probabilities in place,
     * zeros elsewhere (ties: the lower index wins); renorm: divided by their sum (= a softmax over the k
     * chosen logits). probs [rows,E] saved. noise may be NULL. */
    void (*topk_softmax_fwd)(upm_backend *be, float *G, float *probs, const float *logits, const float *noise,
                             int rows, int E, int k, int renorm);
    /* dlogits += d(G)/dlogits . dG (gradient flows through the kept entries only); renorm as in fwd */
    void (*topk_softmax_bwd)(upm_backend *be, float *dlogits, const float *dG, const float *G, const float *probs,
                             int rows, int E, int renorm);
    /* mask[c] = 1 where column c of G [rows, cols] has a non-zero entry (other entries unchanged): the
     * experts a gate chose, marked on the backend so that a step downloads the whole record once */
    void (*mark_nonzero_cols)(upm_backend *be, uint8_t *mask, const float *G, int rows, int cols);
    /* ---- data-dependent routing (token routing with capacity, docs/model.md "Token routing") ---- */
    /* Dispatch with capacity C per expert. G [rows, E] holds each token's kept gate values (top-k; a token's
     * j-th choice is its kept entry with j larger ones, ties to the lower index). order[n] lists the rows
     * that take part (valid tokens) in priority order. Choice j = 0, then 1, ... up to k-1: each token in
     * order takes the next slot of its j-th expert e: slot s < C gets idx[e*C + s] = row, w[e*C + s] =
     * G[row, e]; an assignment past C is dropped. Free slots: idx -1, w 0. stats[0] += dropped count. */
    void (*moe_dispatch)(upm_backend *be, int32_t *idx, float *w, float *stats, const float *G, const int32_t *order,
                         int n, int E, int k, int C);
    /* The Switch-Transformer balance loss over the n rows of order: f_e = share of them whose first choice
     * (largest G, ties to the lower index) is e, P_e = their mean probs[:, e]. stats (may be NULL):
     * stats[0] += E * sum_e f_e P_e (summed in double, fixed order). dlogits (may be NULL): += weight *
     * d(E sum_e f_e P_e)/dlogits through the softmax of each row (f held constant). */
    void (*moe_balance)(upm_backend *be, float *stats, float *dlogits, const float *probs, const float *G,
                        const int32_t *order, int n, int E, float weight);
    /* Y[r, :] *= w[r] */
    void (*scale_rows)(upm_backend *be, float *Y, const float *w, int rows, int cols);
    /* The experts mixed per row (data-independent routing's merged weights, Eq. 4): Y[q, j] = sum over e
     * with G[q, e] != 0, in expert order, of G[q, e] * W[e, j] (in double, rounded once), for q < P, j < n
     * (W [E, n], G [P, E], Y [P, n]); experts a row does not use are not read. Row q's bits depend only on G's row q and W (not on
     * P or the other rows), so a model merged for a task (upmoe-export) computes the very weights the
     * routed pass does. */
    void (*expert_mix)(upm_backend *be, float *Y, const float *G, const float *W, int P, int E, size_t n);
    /* dG[idx[r] * E + e] += <A[r, :], B[r, :]> (summed in double) for every r with idx[r] >= 0; the
     * non-negative idx are distinct. */
    void (*row_dot_scatter)(upm_backend *be, float *dG, const float *A, const float *B, const int32_t *idx, int rows,
                            int cols, int E, int e);

    /* y = x / max(||x||, 1e-12) per row; saves the norm */
    void (*l2norm_fwd)(upm_backend *be, float *y, float *norm, const float *x, int rows, int cols);
    void (*l2norm_bwd)(upm_backend *be, float *dx, const float *dy, const float *y, const float *norm, int rows,
                       int cols);
    /* Cross-entropy with label smoothing eps, mean over the rows whose target >= 0 (others ignored):
     * loss_i = -(1-eps) log p[t_i] - eps/C sum_c log p[c]. Writes out[0] = mean loss, out[1] = correct
     * predictions (argmax == target, ties to the lower index), and dlogits = scale * dloss/dlogits
     * (overwritten; zero rows for ignored targets). */
    void (*xent_fwd_bwd)(upm_backend *be, float *out, float *dlogits, const float *logits, const int32_t *target,
                         int rows, int C, float eps, float scale);

    /* ---- optimizer ---- */
    /* Global-norm clipping, decided on the backend: gscale[0] = clip / (norm + 1e-6) when clip > 0 and
     * norm = sqrtf(sumsq[0]) exceeds it, else 1 (float arithmetic, as the trainer always computed it). */
    void (*clip_scale)(upm_backend *be, float *gscale, const float *sumsq, float clip);
    /* AdamW on n parameters: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr (mhat/(sqrt(vhat)+eps) +
     * wd[i] p) with mhat = m/(1-b1^t), vhat = v/(1-b2^t); g is multiplied by gscale[0] (backend memory:
     * clip_scale's) first. wd is per parameter (0 where no decay): wd_mask[i] != 0 applies weight_decay. */
    void (*adamw)(upm_backend *be, float *p, float *m, float *v, const float *g, const uint8_t *wd_mask, size_t n,
                  float lr, float b1, float b2, float eps, float weight_decay, const float *gscale, int t);

    void (*destroy)(upm_backend *be);
};

/* ---- the registry (backend_registry.c) ---- */
typedef struct upm_backend_opts {
    int threads; /* CPU threads of the CPU ops (0 = the OpenMP default) */
} upm_backend_opts;
/* Opens backend `name` ("cpu", "debug", "cuda"; NULL = upm_backend_default()). A name this build or machine cannot
 * run is UPM_EUSAGE, naming the backends that can. o may be NULL (defaults). */
int upm_backend_open(const char *name, const upm_backend_opts *o, upm_backend **out, upm_err *err);
/* The linears' matmul precision for --precision NAME ("fp32", "bf16"; NULL: bf16 on the cuda backend, else
 * fp32); another name is UPM_EUSAGE. */
int upm_precision_parse(const char *name, const upm_backend *be, upm_dtype *out, upm_err *err);
/* $UPMOE_BACKEND when set (so a whole test suite can run on another backend), else "cpu". */
const char *upm_backend_default(void);
/* "cpu, debug": the backends upm_backend_open can open here (cuda where the module is built and a GPU is
 * visible). */
void upm_backend_list(char *buf, size_t cap);
/* 0 when backend `name` can run here; else 1 with the reason in why ("no CUDA device here (...)"). */
int upm_backend_why_not(const char *name, char *why, size_t cap);

/* The CPU backend: oneDNN's sgemm for matmuls, OpenMP loops for the rest, `threads` threads (0 = the
 * OpenMP default). */
int upm_backend_cpu_new(int threads, upm_backend **out, upm_err *err);
/* The debug backend (backend_debug.c): the CPU backend's ops on memory the host cannot dereference. Its
 * pointers are tagged (bit 52 set: a non-canonical or unmapped address), so model or trainer code that
 * reads or writes backend memory other than through upload/download crashes at once, as it would on a
 * GPU; every pointer an op receives is checked to lie in a live allocation of this backend (and, where
 * the op knows its extent, to fit), and a host pointer given as backend memory or the reverse aborts
 * naming the op and the argument. */
int upm_backend_debug_new(int threads, upm_backend **out, upm_err *err);

static inline void upm_backend_free(upm_backend *be)
{
    if (be)
        be->destroy(be);
}

#endif
