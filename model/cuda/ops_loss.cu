// The CUDA backend's gates, losses and optimizer (backend.h): top-k of a softmax (one thread per row), the
// experts' marks, row L2 normalisation, label-smoothed cross-entropy (one
// block per row; the mean over rows in a fixed order), the clipping factor and AdamW (the CPU backend's
// float arithmetic, element for element).
#include "cuda_internal.cuh"

// ---- top-k softmax gate (ties: the lower index; renorm: a softmax over the kept logits) ----

__global__ void topk_fwd_k(float *G, float *probs, const float *z, const float *noise, int rows, int E, int k, int renorm)
{
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows)
        return;
    size_t o = (size_t)r * E;
    float mx = -INFINITY;
    for (int j = 0; j < E; j++) {
        float v = noise ? z[o + j] + noise[o + j] : z[o + j];
        probs[o + j] = v;
        mx = v > mx ? v : mx;
    }
    double sum = 0.0;
    for (int j = 0; j < E; j++) {
        probs[o + j] = expf(probs[o + j] - mx);
        sum += probs[o + j];
    }
    float inv = (float)(1.0 / sum);
    for (int j = 0; j < E; j++)
        probs[o + j] *= inv;
    double kept = 0.0;
    for (int j = 0; j < E; j++) {
        int beaten = 0;
        for (int i = 0; i < E; i++)
            beaten += probs[o + i] > probs[o + j] || (probs[o + i] == probs[o + j] && i < j);
        G[o + j] = beaten < k ? probs[o + j] : 0.0f;
        kept += G[o + j];
    }
    if (renorm)
        for (int j = 0; j < E; j++)
            G[o + j] = G[o + j] != 0.0f ? (float)(G[o + j] / kept) : 0.0f;
}

static void cu_topk_fwd(upm_backend *be, float *G, float *probs, const float *logits, const float *noise, int rows, int E,
                        int k, int renorm)
{
    cuda_ctx *c = CTX(be);
    if (rows <= 0 || E <= 0)
        return;
    topk_fwd_k<<<(rows + 127) / 128, 128, 0, c->stream>>>(G, probs, logits, noise, rows, E, k, renorm);
    LAUNCHED(c, "topk_softmax_fwd");
}

// dz_j += G_j dG_j - (renorm ? G_j : p_j) sum_i G_i dG_i (the CPU backend's derivation)
__global__ void topk_bwd_k(float *dz, const float *dG, const float *G, const float *probs, int rows, int E, int renorm)
{
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows)
        return;
    size_t o = (size_t)r * E;
    double s = 0.0;
    for (int j = 0; j < E; j++)
        s += (double)G[o + j] * dG[o + j];
    float sf = (float)s;
    for (int j = 0; j < E; j++)
        dz[o + j] += G[o + j] * dG[o + j] - (renorm ? G[o + j] : probs[o + j]) * sf;
}

static void cu_topk_bwd(upm_backend *be, float *dlogits, const float *dG, const float *G, const float *probs, int rows,
                        int E, int renorm)
{
    cuda_ctx *c = CTX(be);
    if (rows <= 0 || E <= 0)
        return;
    topk_bwd_k<<<(rows + 127) / 128, 128, 0, c->stream>>>(dlogits, dG, G, probs, rows, E, renorm);
    LAUNCHED(c, "topk_softmax_bwd");
}

// Every thread that sees a non-zero entry writes the same 1: deterministic without ordering.
__global__ void mark_k(uint8_t *mask, const float *G, size_t n, int cols)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        if (G[i] != 0.0f)
            mask[i % cols] = 1;
}

static void cu_mark(upm_backend *be, uint8_t *mask, const float *G, int rows, int cols)
{
    cuda_ctx *c = CTX(be);
    if (rows <= 0 || cols <= 0)
        return;
    mark_k<<<blocks_for((size_t)rows * cols), UPM_CUDA_THREADS, 0, c->stream>>>(mask, G, (size_t)rows * cols, cols);
    LAUNCHED(c, "mark_nonzero_cols");
}

// ---- L2 normalisation (one block per row) ----

#define L2_MIN 1e-12f

__global__ void l2_fwd_k(float *y, float *norm, const float *x, int cols)
{
    __shared__ double sh[UPM_CUDA_THREADS];
    size_t o = (size_t)blockIdx.x * cols;
    double s = 0.0;
    for (int c = threadIdx.x; c < cols; c += UPM_CUDA_THREADS)
        s += (double)x[o + c] * x[o + c];
    float n = (float)sqrt(block_sum<double, UPM_CUDA_THREADS>(s, sh));
    if (threadIdx.x == 0)
        norm[blockIdx.x] = n;
    float inv = 1.0f / (n > L2_MIN ? n : L2_MIN);
    for (int c = threadIdx.x; c < cols; c += UPM_CUDA_THREADS)
        y[o + c] = x[o + c] * inv;
}

