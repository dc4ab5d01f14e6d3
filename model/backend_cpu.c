/* The CPU backend's table and its dense ops: memory, oneDNN sgemm, the BLAS-1 style loops, bias
 * gradient, the gradient-norm sum and AdamW. Per-token ops live in backend_cpu_rows.c, attention in
 * backend_cpu_attn.c, gates and losses in backend_cpu_loss.c, and the hottest per-element loops of all
 * of them in backend_cpu_vec.c. */
#include "backend_cpu.h"

#include <dnnl.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- context ---- */

/* threads > 0 is re-applied at every op rather than once: omp_set_num_threads only sets the calling
 * thread's ICV, and oneDNN's sgemm sizes its team from the same ICV, so this keeps the count right
 * even when ops are called from another thread than the one that created the backend. */
int upm_cpu_threads(upm_backend *be)
{
    upm_cpu_ctx *c = be->ctx;
    if (c->threads > 0 && omp_get_max_threads() != c->threads)
        omp_set_num_threads(c->threads);
    return omp_get_max_threads();
}

float *upm_cpu_scratch(upm_backend *be, size_t per_thread, int threads, size_t *stride)
{
    upm_cpu_ctx *c = be->ctx;
    size_t s = (per_thread + 15) & ~(size_t)15; /* 16 floats = 64 bytes per slice boundary */
    if (threads < 1)
        threads = 1;
    if (s < per_thread || s > SIZE_MAX / sizeof(float) / (size_t)threads)
        return NULL;
    size_t bytes = s * sizeof(float) * (size_t)threads;
    if (bytes > c->scratch_bytes) {
        free(c->scratch);
        c->scratch = aligned_alloc(64, bytes);
        c->scratch_bytes = c->scratch ? bytes : 0;
        if (!c->scratch)
            return NULL;
    }
    *stride = s;
    return c->scratch;
}

void upm_cpu_poison(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = NAN;
}

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
/* One query of ASan's shadow memory for the whole range, then a checked read of its first bad byte, which
 * ASan reports as an overflow with this stack. Not inlined, so that the report names it at frame #0. */
__attribute__((noinline)) void upm_cpu_check(const void *p, size_t bytes)
{
    const volatile char *bad = __asan_region_is_poisoned((void *)p, bytes);
    if (bad)
        (void)*bad;
}
#endif

void upm_cpu_fail(upm_backend *be, const char *op, const char *why)
{
    upm_cpu_ctx *c = be->ctx;
    if (!c->failed[0])
        snprintf(c->failed, sizeof c->failed, "%s: %s", op, why);
}

static int cpu_status(upm_backend *be, upm_err *err)
{
    upm_cpu_ctx *c = be->ctx;
    return c->failed[0] ? upm_errf(err, UPM_EBACKEND, "%s backend: %s", be->name, c->failed) : 0;
}

/* ---- memory ---- */

static void *cpu_alloc(upm_backend *be, size_t bytes)
{
    (void)be;
    size_t n = (bytes + 63) & ~(size_t)63;
    if (n < bytes)
        return NULL;
    if (n == 0)
        n = 64;
    void *p = aligned_alloc(64, n);
    if (p)
        memset(p, 0, n);
    return p;
}

static void cpu_free(upm_backend *be, void *p)
{
    (void)be;
    free(p);
}

static void cpu_copy(upm_backend *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    if (bytes)
        memmove(dst, src, bytes);
}

/* Large buffers (gradients, zeroed every step) are cleared by the whole team: one core's stores
 * do not saturate memory bandwidth. */
enum { ZERO_CHUNK = 1 << 18, ZERO_PAR_MIN = 1 << 20 };

static void cpu_zero(upm_backend *be, void *p, size_t bytes)
{
    if (!bytes)
        return;
    if (bytes < ZERO_PAR_MIN) {
        memset(p, 0, bytes);
        return;
    }
    upm_cpu_threads(be);
    size_t nc = (bytes + ZERO_CHUNK - 1) / ZERO_CHUNK;
#pragma omp parallel for schedule(static)
    for (size_t c = 0; c < nc; c++) {
        size_t lo = c * ZERO_CHUNK;
        memset((char *)p + lo, 0, bytes - lo < ZERO_CHUNK ? bytes - lo : ZERO_CHUNK);
    }
}

