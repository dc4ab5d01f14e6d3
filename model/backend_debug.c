/* The debug backend (backend.h): every op of the CPU backend, on pointers the host cannot dereference.
 * alloc returns the CPU allocation's address + TAG; each op checks and untags its pointer arguments
 * (those inside descriptors too) and calls the CPU op. Code outside the backend that touches backend
 * memory directly faults on the tagged address instead of working by accident, as it would not on a GPU. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

/* Bit 52: above every user address of x86-64 (47 bits, or 56 with 5-level paging, where the kernel does
 * not hand out addresses this high unless asked) and of arm64 (48 bits; not in the top byte that
 * arm64's top-byte-ignore would let through). */
#define TAG ((uintptr_t)1 << 52)

typedef struct span {
    uintptr_t base; /* untagged */
    size_t bytes;
} span;

typedef struct dbg {
    upm_backend *cpu;
    pthread_mutex_t lk;
    span *live; /* sorted by base */
    int n, cap;
} dbg;

__attribute__((noreturn)) static void die(const char *op, const char *arg, const char *what)
{
    fprintf(stderr, "upmoe debug backend: %s: %s %s\n", op, arg, what);
    fflush(stderr);
    abort();
}

/* Index of the live allocation holding address r (untagged), or -1. */
static int find(dbg *d, uintptr_t r)
{
    int lo = 0, hi = d->n - 1, at = -1;
    while (lo <= hi) { /* the last base <= r */
        int mid = (lo + hi) / 2;
        if (d->live[mid].base <= r)
            at = mid, lo = mid + 1;
        else
            hi = mid - 1;
    }
    return at >= 0 && r <= d->live[at].base + d->live[at].bytes ? at : -1;
}

/* Backend memory h (tagged) as the CPU op's pointer, checking that [h, h + bytes) lies in one live
 * allocation; NULL stays NULL. */
static void *dev(upm_backend *be, const void *h, size_t bytes, const char *op, const char *arg)
{
    if (!h)
        return NULL;
    dbg *d = be->ctx;
    uintptr_t u = (uintptr_t)h;
    if (!(u & TAG))
        die(op, arg, "is a host pointer where backend memory belongs");
    uintptr_t r = u - TAG;
    pthread_mutex_lock(&d->lk);
    int i = find(d, r);
    int fits = i >= 0 && r + bytes <= d->live[i].base + d->live[i].bytes;
    pthread_mutex_unlock(&d->lk);
    if (i < 0)
        die(op, arg, "is not in a live allocation of this backend (freed, or never allocated here)");
    if (!fits)
        die(op, arg, "runs past the end of its allocation");
    return (void *)r;
}
#define D(p, bytes) dev(be, (p), (bytes), __func__ + 2, #p)
#define F(p, floats) D(p, sizeof(float) * (size_t)(floats))

static void host(const void *p, const char *op, const char *arg)
{
    if ((uintptr_t)p & TAG)
        die(op, arg, "is backend memory where host memory belongs");
}

#define CPU(op, ...) ((dbg *)be->ctx)->cpu->op(((dbg *)be->ctx)->cpu, __VA_ARGS__)

/* ---- memory ---- */

static void *d_alloc(upm_backend *be, size_t bytes)
{
    dbg *d = be->ctx;
    void *p = d->cpu->alloc(d->cpu, bytes);
    if (!p)
        return NULL;
    pthread_mutex_lock(&d->lk);
    if (d->n == d->cap) {
        int cap = d->cap ? 2 * d->cap : 64;
        span *x = realloc(d->live, sizeof *x * (size_t)cap);
        if (!x) {
            pthread_mutex_unlock(&d->lk);
            d->cpu->free(d->cpu, p);
            return NULL;
        }
        d->live = x, d->cap = cap;
    }
    int at = d->n;
    while (at > 0 && d->live[at - 1].base > (uintptr_t)p)
        at--;
    memmove(d->live + at + 1, d->live + at, sizeof *d->live * (size_t)(d->n - at));
    d->live[at] = (span){(uintptr_t)p, bytes};
    d->n++;
    pthread_mutex_unlock(&d->lk);
    return (void *)((uintptr_t)p + TAG);
}

