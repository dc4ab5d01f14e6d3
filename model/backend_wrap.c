/* A backend that wraps another (backend_wrap.h): memory through the hooks, every compute op with its
 * backend-memory arguments (those inside attention descriptors too) turned into the inner backend's
 * pointers by hooks.dev, its host arrays shown to hooks.host, and hooks.before / hooks.after around the
 * inner op. The debug backend and the tests' host-mirror adapter are its two uses. */
#include <stdlib.h>
#include <string.h>

#include "backend_wrap.h"

typedef struct wrap {
    upm_backend *inner;
    upm_backend_hooks h;
} wrap;

#define W(be) ((wrap *)(be)->ctx)
#define DEV(p, bytes, op, arg) W(be)->h.dev(W(be)->h.ctx, (p), (bytes), (op), (arg))
#define D(p, bytes) DEV((p), (bytes), __func__ + 2, #p)
#define F(p, floats) D(p, sizeof(float) * (size_t)(floats))
#define HOST(p) (W(be)->h.host ? W(be)->h.host(W(be)->h.ctx, (p), __func__ + 2, #p) : (void)0)
#define INNER(op, ...) (before(be, #op), W(be)->inner->op(W(be)->inner, __VA_ARGS__), after(be, #op))

static void before(upm_backend *be, const char *op)
{
    if (W(be)->h.before)
        W(be)->h.before(W(be)->h.ctx, op);
}

static void after(upm_backend *be, const char *op)
{
    if (W(be)->h.after)
        W(be)->h.after(W(be)->h.ctx, op);
}

/* ---- memory: the hooks' ---- */

static void *w_alloc(upm_backend *be, size_t bytes) { return W(be)->h.alloc(W(be)->h.ctx, bytes); }
static void w_free(upm_backend *be, void *p) { W(be)->h.free(W(be)->h.ctx, p); }
static void w_upload(upm_backend *be, void *dst, const void *src, size_t bytes)
{
    W(be)->h.upload(W(be)->h.ctx, dst, src, bytes);
}
static void w_download(upm_backend *be, void *dst, const void *src, size_t bytes)
{
    W(be)->h.download(W(be)->h.ctx, dst, src, bytes);
}
static void w_copy(upm_backend *be, void *dst, const void *src, size_t bytes)
{
    W(be)->h.copy(W(be)->h.ctx, dst, src, bytes);
}
static void w_zero(upm_backend *be, void *p, size_t bytes) { W(be)->h.zero(W(be)->h.ctx, p, bytes); }
static void *w_native_stream(upm_backend *be) { return W(be)->inner->native_stream(W(be)->inner); }
static void *w_host_ptr(upm_backend *be, void *p) { return W(be)->h.host_ptr ? W(be)->h.host_ptr(W(be)->h.ctx, p) : NULL; }
static int w_status(upm_backend *be, upm_err *err) { return W(be)->inner->status(W(be)->inner, err); }
static void completed(upm_backend *be, const char *op)
{
    if (W(be)->h.complete)
        W(be)->h.complete(W(be)->h.ctx, op);
}
static void w_sync(upm_backend *be)
{
    W(be)->inner->sync(W(be)->inner);
    completed(be, "sync");
}
/* events: the inner backend's */
static upm_event *w_event_new(upm_backend *be) { return W(be)->inner->event_new(W(be)->inner); }
static void w_event_free(upm_backend *be, upm_event *ev) { W(be)->inner->event_free(W(be)->inner, ev); }
static void w_record(upm_backend *be, upm_event *ev) { W(be)->inner->record(W(be)->inner, ev); }
static int w_query(upm_backend *be, upm_event *ev)
{
    int done = W(be)->inner->query(W(be)->inner, ev);
    if (done)
        completed(be, "query");
    return done;
}
static void w_wait(upm_backend *be, upm_event *ev)
{
    W(be)->inner->wait(W(be)->inner, ev);
    completed(be, "wait");
}
/* host staging memory: the hooks' when they have it, else the inner backend's */
static void *w_host_alloc(upm_backend *be, size_t bytes)
{
    if (W(be)->h.host_alloc)
        return W(be)->h.host_alloc(W(be)->h.ctx, bytes);
    return W(be)->inner->host_alloc(W(be)->inner, bytes);
}
static void w_host_free(upm_backend *be, void *p)
{
    if (W(be)->h.host_free)
        W(be)->h.host_free(W(be)->h.ctx, p);
    else
        W(be)->inner->host_free(W(be)->inner, p);
}