static void cpu_sync(upm_backend *be)
{
    (void)be;
}

/* ---- dense algebra ---- */

static void cpu_gemm(upm_backend *be, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0)
        return;
    upm_cpu_threads(be);
    if (K <= 0) { /* an empty product: BLAS semantics, C = beta * C (beta 0 overwrites) */
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++)
                C[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[(size_t)i * ldc + j];
        return;
    }
    dnnl_status_t st = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    if (st != dnnl_success) { /* bad leading dimensions */
        char why[160];
        snprintf(why, sizeof why, "oneDNN sgemm refused M=%d N=%d K=%d lda=%d ldb=%d ldc=%d (status %d)", M, N, K, lda,
                 ldb, ldc, (int)st);
        upm_cpu_fail(be, "gemm", why);
        for (int i = 0; i < M && ldc >= N; i++)
            upm_cpu_poison(C + (size_t)i * ldc, (size_t)N);
    }
}

static void cpu_axpy(upm_backend *be, float *y, const float *x, float alpha, size_t n)
{
    upm_cpu_threads(be);
#pragma omp parallel for schedule(static) if (n >= UPM_CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++)
        y[i] += alpha * x[i];
}

static void cpu_scale(upm_backend *be, float *y, float alpha, size_t n)
{
    upm_cpu_threads(be);
#pragma omp parallel for schedule(static) if (n >= UPM_CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++)
        y[i] *= alpha;
}

/* fp32 -> bf16, round to nearest even: add 0x7fff plus the kept part's lowest bit, then truncate (a carry
 * into the exponent is the correct rounding up, to infinity at the top); NaNs keep their sign and become
 * quiet (a payload only in the dropped bits would otherwise truncate to infinity). */
static uint16_t f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x0040u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static void cpu_convert(upm_backend *be, void *dst, upm_dtype dt, const void *src, upm_dtype st, size_t n)
{
    upm_cpu_threads(be);
    if (dt == st) {
        memmove(dst, src, n * upm_dtype_size(dt));
        return;
    }
    if (dt == UPM_BF16) {
        const float *s = src;
        uint16_t *d = dst;
#pragma omp parallel for schedule(static) if (n >= UPM_CPU_PAR_MIN)
        for (size_t i = 0; i < n; i++)
            d[i] = f32_to_bf16(s[i]);
        return;
    }
    const uint16_t *s = src;
    float *d = dst;
#pragma omp parallel for schedule(static) if (n >= UPM_CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)s[i] << 16;
        memcpy(&d[i], &u, sizeof u);
    }
}

/* Rows x cols of X (leading dimension ld) rounded to bfloat16 values (held as floats, packed): the
 * products of two such values are exact in fp32, so sgemm on the copies is bf16 inputs with fp32
 * accumulation (this oneDNN has no bf16 GEMM in its C API). */
static void round_bf16(float *dst, const float *X, int rows, int cols, int ld)
{
#pragma omp parallel for schedule(static) if ((size_t)rows * (size_t)cols >= UPM_CPU_PAR_MIN)
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            uint32_t u = (uint32_t)f32_to_bf16(X[(size_t)r * ld + c]) << 16;
            memcpy(&dst[(size_t)r * cols + c], &u, sizeof u);
        }
}