static void d_free(upm_backend *be, void *h)
{
    if (!h)
        return;
    dbg *d = be->ctx;
    uintptr_t u = (uintptr_t)h;
    if (!(u & TAG))
        die("free", "p", "is a host pointer, not backend memory");
    pthread_mutex_lock(&d->lk);
    int i = find(d, u - TAG);
    int exact = i >= 0 && d->live[i].base == u - TAG;
    if (exact) {
        memmove(d->live + i, d->live + i + 1, sizeof *d->live * (size_t)(d->n - i - 1));
        d->n--;
    }
    pthread_mutex_unlock(&d->lk);
    if (!exact)
        die("free", "p", "is not the start of a live allocation (freed twice?)");
    d->cpu->free(d->cpu, (void *)(u - TAG));
}

static void d_upload(upm_backend *be, void *dst, const void *src, size_t bytes)
{
    host(src, "upload", "host_src");
    CPU(upload, D(dst, bytes), src, bytes);
}

static void d_download(upm_backend *be, void *dst, const void *src, size_t bytes)
{
    host(dst, "download", "host_dst");
    CPU(download, dst, D(src, bytes), bytes);
}

static void d_copy(upm_backend *be, void *dst, const void *src, size_t bytes)
{
    CPU(copy, D(dst, bytes), D(src, bytes), bytes);
}

static void d_zero(upm_backend *be, void *p, size_t bytes) { CPU(zero, D(p, bytes), bytes); }

static int d_status(upm_backend *be, upm_err *err)
{
    dbg *d = be->ctx;
    return d->cpu->status(d->cpu, err);
}

static void d_sync(upm_backend *be)
{
    dbg *d = be->ctx;
    d->cpu->sync(d->cpu);
}

static void *d_host_ptr(upm_backend *be, void *p)
{
    (void)be, (void)p;
    return NULL; /* never: that is the point */
}

/* Floats the ranges reach into their source or destination, and in all. */
static void ranges(const size_t *off, const size_t *len, int n, size_t *reach, size_t *total)
{
    *reach = *total = 0;
    for (int r = 0; r < n; r++) {
        *reach = off[r] + len[r] > *reach ? off[r] + len[r] : *reach;
        *total += len[r];
    }
}

static void d_pack(upm_backend *be, float *dst, const float *src, const size_t *off, const size_t *len, int n)
{
    size_t reach, total;
    host(off, "pack", "off"), host(len, "pack", "len");
    ranges(off, len, n, &reach, &total);
    CPU(pack, F(dst, total), F(src, reach), off, len, n);
}

static void d_unpack_scale(upm_backend *be, float *dst, const float *src, const size_t *off, const size_t *len,
                           int n, float alpha)
{
    size_t reach, total;
    host(off, "unpack_scale", "off"), host(len, "unpack_scale", "len");
    ranges(off, len, n, &reach, &total);
    CPU(unpack_scale, F(dst, reach), F(src, total), off, len, n, alpha);
}

/* ---- dense algebra ---- */

/* Floats a row-major operand of r x c (leading dimension ld) spans. */
static size_t span_of(int r, int c, int ld) { return r > 0 && c > 0 ? (size_t)(r - 1) * (size_t)ld + (size_t)c : 0; }

static void d_gemm(upm_backend *be, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc)
{
    CPU(gemm, ta, tb, M, N, K, alpha, F(A, ta ? span_of(K, M, lda) : span_of(M, K, lda)), lda,
        F(B, tb ? span_of(N, K, ldb) : span_of(K, N, ldb)), ldb, beta, F(C, span_of(M, N, ldc)), ldc);
}

static void d_axpy(upm_backend *be, float *y, const float *x, float alpha, size_t n)
{
    CPU(axpy, F(y, n), F(x, n), alpha, n);
}