__global__ void l2_bwd_k(float *dx, const float *dy, const float *y, const float *norm, int cols)
{
    __shared__ double sh[UPM_CUDA_THREADS];
    size_t o = (size_t)blockIdx.x * cols;
    float n = norm[blockIdx.x];
    double s = 0.0;
    for (int c = threadIdx.x; c < cols; c += UPM_CUDA_THREADS)
        s += (double)y[o + c] * dy[o + c];
    s = block_sum<double, UPM_CUDA_THREADS>(s, sh);
    float yd = n > L2_MIN ? (float)s : 0.0f, inv = 1.0f / (n > L2_MIN ? n : L2_MIN);
    for (int c = threadIdx.x; c < cols; c += UPM_CUDA_THREADS)
        dx[o + c] += (dy[o + c] - y[o + c] * yd) * inv;
}

static void cu_l2_fwd(upm_backend *be, float *y, float *norm, const float *x, int rows, int cols)
{
    cuda_ctx *c = CTX(be);
    if (rows <= 0 || cols <= 0)
        return;
    l2_fwd_k<<<rows, UPM_CUDA_THREADS, 0, c->stream>>>(y, norm, x, cols);
    LAUNCHED(c, "l2norm_fwd");
}

static void cu_l2_bwd(upm_backend *be, float *dx, const float *dy, const float *y, const float *norm, int rows, int cols)
{
    cuda_ctx *c = CTX(be);
    if (rows <= 0 || cols <= 0)
        return;
    l2_bwd_k<<<rows, UPM_CUDA_THREADS, 0, c->stream>>>(dx, dy, y, norm, cols);
    LAUNCHED(c, "l2norm_bwd");
}

// ---- cross-entropy with label smoothing ----

__global__ void xent_valid_k(float *valid, const int32_t *t, int rows, int C)
{
    __shared__ int sh[UPM_CUDA_THREADS];
    int n = 0;
    for (int r = threadIdx.x; r < rows; r += UPM_CUDA_THREADS)
        n += t[r] >= 0 && t[r] < C;
    n = block_sum<int, UPM_CUDA_THREADS>(n, sh);
    if (threadIdx.x == 0)
        valid[0] = (float)n;
}

// One block per row: loss_r and correct_r into rowout[2r..], dlogits = w (softmax - smoothed target).
__global__ void xent_row_k(float *rowout, float *d, const float *z, const int32_t *tgt, const float *valid, int C,
                           float eps, float scale)
{
    __shared__ double shd[UPM_CUDA_THREADS];
    __shared__ float shf[UPM_CUDA_THREADS];
    __shared__ int shi[UPM_CUDA_THREADS];
    size_t o = (size_t)blockIdx.x * C;
    int t = tgt[blockIdx.x];
    if (t < 0 || t >= C) {
        for (int c = threadIdx.x; c < C; c += UPM_CUDA_THREADS)
            d[o + c] = 0.0f;
        if (threadIdx.x == 0)
            rowout[2 * (size_t)blockIdx.x] = 0.0f, rowout[2 * (size_t)blockIdx.x + 1] = 0.0f;
        return;
    }
    // the maximum and its first index
    // each thread's first column seeds its maximum (as the CPU's z[0] does: a row of -inf or NaN logits still
    // has an argmax, the lowest index)
    float mx = threadIdx.x < (unsigned)C ? z[o + threadIdx.x] : -INFINITY;
    int arg = threadIdx.x < (unsigned)C ? (int)threadIdx.x : C;
    for (int c = threadIdx.x + UPM_CUDA_THREADS; c < C; c += UPM_CUDA_THREADS)
        if (z[o + c] > mx)
            mx = z[o + c], arg = c;
    shf[threadIdx.x] = mx, shi[threadIdx.x] = arg;
    __syncthreads();
    for (int s = UPM_CUDA_THREADS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) {
            float a = shf[threadIdx.x], b = shf[threadIdx.x + s];
            int ia = shi[threadIdx.x], ib = shi[threadIdx.x + s];
            if (b > a || (b == a && ib < ia))
                shf[threadIdx.x] = b, shi[threadIdx.x] = ib;
        }
        __syncthreads();
    }
    mx = shf[0], arg = shi[0];
    __syncthreads();
    double se = 0.0, sz = 0.0;
    for (int c = threadIdx.x; c < C; c += UPM_CUDA_THREADS) {
        float e = expf(z[o + c] - mx);
        d[o + c] = e;
        se += e;
        sz += z[o + c];
    }
    se = block_sum<double, UPM_CUDA_THREADS>(se, shd);
    sz = block_sum<double, UPM_CUDA_THREADS>(sz, shd);
    double nv = valid[0], w = nv > 0 ? (double)scale / nv : 0.0;
    double lse = mx + log(se);
    float wp = (float)(w / se), wu = (float)(w * eps / C);
    for (int c = threadIdx.x; c < C; c += UPM_CUDA_THREADS)
        d[o + c] = d[o + c] * wp - wu - (c == t ? (float)(w * (1.0 - eps)) : 0.0f);
    if (threadIdx.x == 0) {
        rowout[2 * (size_t)blockIdx.x] = (float)(lse - (1.0 - eps) * z[o + t] - eps / C * sz);
        rowout[2 * (size_t)blockIdx.x + 1] = arg == t ? 1.0f : 0.0f;
    }
}

