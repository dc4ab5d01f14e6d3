// The CUDA backend's ops for data-dependent routing (backend.h): capacity dispatch (one thread per expert
// walking the tokens in priority order, as the definition reads: O(k n E) per thread, a first version to
// be measured on a GPU), the Switch balance loss (one block, fixed-order sums), row scaling and the row
// dot products of a dispatched MoE linear (one block per row).
#include "cuda_internal.cuh"
#include "route_choice.h"

__global__ void dispatch_k(int32_t *idx, float *w, float *dropped, const float *G, const int32_t *order, int n, int E,
                           int k, int C)
{
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= E)
        return;
    int count = 0;
    float drop = 0.0f;
    for (int s = 0; s < C; s++)
        idx[(size_t)e * C + s] = -1, w[(size_t)e * C + s] = 0.0f;
    for (int j = 0; j < k; j++)
        for (int t = 0; t < n; t++) {
            const float *g = G + (size_t)order[t] * E;
            if (upm_route_choice(g, E, j) != e)
                continue;
            if (count < C) {
                idx[(size_t)e * C + count] = order[t], w[(size_t)e * C + count] = g[e];
                count++;
            } else
                drop += 1.0f;
        }
    dropped[e] = drop;
}

// stats[0] += the experts' dropped counts, summed in expert order (the CPU's total, exactly: small integers)
__global__ void dispatch_sum_k(float *stats, const float *dropped, int E)
{
    double s = 0.0;
    for (int e = 0; e < E; e++)
        s += dropped[e];
    stats[0] += (float)s;
}

static void cu_moe_dispatch(upm_backend *be, int32_t *idx, float *w, float *stats, const float *G, const int32_t *order,
                            int n, int E, int k, int C)
{
    cuda_ctx *c = CTX(be);
    if (E <= 0 || C < 0)
        return;
    float *dropped = (float *)upm_cuda_ws(c, sizeof(float) * (size_t)E, "moe_dispatch");
    if (!dropped)
        return;
    dispatch_k<<<(E + 63) / 64, 64, 0, c->stream>>>(idx, w, dropped, G, order, n, E, k, C);
    dispatch_sum_k<<<1, 1, 0, c->stream>>>(stats, dropped, E);
    LAUNCHED(c, "moe_dispatch");
}

// One block: f_e and P_e by fixed-order sums (each thread owns experts e = tid, tid + T, ...), then the loss
// and, with dlogits, every row's gradient through its softmax.
__global__ void balance_k(float *stats, float *dlogits, const float *probs, const float *G, const int32_t *order, int n,
                          int E, float weight, double *f)
{
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        double cnt = 0.0, P = 0.0;
        for (int t = 0; t < n; t++) {
            cnt += upm_route_choice(G + (size_t)order[t] * E, E, 0) == e ? 1.0 / n : 0.0;
            P += probs[(size_t)order[t] * E + e];
        }
        f[e] = cnt, f[E + e] = cnt * (P / n);
    }
    __syncthreads();
    if (stats && threadIdx.x == 0) {
        double loss = 0.0;
        for (int e = 0; e < E; e++)
            loss += f[E + e];
        stats[0] += (float)(E * loss);
    }
    if (!dlogits)
        return;
    for (int t = threadIdx.x; t < n; t += blockDim.x) {
        const float *p = probs + (size_t)order[t] * E;
        float *dz = dlogits + (size_t)order[t] * E;
        double s = 0.0;
        for (int e = 0; e < E; e++)
            s += p[e] * (E * f[e] / n);
        for (int j = 0; j < E; j++)
            dz[j] += (float)(weight * p[j] * (E * f[j] / n - s));
    }
}

static void cu_moe_balance(upm_backend *be, float *stats, float *dlogits, const float *probs, const float *G,
                           const int32_t *order, int n, int E, float weight)
{
    cuda_ctx *c = CTX(be);
    if (n <= 0 || E <= 0)
        return;
    double *f = (double *)upm_cuda_ws(c, sizeof(double) * 2 * (size_t)E, "moe_balance");
    if (!f)
        return;
    balance_k<<<1, UPM_CUDA_THREADS, 0, c->stream>>>(stats, dlogits, probs, G, order, n, E, weight, f);
    LAUNCHED(c, "moe_balance");
}

__global__ void scale_rows_k(float *Y, const float *w, size_t n, int cols)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        Y[i] *= w[i / cols];
}

static void cu_scale_rows(upm_backend *be, float *Y, const float *w, int rows, int cols)
{
    cuda_ctx *c = CTX(be);
    if (rows <= 0 || cols <= 0)
        return;
    scale_rows_k<<<blocks_for((size_t)rows * cols), UPM_CUDA_THREADS, 0, c->stream>>>(Y, w, (size_t)rows * cols, cols);
    LAUNCHED(c, "scale_rows");
}

// One thread per (row, column); the experts in order, unused ones skipped: a row's bits do not depend on P.
__global__ void expert_mix_k(float *Y, const float *G, const float *W, int P, int E, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (size_t)P * n; i += (size_t)gridDim.x * blockDim.x) {
        size_t q = i / n, j = i % n;
        double y = 0.0; // as the CPU's: exact products, one rounding at the end
        for (int e = 0; e < E; e++) {
            float g = G[q * E + e];
            if (g != 0.0f)
                y += (double)g * W[(size_t)e * n + j];
        }
        Y[i] = (float)y;
    }
}

static void cu_expert_mix(upm_backend *be, float *Y, const float *G, const float *W, int P, int E, size_t n)
{
    cuda_ctx *c = CTX(be);
    if (P <= 0 || n == 0)
        return;
    expert_mix_k<<<blocks_for((size_t)P * n), UPM_CUDA_THREADS, 0, c->stream>>>(Y, G, W, P, E, n);
    LAUNCHED(c, "expert_mix");
}

__global__ void row_dot_scatter_k(float *dG, const float *A, const float *B, const int32_t *idx, int cols, int E, int e)
{
    __shared__ double sh[UPM_CUDA_THREADS];
    int r = blockIdx.x;
    if (idx[r] < 0)
        return; // the whole block leaves: no barrier is skipped by part of it
    size_t o = (size_t)r * cols;
    double s = 0.0;
    for (int c = threadIdx.x; c < cols; c += UPM_CUDA_THREADS)
        s += (double)A[o + c] * B[o + c];
    s = block_sum<double, UPM_CUDA_THREADS>(s, sh);
    if (threadIdx.x == 0)
        dG[(size_t)idx[r] * E + e] += (float)s;
}

static void cu_row_dot_scatter(upm_backend *be, float *dG, const float *A, const float *B, const int32_t *idx, int rows,
                               int cols, int E, int e)
{
    cuda_ctx *c = CTX(be);
    if (rows <= 0)
        return;
    row_dot_scatter_k<<<rows, UPM_CUDA_THREADS, 0, c->stream>>>(dG, A, B, idx, cols, E, e);
    LAUNCHED(c, "row_dot_scatter");
}

void upm_cuda_route_ops(upm_backend *be)
{
    be->moe_dispatch = cu_moe_dispatch;
    be->moe_balance = cu_moe_balance;
    be->scale_rows = cu_scale_rows;
    be->expert_mix = cu_expert_mix;
    be->row_dot_scatter = cu_row_dot_scatter;
}