static void d_scale(upm_backend *be, float *y, float alpha, size_t n) { CPU(scale, F(y, n), alpha, n); }

static void d_add_bias(upm_backend *be, float *Y, const float *b, int rows, int cols)
{
    CPU(add_bias, F(Y, (size_t)rows * cols), F(b, cols), rows, cols);
}

static void d_bias_grad(upm_backend *be, float *db, const float *dY, int rows, int cols)
{
    CPU(bias_grad, F(db, cols), F(dY, (size_t)rows * cols), rows, cols);
}

static void d_sumsq(upm_backend *be, float *out, const float *x, size_t n) { CPU(sumsq, F(out, 1), F(x, n), n); }

static void d_gemm_temp(upm_backend *be, int ta, int tb, int M, int N, int K, const float *t, float cap,
                        const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    CPU(gemm_temp, ta, tb, M, N, K, F(t, 1), cap, F(A, ta ? span_of(K, M, lda) : span_of(M, K, lda)), lda,
        F(B, tb ? span_of(N, K, ldb) : span_of(K, N, ldb)), ldb, beta, F(C, span_of(M, N, ldc)), ldc);
}

static void d_temperature_bwd(upm_backend *be, float *dt, const float *dy, const float *y, size_t n, const float *t,
                              float cap)
{
    CPU(temperature_bwd, F(dt, 1), F(dy, n), F(y, n), n, F(t, 1), cap);
}

/* ---- per-token ops ---- */

static void d_layernorm_fwd(upm_backend *be, float *y, float *mean, float *rstd, const float *x, const float *g,
                            const float *b, int rows, int cols, float eps)
{
    size_t rc = (size_t)rows * cols;
    CPU(layernorm_fwd, F(y, rc), F(mean, rows), F(rstd, rows), F(x, rc), F(g, cols), F(b, cols), rows, cols, eps);
}

static void d_layernorm_bwd(upm_backend *be, float *dx, float *dg, float *db, const float *dy, const float *x,
                            const float *mean, const float *rstd, const float *g, int rows, int cols)
{
    size_t rc = (size_t)rows * cols;
    CPU(layernorm_bwd, F(dx, rc), F(dg, cols), F(db, cols), F(dy, rc), F(x, rc), F(mean, rows), F(rstd, rows),
        F(g, cols), rows, cols);
}

static void d_gelu_fwd(upm_backend *be, float *y, const float *x, size_t n) { CPU(gelu_fwd, F(y, n), F(x, n), n); }

static void d_gelu_bwd(upm_backend *be, float *dx, const float *dy, const float *x, size_t n)
{
    CPU(gelu_bwd, F(dx, n), F(dy, n), F(x, n), n);
}

static void d_residual_fwd(upm_backend *be, float *y, const float *x, const float *f, const float *ls,
                           const float *keep, const int32_t *seq_of, int rows, int cols)
{
    size_t rc = (size_t)rows * cols;
    CPU(residual_fwd, F(y, rc), F(x, rc), F(f, rc), F(ls, cols), F(keep, 0), D(seq_of, sizeof(int32_t) * rows),
        rows, cols);
}

static void d_residual_bwd(upm_backend *be, float *dx, float *df, float *dls, const float *dy, const float *f,
                           const float *ls, const float *keep, const int32_t *seq_of, int rows, int cols)
{
    size_t rc = (size_t)rows * cols;
    CPU(residual_bwd, F(dx, rc), F(df, rc), F(dls, cols), F(dy, rc), F(f, rc), F(ls, cols), F(keep, 0),
        D(seq_of, sizeof(int32_t) * rows), rows, cols);
}

/* ---- attention ---- */

static upm_attn_desc attn(upm_backend *be, const upm_attn_desc *a)
{
    upm_attn_desc u = *a;
    size_t ss = (size_t)a->nseq * a->S;
    u.row_of = D(a->row_of, sizeof(int32_t) * ss);
    u.mask = D(a->mask, ss * a->S);
    return u;
}

