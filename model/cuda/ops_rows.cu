// The CUDA backend's per-token ops (backend.h): LayerNorm, GELU, the LayerScale/drop-path residual,
// embedding and row gathers/scatters, patch extraction. One block per row where a row is reduced;
// column sums over rows (dg, db, dls) in two fixed passes (cuda_plan.h); scatters with repeated indices
// add rows in row order, one thread per column, so repeated indices never race and the bits are fixed.
#include "cuda_internal.cuh"

#define GRID_STRIDE(i, n) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

// ---- LayerNorm ----

__global__ void ln_fwd_k(float *y, float *mean, float *rstd, const float *x, const float *g, const float *b, int cols,
                         float eps)
{
    __shared__ double sh[UPM_CUDA_THREADS];
    const float *xr = x + (size_t)blockIdx.x * cols;
    double s = 0.0;
    for (int c = threadIdx.x; c < cols; c += UPM_CUDA_THREADS)
        s += xr[c];
    double mu = block_sum<double, UPM_CUDA_THREADS>(s, sh) / cols;
    double v = 0.0;
    for (int c = threadIdx.x; c < cols; c += UPM_CUDA_THREADS) {
        double d = (double)xr[c] - mu;
        v += d * d;
    }
    double var = block_sum<double, UPM_CUDA_THREADS>(v, sh) / cols;
    float m = (float)mu, rs = (float)(1.0 / sqrt(var + (double)eps));
    if (threadIdx.x == 0)
        mean[blockIdx.x] = m, rstd[blockIdx.x] = rs;
    float *yr = y + (size_t)blockIdx.x * cols;
    for (int c = threadIdx.x; c < cols; c += UPM_CUDA_THREADS)
        yr[c] = (xr[c] - m) * rs * g[c] + b[c];
}

static void cu_layernorm_fwd(upm_backend *be, float *y, float *mean, float *rstd, const float *x, const float *g,
                             const float *b, int rows, int cols, float eps)
{
    cuda_ctx *c = CTX(be);
    if (rows <= 0 || cols <= 0)
        return;
    ln_fwd_k<<<rows, UPM_CUDA_THREADS, 0, c->stream>>>(y, mean, rstd, x, g, b, cols, eps);
    LAUNCHED(c, "layernorm_fwd");
}

// dx = rstd (g dy - mean(g dy) - xhat mean(g dy xhat)), one block per row.
__global__ void ln_dx_k(float *dx, const float *dy, const float *x, const float *mean, const float *rstd, const float *g,
                        int cols)
{
    __shared__ double sh[UPM_CUDA_THREADS];
    size_t o = (size_t)blockIdx.x * cols;
    float mu = mean[blockIdx.x], rs = rstd[blockIdx.x];
    double sa = 0.0, sb = 0.0;
    for (int c = threadIdx.x; c < cols; c += UPM_CUDA_THREADS) {
        float xh = (x[o + c] - mu) * rs, gd = dy[o + c] * g[c];
        sa += gd;
        sb += (double)gd * xh;
    }
    float a = (float)(block_sum<double, UPM_CUDA_THREADS>(sa, sh) / cols);
    float bb = (float)(block_sum<double, UPM_CUDA_THREADS>(sb, sh) / cols);
    for (int c = threadIdx.x; c < cols; c += UPM_CUDA_THREADS) {
        float xh = (x[o + c] - mu) * rs;
        dx[o + c] += rs * (dy[o + c] * g[c] - a - xh * bb);
    }
}

// Partial column sums of dy * xhat (dg) and dy (db) over each run of rows.
__global__ void ln_dgdb_partial_k(double *pg, double *pb, const float *dy, const float *x, const float *mean,
                                  const float *rstd, int rows, int cols, int runs)
{
    int col = blockIdx.x * blockDim.x + threadIdx.x, run = blockIdx.y;
    if (col >= cols)
        return;
    int len = (rows + runs - 1) / runs, r0 = run * len, r1 = r0 + len < rows ? r0 + len : rows;
    double sg = 0.0, sb = 0.0;
    for (int r = r0; r < r1; r++) {
        size_t o = (size_t)r * cols + col;
        sg += (double)dy[o] * (double)((x[o] - mean[r]) * rstd[r]);
        sb += (double)dy[o];
    }
    pg[(size_t)run * cols + col] = sg;
    pb[(size_t)run * cols + col] = sb;
}

__global__ void col_finish2_k(float *out, const double *part, int cols, int runs)
{
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= cols || !out)
        return;
    double s = 0.0;
    for (int k = 0; k < runs; k++)
        s += part[(size_t)k * cols + col];
    out[col] = (float)((double)out[col] + s);
}