static void cpu_gemm_ct(upm_backend *be, upm_dtype compute, int ta, int tb, int M, int N, int K, float alpha,
                        const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    if (compute == UPM_F32 || M <= 0 || N <= 0 || K <= 0) {
        cpu_gemm(be, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    int ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
    size_t na = (size_t)ar * ac, stride;
    upm_cpu_threads(be);
    float *s = upm_cpu_scratch(be, na + (size_t)br * bc, 1, &stride);
    if (!s) {
        upm_cpu_fail(be, "gemm_ct", "no memory for the bf16 copies");
        for (int i = 0; i < M; i++)
            upm_cpu_poison(C + (size_t)i * ldc, (size_t)N);
        return;
    }
    round_bf16(s, A, ar, ac, lda);
    round_bf16(s + na, B, br, bc, ldb);
    cpu_gemm(be, ta, tb, M, N, K, alpha, s, ac, s + na, bc, beta, C, ldc);
}

/* Events: every op has completed when it returns, so an event is complete as soon as it is recorded. */
struct upm_event {
    int recorded;
};

static upm_event *cpu_event_new(upm_backend *be)
{
    (void)be;
    return calloc(1, sizeof(upm_event));
}

static void cpu_event_free(upm_backend *be, upm_event *ev)
{
    (void)be;
    free(ev);
}

static void cpu_record(upm_backend *be, upm_event *ev)
{
    (void)be;
    ev->recorded = 1;
}

static int cpu_query(upm_backend *be, upm_event *ev)
{
    (void)be, (void)ev;
    return 1;
}

static void cpu_wait(upm_backend *be, upm_event *ev) { (void)be, (void)ev; }

static void *cpu_host_alloc(upm_backend *be, size_t bytes) { return cpu_alloc(be, bytes); }
static void cpu_host_free(upm_backend *be, void *p) { cpu_free(be, p); }
static void *cpu_native_stream(upm_backend *be)
{
    (void)be;
    return NULL; /* ops complete before they return: no stream */
}

static void *cpu_host_ptr(upm_backend *be, void *p)
{
    (void)be;
    return p;
}

static void cpu_pack(upm_backend *be, float *dst, const float *src, const size_t *off, const size_t *len, int n)
{
    (void)be;
    for (int r = 0; r < n; dst += len[r], r++)
        memcpy(dst, src + off[r], sizeof(float) * len[r]);
}

static void cpu_unpack_scale(upm_backend *be, float *dst, const float *src, const size_t *off, const size_t *len,
                             int n, float alpha)
{
    (void)be;
    for (int r = 0; r < n; src += len[r], r++)
        for (size_t i = 0; i < len[r]; i++)
            dst[off[r] + i] = src[i] * alpha;
}

static void cpu_mark_nonzero_cols(upm_backend *be, uint8_t *mask, const float *G, int rows, int cols)
{
    (void)be;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            if (G[(size_t)r * cols + c] != 0.0f)
                mask[c] = 1;
}

static void cpu_add_bias(upm_backend *be, float *Y, const float *b, int rows, int cols)
{
    if (rows <= 0 || cols <= 0)
        return;
    upm_cpu_threads(be);
    int len = 16, nc = (rows + len - 1) / len;
#pragma omp parallel for schedule(static) if ((size_t)rows * (size_t)cols >= UPM_CPU_PAR_MIN)
    for (int k = 0; k < nc; k++) {
        int r0 = k * len, r1 = rows - r0 < len ? rows : r0 + len;
        upm_cpu_check(Y + (size_t)r0 * cols, (size_t)(r1 - r0) * cols * sizeof *Y);
        upm_cpu_check(b, (size_t)cols * sizeof *b);
        upm_cpu_vec_add_bias(Y, b, r0, r1, cols);
    }
}

/* Each thread takes a contiguous run of column blocks and streams the rows once over all of them:
 * every column is still summed by one thread in row order (the same bits for any thread count), but
 * memory is read row-contiguously instead of one 64-byte piece per row and block. */
static void bias_grad_cols(float *db, const float *dY, int rows, int cols, int c0, int c1)
{
    upm_cpu_check(db + c0, (size_t)(c1 - c0) * sizeof *db);
    upm_cpu_check(dY + c0, ((size_t)(rows - 1) * cols + (size_t)(c1 - c0)) * sizeof *dY);
    upm_cpu_vec_bias_grad(db, dY, rows, cols, c0, c1);
}

static void cpu_bias_grad(upm_backend *be, float *db, const float *dY, int rows, int cols)
{
    if (rows <= 0 || cols <= 0)
        return;
    int nt = upm_cpu_threads(be);
    int nb = (cols + UPM_CPU_COLBLOCK - 1) / UPM_CPU_COLBLOCK;
    if ((size_t)rows * (size_t)cols < UPM_CPU_PAR_MIN || nt < 2 || nb < 2) {
        bias_grad_cols(db, dY, rows, cols, 0, cols);
        return;
    }
    if (nt > nb)
        nt = nb;
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), n = omp_get_num_threads();
        int b0 = (int)((long)nb * t / n), b1 = (int)((long)nb * (t + 1) / n);
        int c1 = b1 * UPM_CPU_COLBLOCK < cols ? b1 * UPM_CPU_COLBLOCK : cols;
        if (b0 < b1)
            bias_grad_cols(db, dY, rows, cols, b0 * UPM_CPU_COLBLOCK, c1);
    }
}