static void d_attention_fwd(upm_backend *be, float *out, float *probs, const float *qkv, const upm_attn_desc *a)
{
    upm_attn_desc u = attn(be, a);
    CPU(attention_fwd, F(out, 0), F(probs, (size_t)a->nseq * a->heads * a->S * a->S), F(qkv, 0), &u);
}

static void d_attention_bwd(upm_backend *be, float *dqkv, const float *dout, const float *probs, const float *qkv,
                            const upm_attn_desc *a)
{
    upm_attn_desc u = attn(be, a);
    CPU(attention_bwd, F(dqkv, 0), F(dout, 0), F(probs, (size_t)a->nseq * a->heads * a->S * a->S), F(qkv, 0), &u);
}

static void d_attention_kv_fwd(upm_backend *be, float *out, const float *qkv, const upm_attn_kv_desc *a)
{
    upm_attn_kv_desc u = *a;
    u.row_of = D(a->row_of, sizeof(int32_t) * (size_t)a->nseq * a->n_new);
    u.prefix = F(a->prefix, 0);
    u.cache = F(a->cache, 0);
    CPU(attention_kv_fwd, F(out, 0), F(qkv, 0), &u);
}

/* ---- embeddings and row movement ---- */

static void d_gather_add(upm_backend *be, float *Y, const float *T, const int32_t *idx, int n, int cols)
{
    CPU(gather_add, F(Y, (size_t)n * cols), F(T, 0), D(idx, sizeof(int32_t) * n), n, cols);
}

static void d_scatter_add(upm_backend *be, float *dT, const float *dY, const int32_t *idx, int n, int cols)
{
    CPU(scatter_add, F(dT, 0), F(dY, (size_t)n * cols), D(idx, sizeof(int32_t) * n), n, cols);
}

static void d_gather_rows(upm_backend *be, float *Y, const float *X, const int32_t *idx, int n, int cols)
{
    CPU(gather_rows, F(Y, (size_t)n * cols), F(X, 0), D(idx, sizeof(int32_t) * n), n, cols);
}

static void d_scatter_rows_add(upm_backend *be, float *dX, const float *dY, const int32_t *idx, int n, int cols)
{
    CPU(scatter_rows_add, F(dX, 0), F(dY, (size_t)n * cols), D(idx, sizeof(int32_t) * n), n, cols);
}

static void d_patchify(upm_backend *be, float *P, const float *pixels, int n, int T, int H, int W)
{
    size_t px = (size_t)n * T * 3 * H * W;
    CPU(patchify, F(P, px), F(pixels, px), n, T, H, W);
}

/* ---- gates and losses ---- */

static void d_topk_softmax_fwd(upm_backend *be, float *G, float *probs, const float *logits, const float *noise,
                               int rows, int E, int k, int renorm)
{
    size_t re = (size_t)rows * E;
    CPU(topk_softmax_fwd, F(G, re), F(probs, re), F(logits, re), F(noise, 0), rows, E, k, renorm);
}

static void d_topk_softmax_bwd(upm_backend *be, float *dlogits, const float *dG, const float *G, const float *probs,
                               int rows, int E, int renorm)
{
    size_t re = (size_t)rows * E;
    CPU(topk_softmax_bwd, F(dlogits, re), F(dG, re), F(G, re), F(probs, re), rows, E, renorm);
}

static void d_mark_nonzero_cols(upm_backend *be, uint8_t *mask, const float *G, int rows, int cols)
{
    CPU(mark_nonzero_cols, D(mask, cols), F(G, (size_t)rows * cols), rows, cols);
}

static void d_l2norm_fwd(upm_backend *be, float *y, float *norm, const float *x, int rows, int cols)
{
    size_t rc = (size_t)rows * cols;
    CPU(l2norm_fwd, F(y, rc), F(norm, rows), F(x, rc), rows, cols);
}

static void d_l2norm_bwd(upm_backend *be, float *dx, const float *dy, const float *y, const float *norm, int rows,
                         int cols)
{
    size_t rc = (size_t)rows * cols;
    CPU(l2norm_bwd, F(dx, rc), F(dy, rc), F(y, rc), F(norm, rows), rows, cols);
}