static void cu_layernorm_bwd(upm_backend *be, float *dx, float *dg, float *db, const float *dy, const float *x,
                             const float *mean, const float *rstd, const float *g, int rows, int cols)
{
    cuda_ctx *c = CTX(be);
    if (rows <= 0 || cols <= 0)
        return;
    if (dx)
        ln_dx_k<<<rows, UPM_CUDA_THREADS, 0, c->stream>>>(dx, dy, x, mean, rstd, g, cols);
    if (dg || db) {
        int runs = upm_cuda_col_runs(rows);
        double *pg = (double *)upm_cuda_ws(c, 2 * sizeof(double) * (size_t)runs * cols, "layernorm_bwd");
        if (!pg)
            return;
        double *pb = pg + (size_t)runs * cols;
        dim3 grid((cols + 127) / 128, runs);
        ln_dgdb_partial_k<<<grid, 128, 0, c->stream>>>(pg, pb, dy, x, mean, rstd, rows, cols, runs);
        col_finish2_k<<<(cols + 127) / 128, 128, 0, c->stream>>>(dg, pg, cols, runs);
        col_finish2_k<<<(cols + 127) / 128, 128, 0, c->stream>>>(db, pb, cols, runs);
    }
    LAUNCHED(c, "layernorm_bwd");
}

// ---- GELU (erf form): y = x Phi(x); dy/dx = Phi(x) + x phi(x) ----

__global__ void gelu_fwd_k(float *y, const float *x, size_t n)
{
    GRID_STRIDE(i, n) { y[i] = x[i] * normcdff(x[i]); }
}

__global__ void gelu_bwd_k(float *dx, const float *dy, const float *x, size_t n)
{
    GRID_STRIDE(i, n)
    {
        float v = x[i], pdf = expf(-0.5f * v * v) * 0.39894228040143268f;
        dx[i] += dy[i] * (normcdff(v) + v * pdf);
    }
}

static void cu_gelu_fwd(upm_backend *be, float *y, const float *x, size_t n)
{
    cuda_ctx *c = CTX(be);
    if (!n)
        return;
    gelu_fwd_k<<<blocks_for(n), UPM_CUDA_THREADS, 0, c->stream>>>(y, x, n);
    LAUNCHED(c, "gelu_fwd");
}

static void cu_gelu_bwd(upm_backend *be, float *dx, const float *dy, const float *x, size_t n)
{
    cuda_ctx *c = CTX(be);
    if (!n)
        return;
    gelu_bwd_k<<<blocks_for(n), UPM_CUDA_THREADS, 0, c->stream>>>(dx, dy, x, n);
    LAUNCHED(c, "gelu_bwd");
}

// ---- LayerScale + drop path + residual ----

__global__ void residual_fwd_k(float *y, const float *x, const float *f, const float *ls, const float *keep,
                               const int32_t *seq_of, size_t rows, int cols)
{
    GRID_STRIDE(i, rows * (size_t)cols)
    {
        size_t r = i / cols;
        int c = (int)(i % cols);
        float k = keep ? keep[seq_of[r]] : 1.0f;
        y[i] = x[i] + ls[c] * f[i] * k;
    }
}

static void cu_residual_fwd(upm_backend *be, float *y, const float *x, const float *f, const float *ls,
                            const float *keep, const int32_t *seq_of, int rows, int cols)
{
    cuda_ctx *c = CTX(be);
    if (rows <= 0 || cols <= 0)
        return;
    residual_fwd_k<<<blocks_for((size_t)rows * cols), UPM_CUDA_THREADS, 0, c->stream>>>(y, x, f, ls, keep, seq_of,
                                                                                        (size_t)rows, cols);
    LAUNCHED(c, "residual_fwd");
}

__global__ void residual_bwd_k(float *dx, float *df, const float *dy, const float *ls, const float *keep,
                               const int32_t *seq_of, size_t rows, int cols)
{
    GRID_STRIDE(i, rows * (size_t)cols)
    {
        size_t r = i / cols;
        int c = (int)(i % cols);
        if (dx)
            dx[i] += dy[i];
        if (df)
            df[i] += (keep ? keep[seq_of[r]] : 1.0f) * ls[c] * dy[i];
    }
}

__global__ void residual_dls_partial_k(double *part, const float *dy, const float *f, const float *keep,
                                       const int32_t *seq_of, int rows, int cols, int runs)
{
    int col = blockIdx.x * blockDim.x + threadIdx.x, run = blockIdx.y;
    if (col >= cols)
        return;
    int len = (rows + runs - 1) / runs, r0 = run * len, r1 = r0 + len < rows ? r0 + len : rows;
    double s = 0.0;
    for (int r = r0; r < r1; r++) {
        float k = keep ? keep[seq_of[r]] : 1.0f;
        if (k != 0.0f)
            s += (double)k * (double)f[(size_t)r * cols + col] * (double)dy[(size_t)r * cols + col];
    }
    part[(size_t)run * cols + col] = s;
}