/* ---- compute ops ---- */

static void w_convert(upm_backend *be, void *dst, upm_dtype dt, const void *src, upm_dtype st, size_t n)
{
    INNER(convert, D(dst, n * upm_dtype_size(dt)), dt, D(src, n * upm_dtype_size(st)), st, n);
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

static void w_pack(upm_backend *be, float *dst, const float *src, const size_t *off, const size_t *len, int n)
{
    size_t reach, total;
    HOST(off), HOST(len);
    ranges(off, len, n, &reach, &total);
    INNER(pack, F(dst, total), F(src, reach), off, len, n);
}

static void w_unpack_scale(upm_backend *be, float *dst, const float *src, const size_t *off, const size_t *len,
                           int n, float alpha)
{
    size_t reach, total;
    HOST(off), HOST(len);
    ranges(off, len, n, &reach, &total);
    INNER(unpack_scale, F(dst, reach), F(src, total), off, len, n, alpha);
}

/* ---- dense algebra ---- */

/* Floats a row-major operand of r x c (leading dimension ld) spans. */
static size_t span_of(int r, int c, int ld) { return r > 0 && c > 0 ? (size_t)(r - 1) * (size_t)ld + (size_t)c : 0; }

static void w_gemm(upm_backend *be, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc)
{
    INNER(gemm, ta, tb, M, N, K, alpha, F(A, ta ? span_of(K, M, lda) : span_of(M, K, lda)), lda,
        F(B, tb ? span_of(N, K, ldb) : span_of(K, N, ldb)), ldb, beta, F(C, span_of(M, N, ldc)), ldc);
}

static void w_gemm_ct(upm_backend *be, upm_dtype compute, int ta, int tb, int M, int N, int K, float alpha,
                      const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    INNER(gemm_ct, compute, ta, tb, M, N, K, alpha, F(A, ta ? span_of(K, M, lda) : span_of(M, K, lda)), lda,
        F(B, tb ? span_of(N, K, ldb) : span_of(K, N, ldb)), ldb, beta, F(C, span_of(M, N, ldc)), ldc);
}

static void w_axpy(upm_backend *be, float *y, const float *x, float alpha, size_t n)
{
    INNER(axpy, F(y, n), F(x, n), alpha, n);
}

static void w_scale(upm_backend *be, float *y, float alpha, size_t n) { INNER(scale, F(y, n), alpha, n); }

static void w_add_bias(upm_backend *be, float *Y, const float *b, int rows, int cols)
{
    INNER(add_bias, F(Y, (size_t)rows * cols), F(b, cols), rows, cols);
}

static void w_bias_grad(upm_backend *be, float *db, const float *dY, int rows, int cols)
{
    INNER(bias_grad, F(db, cols), F(dY, (size_t)rows * cols), rows, cols);
}

static void w_sumsq(upm_backend *be, float *out, const float *x, size_t n) { INNER(sumsq, F(out, 1), F(x, n), n); }

static void w_gemm_temp(upm_backend *be, int ta, int tb, int M, int N, int K, const float *t, float cap,
                        const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    INNER(gemm_temp, ta, tb, M, N, K, F(t, 1), cap, F(A, ta ? span_of(K, M, lda) : span_of(M, K, lda)), lda,
        F(B, tb ? span_of(N, K, ldb) : span_of(K, N, ldb)), ldb, beta, F(C, span_of(M, N, ldc)), ldc);
}

static void w_temperature_bwd(upm_backend *be, float *dt, const float *dy, const float *y, size_t n, const float *t,
                              float cap)
{
    INNER(temperature_bwd, F(dt, 1), F(dy, n), F(y, n), n, F(t, 1), cap);
}

/* ---- per-token ops ---- */

static void w_layernorm_fwd(upm_backend *be, float *y, float *mean, float *rstd, const float *x, const float *g,
                            const float *b, int rows, int cols, float eps)
{
    size_t rc = (size_t)rows * cols;
    INNER(layernorm_fwd, F(y, rc), F(mean, rows), F(rstd, rows), F(x, rc), F(g, cols), F(b, cols), rows, cols, eps);
}

static void w_layernorm_bwd(upm_backend *be, float *dx, float *dg, float *db, const float *dy, const float *x,
                            const float *mean, const float *rstd, const float *g, int rows, int cols)
{
    size_t rc = (size_t)rows * cols;
    INNER(layernorm_bwd, F(dx, rc), F(dg, cols), F(db, cols), F(dy, rc), F(x, rc), F(mean, rows), F(rstd, rows),
        F(g, cols), rows, cols);
}

static void w_gelu_fwd(upm_backend *be, float *y, const float *x, size_t n) { INNER(gelu_fwd, F(y, n), F(x, n), n); }

static void w_gelu_bwd(upm_backend *be, float *dx, const float *dy, const float *x, size_t n)
{
    INNER(gelu_bwd, F(dx, n), F(dy, n), F(x, n), n);
}

static void w_residual_fwd(upm_backend *be, float *y, const float *x, const float *f, const float *ls,
                           const float *keep, const int32_t *seq_of, int rows, int cols)
{
    size_t rc = (size_t)rows * cols;
    INNER(residual_fwd, F(y, rc), F(x, rc), F(f, rc), F(ls, cols), F(keep, 0), D(seq_of, sizeof(int32_t) * rows),
        rows, cols);
}

static void w_residual_bwd(upm_backend *be, float *dx, float *df, float *dls, const float *dy, const float *f,
                           const float *ls, const float *keep, const int32_t *seq_of, int rows, int cols)
{
    size_t rc = (size_t)rows * cols;
    INNER(residual_bwd, F(dx, rc), F(df, rc), F(dls, cols), F(dy, rc), F(f, rc), F(ls, cols), F(keep, 0),
        D(seq_of, sizeof(int32_t) * rows), rows, cols);
}

/* ---- attention ---- */

static upm_attn_desc attn(upm_backend *be, const upm_attn_desc *a, const char *op)
{
    upm_attn_desc u = *a;
    size_t ss = (size_t)a->nseq * a->S;
    u.row_of = DEV(a->row_of, sizeof(int32_t) * ss, op, "row_of");
    u.mask = DEV(a->mask, ss * a->S, op, "mask");
    return u;
}

static void w_attention_fwd(upm_backend *be, float *out, float *probs, const float *qkv, const upm_attn_desc *a)
{
    upm_attn_desc u = attn(be, a, __func__ + 2);
    INNER(attention_fwd, F(out, 0), F(probs, (size_t)a->nseq * a->heads * a->S * a->S), F(qkv, 0), &u);
}

static void w_attention_bwd(upm_backend *be, float *dqkv, const float *dout, const float *probs, const float *qkv,
                            const upm_attn_desc *a)
{
    upm_attn_desc u = attn(be, a, __func__ + 2);
    INNER(attention_bwd, F(dqkv, 0), F(dout, 0), F(probs, (size_t)a->nseq * a->heads * a->S * a->S), F(qkv, 0), &u);
}

static void w_attention_kv_fwd(upm_backend *be, float *out, const float *qkv, const upm_attn_kv_desc *a)
{
    upm_attn_kv_desc u = *a;
    u.row_of = DEV(a->row_of, sizeof(int32_t) * (size_t)a->nseq * a->n_new, "attention_kv_fwd", "row_of");
    u.prefix = DEV(a->prefix, 0, "attention_kv_fwd", "prefix");
    u.cache = DEV(a->cache, 0, "attention_kv_fwd", "cache");
    INNER(attention_kv_fwd, F(out, 0), F(qkv, 0), &u);
}

/* ---- embeddings and row movement ---- */

static void w_gather_add(upm_backend *be, float *Y, const float *T, const int32_t *idx, int n, int cols)
{
    INNER(gather_add, F(Y, (size_t)n * cols), F(T, 0), D(idx, sizeof(int32_t) * n), n, cols);
}

static void w_scatter_add(upm_backend *be, float *dT, const float *dY, const int32_t *idx, int n, int cols)
{
    INNER(scatter_add, F(dT, 0), F(dY, (size_t)n * cols), D(idx, sizeof(int32_t) * n), n, cols);
}

static void w_gather_rows(upm_backend *be, float *Y, const float *X, const int32_t *idx, int n, int cols)
{
    INNER(gather_rows, F(Y, (size_t)n * cols), F(X, 0), D(idx, sizeof(int32_t) * n), n, cols);
}

static void w_scatter_rows_add(upm_backend *be, float *dX, const float *dY, const int32_t *idx, int n, int cols)
{
    INNER(scatter_rows_add, F(dX, 0), F(dY, (size_t)n * cols), D(idx, sizeof(int32_t) * n), n, cols);
}

static void w_patchify(upm_backend *be, float *P, const float *pixels, int n, int T, int H, int W)
{
    size_t px = (size_t)n * T * 3 * H * W;
    INNER(patchify, F(P, px), F(pixels, px), n, T, H, W);
}

/* ---- gates and losses ---- */

static void w_topk_softmax_fwd(upm_backend *be, float *G, float *probs, const float *logits, const float *noise,
                               int rows, int E, int k, int renorm)
{
    size_t re = (size_t)rows * E;
    INNER(topk_softmax_fwd, F(G, re), F(probs, re), F(logits, re), F(noise, 0), rows, E, k, renorm);
}

static void w_topk_softmax_bwd(upm_backend *be, float *dlogits, const float *dG, const float *G, const float *probs,
                               int rows, int E, int renorm)
{
    size_t re = (size_t)rows * E;
    INNER(topk_softmax_bwd, F(dlogits, re), F(dG, re), F(G, re), F(probs, re), rows, E, renorm);
}

static void w_mark_nonzero_cols(upm_backend *be, uint8_t *mask, const float *G, int rows, int cols)
{
    INNER(mark_nonzero_cols, D(mask, cols), F(G, (size_t)rows * cols), rows, cols);
}

static void w_moe_dispatch(upm_backend *be, int32_t *idx, float *w, float *stats, const float *G, const int32_t *order,
                           int n, int E, int k, int C)
{
    size_t ec = (size_t)E * (C > 0 ? C : 0);
    INNER(moe_dispatch, D(idx, sizeof(int32_t) * ec), F(w, ec), F(stats, 1), F(G, 0), D(order, sizeof(int32_t) * n),
          n, E, k, C);
}

static void w_moe_balance(upm_backend *be, float *stats, float *dlogits, const float *probs, const float *G,
                          const int32_t *order, int n, int E, float weight)
{
    INNER(moe_balance, F(stats, stats ? 1 : 0), F(dlogits, 0), F(probs, 0), F(G, 0), D(order, sizeof(int32_t) * n), n,
          E, weight);
}

static void w_expert_mix(upm_backend *be, float *Y, const float *G, const float *W, int P, int E, size_t n)
{
    INNER(expert_mix, F(Y, (size_t)P * n), F(G, (size_t)P * E), F(W, (size_t)E * n), P, E, n);
}

static void w_scale_rows(upm_backend *be, float *Y, const float *w, int rows, int cols)
{
    INNER(scale_rows, F(Y, (size_t)rows * cols), F(w, rows), rows, cols);
}

static void w_row_dot_scatter(upm_backend *be, float *dG, const float *A, const float *B, const int32_t *idx, int rows,
                              int cols, int E, int e)
{
    size_t rc = (size_t)rows * cols;
    INNER(row_dot_scatter, F(dG, 0), F(A, rc), F(B, rc), D(idx, sizeof(int32_t) * rows), rows, cols, E, e);
}

static void w_l2norm_fwd(upm_backend *be, float *y, float *norm, const float *x, int rows, int cols)
{
    size_t rc = (size_t)rows * cols;
    INNER(l2norm_fwd, F(y, rc), F(norm, rows), F(x, rc), rows, cols);
}

static void w_l2norm_bwd(upm_backend *be, float *dx, const float *dy, const float *y, const float *norm, int rows,
                         int cols)
{
    size_t rc = (size_t)rows * cols;
    INNER(l2norm_bwd, F(dx, rc), F(dy, rc), F(y, rc), F(norm, rows), rows, cols);
}

static void w_xent_fwd_bwd(upm_backend *be, float *out, float *dlogits, const float *logits, const int32_t *target,
                           int rows, int C, float eps, float scale)
{
    size_t rc = (size_t)rows * C;
    INNER(xent_fwd_bwd, F(out, 2), F(dlogits, rc), F(logits, rc), D(target, sizeof(int32_t) * rows), rows, C, eps,
        scale);
}

/* ---- optimizer ---- */

static void w_clip_scale(upm_backend *be, float *gscale, const float *sumsq, float clip)
{
    INNER(clip_scale, F(gscale, 1), F(sumsq, 1), clip);
}

static void w_adamw(upm_backend *be, float *p, float *m, float *v, const float *g, const uint8_t *wd_mask, size_t n,
                    float lr, float b1, float b2, float eps, float weight_decay, const float *gscale, int t)
{
    INNER(adamw, F(p, n), F(m, n), F(v, n), F(g, n), D(wd_mask, n), n, lr, b1, b2, eps, weight_decay, F(gscale, 1), t);
}

static void w_destroy(upm_backend *be)
{
    wrap *w = be->ctx;
    if (w->h.destroy)
        w->h.destroy(w->h.ctx);
    upm_backend_free(w->inner);
    free(w);
    free(be);
}

int upm_backend_wrap(upm_backend *inner, const upm_backend_hooks *h, upm_backend **out, upm_err *err)
{
    *out = NULL;
    upm_backend *be = calloc(1, sizeof *be);
    wrap *w = calloc(1, sizeof *w);
    if (!be || !w) {
        free(be), free(w);
        return upm_errf(err, UPM_ENOMEM, "%s backend: out of memory", h->name);
    }
    w->inner = inner, w->h = *h;
    *be = (upm_backend){
        .name = h->name,
        .ctx = w,
        .cpu_threads = inner->cpu_threads,
        .alloc = w_alloc,
        .free = w_free,
        .upload = w_upload,
        .download = w_download,
        .copy = w_copy,
        .zero = w_zero,
        .sync = w_sync,
        .status = w_status,
        .convert = w_convert,
        .host_ptr = w_host_ptr,
        .event_new = w_event_new,
        .event_free = w_event_free,
        .record = w_record,
        .query = w_query,
        .wait = w_wait,
        .host_alloc = w_host_alloc,
        .host_free = w_host_free,
        .native_stream = w_native_stream,
        .pack = w_pack,
        .unpack_scale = w_unpack_scale,
        .gemm = w_gemm,
        .gemm_ct = w_gemm_ct,
        .axpy = w_axpy,
        .scale = w_scale,
        .add_bias = w_add_bias,
        .bias_grad = w_bias_grad,
        .sumsq = w_sumsq,
        .gemm_temp = w_gemm_temp,
        .temperature_bwd = w_temperature_bwd,
        .layernorm_fwd = w_layernorm_fwd,
        .layernorm_bwd = w_layernorm_bwd,
        .gelu_fwd = w_gelu_fwd,
        .gelu_bwd = w_gelu_bwd,
        .residual_fwd = w_residual_fwd,
        .residual_bwd = w_residual_bwd,
        .attention_fwd = w_attention_fwd,
        .attention_bwd = w_attention_bwd,
        .attention_kv_fwd = w_attention_kv_fwd,
        .gather_add = w_gather_add,
        .scatter_add = w_scatter_add,
        .gather_rows = w_gather_rows,
        .scatter_rows_add = w_scatter_rows_add,
        .patchify = w_patchify,
        .topk_softmax_fwd = w_topk_softmax_fwd,
        .topk_softmax_bwd = w_topk_softmax_bwd,
        .mark_nonzero_cols = w_mark_nonzero_cols,
        .moe_dispatch = w_moe_dispatch,
        .moe_balance = w_moe_balance,
        .scale_rows = w_scale_rows,
        .expert_mix = w_expert_mix,
        .row_dot_scatter = w_row_dot_scatter,
        .l2norm_fwd = w_l2norm_fwd,
        .l2norm_bwd = w_l2norm_bwd,
        .xent_fwd_bwd = w_xent_fwd_bwd,
        .clip_scale = w_clip_scale,
        .adamw = w_adamw,
        .destroy = w_destroy,
    };
    *out = be;
    return 0;
}