static void cpu_sumsq(upm_backend *be, float *out, const float *x, size_t n)
{
    upm_cpu_threads(be);
    size_t chunk = upm_cpu_chunk(n, 4096);
    size_t nc = (n + chunk - 1) / chunk;
    double part[UPM_CPU_MAX_CHUNKS];
#pragma omp parallel for schedule(static) if (n >= UPM_CPU_PAR_MIN)
    for (size_t ci = 0; ci < nc; ci++) {
        size_t lo = ci * chunk, len = n - lo < chunk ? n - lo : chunk;
        upm_cpu_check(x + lo, len * sizeof *x);
        part[ci] = upm_cpu_vec_sumsq(x + lo, len);
    }
    double total = 0.0;
    for (size_t ci = 0; ci < nc; ci++)
        total += part[ci];
    out[0] = (float)total;
}

static float temperature(const float *t, float cap)
{
    float s = expf(t[0]);
    return s < cap ? s : cap;
}

static void cpu_gemm_temp(upm_backend *be, int ta, int tb, int M, int N, int K, const float *t, float cap,
                          const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    cpu_gemm(be, ta, tb, M, N, K, temperature(t, cap), A, lda, B, ldb, beta, C, ldc);
}

static void cpu_temperature_bwd(upm_backend *be, float *dt, const float *dy, const float *y, size_t n, const float *t,
                                float cap)
{
    if (expf(t[0]) < cap)
        cpu_gemm(be, 0, 1, 1, 1, (int)n, 1.0f, dy, (int)n, y, (int)n, 1.0f, dt, 1);
}

/* ---- optimizer ---- */

/* PyTorch's AdamW order of operations (decay first, then the step with the bias corrections folded
 * into the step size and the denominator), which is the documented formula rearranged; the loop is
 * upm_cpu_vec_adamw, compiled for AVX-512/AVX2 too: sqrt and the divisions dominate and are exact in
 * every width. */
enum { ADAMW_CHUNK = 16384 };

static void cpu_clip_scale(upm_backend *be, float *gscale, const float *sumsq, float clip)
{
    (void)be;
    float norm = sqrtf(sumsq[0]);
    gscale[0] = clip > 0 && norm > clip ? clip / (norm + 1e-6f) : 1.0f;
}

static void cpu_adamw(upm_backend *be, float *p, float *m, float *v, const float *g, const uint8_t *wd_mask,
                      size_t n, float lr, float b1, float b2, float eps, float weight_decay, const float *gs, int t)
{
    float gscale = gs[0];
    upm_cpu_threads(be);
    if (t < 1)
        t = 1;
    double bc1 = 1.0 - pow((double)b1, (double)t), bc2 = 1.0 - pow((double)b2, (double)t);
    upm_cpu_adamw_k k = {b1, b2, eps, (float)((double)lr / bc1), (float)sqrt(bc2), 1.0f - lr * weight_decay, gscale};
    size_t nc = (n + ADAMW_CHUNK - 1) / ADAMW_CHUNK;
#pragma omp parallel for schedule(static) if (n >= UPM_CPU_PAR_MIN)
    for (size_t c = 0; c < nc; c++) {
        size_t lo = c * ADAMW_CHUNK, len = n - lo < ADAMW_CHUNK ? n - lo : ADAMW_CHUNK;
        const uint8_t *wd = wd_mask ? wd_mask + lo : NULL;
        upm_cpu_check(p + lo, len * sizeof *p);
        upm_cpu_check(m + lo, len * sizeof *m);
        upm_cpu_check(v + lo, len * sizeof *v);
        upm_cpu_check(g + lo, len * sizeof *g);
        if (wd)
            upm_cpu_check(wd, len);
        upm_cpu_vec_adamw(p + lo, m + lo, v + lo, g + lo, wd, len, k);
    }
}