static void cu_residual_bwd(upm_backend *be, float *dx, float *df, float *dls, const float *dy, const float *f,
                            const float *ls, const float *keep, const int32_t *seq_of, int rows, int cols)
{
    cuda_ctx *c = CTX(be);
    if (rows <= 0 || cols <= 0)
        return;
    if (dx || df)
        residual_bwd_k<<<blocks_for((size_t)rows * cols), UPM_CUDA_THREADS, 0, c->stream>>>(dx, df, dy, ls, keep,
                                                                                            seq_of, (size_t)rows, cols);
    if (dls) {
        int runs = upm_cuda_col_runs(rows);
        double *part = (double *)upm_cuda_ws(c, sizeof(double) * (size_t)runs * cols, "residual_bwd");
        if (!part)
            return;
        dim3 grid((cols + 127) / 128, runs);
        residual_dls_partial_k<<<grid, 128, 0, c->stream>>>(part, dy, f, keep, seq_of, rows, cols, runs);
        col_finish2_k<<<(cols + 127) / 128, 128, 0, c->stream>>>(dls, part, cols, runs);
    }
    LAUNCHED(c, "residual_bwd");
}

// ---- embeddings and row movement (negative indices: skipped / zero rows) ----

__global__ void gather_add_k(float *Y, const float *T, const int32_t *idx, size_t n, int cols)
{
    GRID_STRIDE(i, n * (size_t)cols)
    {
        int32_t t = idx[i / cols];
        if (t >= 0)
            Y[i] += T[(size_t)t * cols + i % cols];
    }
}

static void cu_gather_add(upm_backend *be, float *Y, const float *T, const int32_t *idx, int n, int cols)
{
    cuda_ctx *c = CTX(be);
    if (n <= 0 || cols <= 0)
        return;
    gather_add_k<<<blocks_for((size_t)n * cols), UPM_CUDA_THREADS, 0, c->stream>>>(Y, T, idx, (size_t)n, cols);
    LAUNCHED(c, "gather_add");
}

__global__ void gather_rows_k(float *Y, const float *X, const int32_t *idx, size_t n, int cols)
{
    GRID_STRIDE(i, n * (size_t)cols)
    {
        int32_t t = idx[i / cols];
        Y[i] = t >= 0 ? X[(size_t)t * cols + i % cols] : 0.0f;
    }
}

static void cu_gather_rows(upm_backend *be, float *Y, const float *X, const int32_t *idx, int n, int cols)
{
    cuda_ctx *c = CTX(be);
    if (n <= 0 || cols <= 0)
        return;
    gather_rows_k<<<blocks_for((size_t)n * cols), UPM_CUDA_THREADS, 0, c->stream>>>(Y, X, idx, (size_t)n, cols);
    LAUNCHED(c, "gather_rows");
}

// dT[idx[r], c] += dY[r, c]: each thread owns a column and walks the rows in order.
__global__ void scatter_add_k(float *dT, const float *dY, const int32_t *idx, int n, int cols)
{
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= cols)
        return;
    for (int r = 0; r < n; r++) {
        int32_t t = idx[r];
        if (t >= 0)
            dT[(size_t)t * cols + col] += dY[(size_t)r * cols + col];
    }
}

static void cu_scatter_add(upm_backend *be, float *dT, const float *dY, const int32_t *idx, int n, int cols)
{
    cuda_ctx *c = CTX(be);
    if (n <= 0 || cols <= 0)
        return;
    scatter_add_k<<<(cols + 63) / 64, 64, 0, c->stream>>>(dT, dY, idx, n, cols);
    LAUNCHED(c, "scatter_add");
}

// ---- patches: pixels [n][T][3][H][W] -> rows (n, t, py, px), columns (channel, y, x) ----

__global__ void patchify_k(float *P, const float *px, size_t total, int T, int H, int W)
{
    int gh = H / 16, gw = W / 16;
    GRID_STRIDE(i, total)
    {
        int col = (int)(i % 768);
        size_t row = i / 768;
        int ch = col / 256, yy = (col / 16) % 16, xx = col % 16;
        int qx = (int)(row % gw), qy = (int)((row / gw) % gh);
        size_t frame = row / ((size_t)gw * gh); // n * T + t
        P[i] = px[((frame * 3 + ch) * H + (size_t)qy * 16 + yy) * W + (size_t)qx * 16 + xx];
    }
}

static void cu_patchify(upm_backend *be, float *P, const float *pixels, int n, int T, int H, int W)
{
    cuda_ctx *c = CTX(be);
    size_t total = (size_t)n * T * (H / 16) * (W / 16) * 768;
    if (!total)
        return;
    patchify_k<<<blocks_for(total), UPM_CUDA_THREADS, 0, c->stream>>>(P, pixels, total, T, H, W);
    LAUNCHED(c, "patchify");
}

void upm_cuda_rows_ops(upm_backend *be)
{
    be->layernorm_fwd = cu_layernorm_fwd;
    be->layernorm_bwd = cu_layernorm_bwd;
    be->gelu_fwd = cu_gelu_fwd;
    be->gelu_bwd = cu_gelu_bwd;
    be->residual_fwd = cu_residual_fwd;
    be->residual_bwd = cu_residual_bwd;
    be->gather_add = cu_gather_add;
    be->scatter_add = cu_scatter_add;
    be->gather_rows = cu_gather_rows;
    be->scatter_rows_add = cu_scatter_add;
    be->patchify = cu_patchify;
}