static void d_xent_fwd_bwd(upm_backend *be, float *out, float *dlogits, const float *logits, const int32_t *target,
                           int rows, int C, float eps, float scale)
{
    size_t rc = (size_t)rows * C;
    CPU(xent_fwd_bwd, F(out, 2), F(dlogits, rc), F(logits, rc), D(target, sizeof(int32_t) * rows), rows, C, eps,
        scale);
}

/* ---- optimizer ---- */

static void d_clip_scale(upm_backend *be, float *gscale, const float *sumsq, float clip)
{
    CPU(clip_scale, F(gscale, 1), F(sumsq, 1), clip);
}

static void d_adamw(upm_backend *be, float *p, float *m, float *v, const float *g, const uint8_t *wd_mask, size_t n,
                    float lr, float b1, float b2, float eps, float weight_decay, const float *gscale, int t)
{
    CPU(adamw, F(p, n), F(m, n), F(v, n), F(g, n), D(wd_mask, n), n, lr, b1, b2, eps, weight_decay, F(gscale, 1), t);
}

static void d_destroy(upm_backend *be)
{
    dbg *d = be->ctx;
    upm_backend_free(d->cpu);
    pthread_mutex_destroy(&d->lk);
    free(d->live);
    free(d);
    free(be);
}

int upm_backend_debug_new(int threads, upm_backend **out, upm_err *err)
{
    *out = NULL;
    upm_backend *cpu = NULL;
    int rc = upm_backend_cpu_new(threads, &cpu, err);
    if (rc)
        return rc;
    upm_backend *be = calloc(1, sizeof *be);
    dbg *d = calloc(1, sizeof *d);
    if (!be || !d) {
        free(be), free(d);
        upm_backend_free(cpu);
        return upm_errf(err, UPM_ENOMEM, "debug backend: out of memory");
    }
    d->cpu = cpu;
    pthread_mutex_init(&d->lk, NULL);
    *be = (upm_backend){
        .name = "debug",
        .ctx = d,
        .alloc = d_alloc,
        .free = d_free,
        .upload = d_upload,
        .download = d_download,
        .copy = d_copy,
        .zero = d_zero,
        .sync = d_sync,
        .status = d_status,
        .host_ptr = d_host_ptr,
        .pack = d_pack,
        .unpack_scale = d_unpack_scale,
        .gemm = d_gemm,
        .axpy = d_axpy,
        .scale = d_scale,
        .add_bias = d_add_bias,
        .bias_grad = d_bias_grad,
        .sumsq = d_sumsq,
        .gemm_temp = d_gemm_temp,
        .temperature_bwd = d_temperature_bwd,
        .layernorm_fwd = d_layernorm_fwd,
        .layernorm_bwd = d_layernorm_bwd,
        .gelu_fwd = d_gelu_fwd,
        .gelu_bwd = d_gelu_bwd,
        .residual_fwd = d_residual_fwd,
        .residual_bwd = d_residual_bwd,
        .attention_fwd = d_attention_fwd,
        .attention_bwd = d_attention_bwd,
        .attention_kv_fwd = d_attention_kv_fwd,
        .gather_add = d_gather_add,
        .scatter_add = d_scatter_add,
        .gather_rows = d_gather_rows,
        .scatter_rows_add = d_scatter_rows_add,
        .patchify = d_patchify,
        .topk_softmax_fwd = d_topk_softmax_fwd,
        .topk_softmax_bwd = d_topk_softmax_bwd,
        .mark_nonzero_cols = d_mark_nonzero_cols,
        .l2norm_fwd = d_l2norm_fwd,
        .l2norm_bwd = d_l2norm_bwd,
        .xent_fwd_bwd = d_xent_fwd_bwd,
        .clip_scale = d_clip_scale,
        .adamw = d_adamw,
        .destroy = d_destroy,
    };
    *out = be;
    return 0;
}