/* ---- table ---- */

static void cpu_destroy(upm_backend *be)
{
    upm_cpu_ctx *c = be->ctx;
    free(c->scratch);
    free(c);
    free(be);
}

int upm_backend_cpu_new(int threads, upm_backend **out, upm_err *err)
{
    if (!out)
        return upm_errf(err, UPM_EINVAL, "cpu backend: no place for the result");
    *out = NULL;
    if (threads < 0)
        return upm_errf(err, UPM_EUSAGE, "cpu backend: threads must be >= 0 (0 = OpenMP default), not %d", threads);
    upm_backend *be = calloc(1, sizeof *be);
    upm_cpu_ctx *c = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return upm_errf(err, UPM_ENOMEM, "cpu backend: out of memory");
    }
    c->threads = threads;
    if (threads > 0) /* process-wide in effect: the calling thread's ICV governs every team it starts */
        omp_set_num_threads(threads);
    *be = (upm_backend){
        .name = "cpu",
        .ctx = c,
        .cpu_threads = threads > 0 ? threads : omp_get_max_threads(),
        .alloc = cpu_alloc,
        .free = cpu_free,
        .upload = cpu_copy,
        .download = cpu_copy,
        .copy = cpu_copy,
        .zero = cpu_zero,
        .sync = cpu_sync,
        .status = cpu_status,
        .convert = cpu_convert,
        .gemm_ct = cpu_gemm_ct,
        .host_ptr = cpu_host_ptr,
        .event_new = cpu_event_new,
        .event_free = cpu_event_free,
        .record = cpu_record,
        .query = cpu_query,
        .wait = cpu_wait,
        .host_alloc = cpu_host_alloc,
        .host_free = cpu_host_free,
        .native_stream = cpu_native_stream,
        .pack = cpu_pack,
        .unpack_scale = cpu_unpack_scale,
        .gemm = cpu_gemm,
        .axpy = cpu_axpy,
        .scale = cpu_scale,
        .add_bias = cpu_add_bias,
        .bias_grad = cpu_bias_grad,
        .sumsq = cpu_sumsq,
        .gemm_temp = cpu_gemm_temp,
        .temperature_bwd = cpu_temperature_bwd,
        .layernorm_fwd = upm_cpu_layernorm_fwd,
        .layernorm_bwd = upm_cpu_layernorm_bwd,
        .gelu_fwd = upm_cpu_gelu_fwd,
        .gelu_bwd = upm_cpu_gelu_bwd,
        .residual_fwd = upm_cpu_residual_fwd,
        .residual_bwd = upm_cpu_residual_bwd,
        .attention_fwd = upm_cpu_attention_fwd,
        .attention_bwd = upm_cpu_attention_bwd,
        .attention_kv_fwd = upm_cpu_attention_kv_fwd,
        .gather_add = upm_cpu_gather_add,
        .scatter_add = upm_cpu_scatter_add,
        .gather_rows = upm_cpu_gather_rows,
        .scatter_rows_add = upm_cpu_scatter_add,
        .patchify = upm_cpu_patchify,
        .topk_softmax_fwd = upm_cpu_topk_softmax_fwd,
        .topk_softmax_bwd = upm_cpu_topk_softmax_bwd,
        .mark_nonzero_cols = cpu_mark_nonzero_cols,
        .moe_dispatch = upm_cpu_moe_dispatch,
        .moe_balance = upm_cpu_moe_balance,
        .scale_rows = upm_cpu_scale_rows,
        .expert_mix = upm_cpu_expert_mix,
        .row_dot_scatter = upm_cpu_row_dot_scatter,
        .l2norm_fwd = upm_cpu_l2norm_fwd,
        .l2norm_bwd = upm_cpu_l2norm_bwd,
        .xent_fwd_bwd = upm_cpu_xent_fwd_bwd,
        .clip_scale = cpu_clip_scale,
        .adamw = cpu_adamw,
        .destroy = cpu_destroy,
    };
    *out = be;
    return 0;
}