__global__ void xent_finish_k(float *out, const float *rowout, const float *valid, int rows)
{
    __shared__ double sh[UPM_CUDA_THREADS];
    double l = 0.0, h = 0.0;
    for (int r = threadIdx.x; r < rows; r += UPM_CUDA_THREADS)
        l += rowout[2 * (size_t)r], h += rowout[2 * (size_t)r + 1];
    l = block_sum<double, UPM_CUDA_THREADS>(l, sh);
    h = block_sum<double, UPM_CUDA_THREADS>(h, sh);
    if (threadIdx.x == 0) {
        out[0] = valid[0] > 0 ? (float)(l / valid[0]) : 0.0f;
        out[1] = (float)h;
    }
}

static void cu_xent(upm_backend *be, float *out, float *dlogits, const float *logits, const int32_t *target, int rows,
                    int C, float eps, float scale)
{
    cuda_ctx *c = CTX(be);
    if (rows <= 0 || C <= 0) {
        upm_cuda_ok(c, "xent_fwd_bwd", cudaMemsetAsync(out, 0, 2 * sizeof(float), c->stream));
        return;
    }
    float *rowout = (float *)upm_cuda_ws(c, 2 * sizeof(float) * (size_t)rows, "xent_fwd_bwd");
    if (!rowout)
        return;
    xent_valid_k<<<1, UPM_CUDA_THREADS, 0, c->stream>>>(c->scal + 2, target, rows, C);
    xent_row_k<<<rows, UPM_CUDA_THREADS, 0, c->stream>>>(rowout, dlogits, logits, target, c->scal + 2, C, eps, scale);
    xent_finish_k<<<1, UPM_CUDA_THREADS, 0, c->stream>>>(out, rowout, c->scal + 2, rows);
    LAUNCHED(c, "xent_fwd_bwd");
}

// ---- optimizer ----

__global__ void clip_k(float *gscale, const float *sumsq, float clip)
{
    float norm = sqrtf(sumsq[0]);
    gscale[0] = clip > 0 && norm > clip ? clip / (norm + 1e-6f) : 1.0f;
}

static void cu_clip_scale(upm_backend *be, float *gscale, const float *sumsq, float clip)
{
    cuda_ctx *c = CTX(be);
    clip_k<<<1, 1, 0, c->stream>>>(gscale, sumsq, clip);
    LAUNCHED(c, "clip_scale");
}

__global__ void adamw_k(float *p, float *m, float *v, const float *g, const uint8_t *wd, size_t n, float b1, float b2,
                        float eps, float step, float sbc2, float decay, const float *gs)
{
    float gscale = gs[0];
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        // the CPU backend's float operations one by one (no fused multiply-adds), so both give the same bits
        float gi = __fmul_rn(g[i], gscale);
        float mi = __fadd_rn(__fmul_rn(b1, m[i]), __fmul_rn(1.0f - b1, gi));
        float vi = __fadd_rn(__fmul_rn(b2, v[i]), __fmul_rn(__fmul_rn(1.0f - b2, gi), gi));
        m[i] = mi, v[i] = vi;
        float d = (!wd || wd[i]) ? decay : 1.0f;
        p[i] = __fsub_rn(__fmul_rn(p[i], d), __fmul_rn(step, __fdiv_rn(mi, __fadd_rn(__fdiv_rn(sqrtf(vi), sbc2), eps))));
    }
}

static void cu_adamw(upm_backend *be, float *p, float *m, float *v, const float *g, const uint8_t *wd_mask, size_t n,
                     float lr, float b1, float b2, float eps, float weight_decay, const float *gs, int t)
{
    cuda_ctx *c = CTX(be);
    if (!n)
        return;
    if (t < 1)
        t = 1;
    double bc1 = 1.0 - pow((double)b1, (double)t), bc2 = 1.0 - pow((double)b2, (double)t);
    adamw_k<<<blocks_for(n), UPM_CUDA_THREADS, 0, c->stream>>>(p, m, v, g, wd_mask, n, b1, b2, eps,
                                                               (float)((double)lr / bc1), (float)sqrt(bc2),
                                                               1.0f - lr * weight_decay, gs);
    LAUNCHED(c, "adamw");
}

void upm_cuda_loss_ops(upm_backend *be)
{
    be->topk_softmax_fwd = cu_topk_fwd;
    be->topk_softmax_bwd = cu_topk_bwd;
    be->mark_nonzero_cols = cu_mark;
    be->l2norm_fwd = cu_l2_fwd;
    be->l2norm_bwd = cu_l2_bwd;
    be->xent_fwd_bwd = cu_xent;
    be->clip_scale = cu_clip_scale;
    be->adamw = cu_adamw;
}
