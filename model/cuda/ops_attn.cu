// The CUDA backend's attention (backend.h): masked multi-head attention over token rows scattered through
// row_of, by chunks of sequences that fit the workspace (cuda_plan.h): q, k, v gathered into [seq, head]
// blocks, scores and context by strided-batched SGEMMs, a masked softmax kernel in between; the backward
// likewise. The [nseq, heads, S, S] probabilities are the op table's saved state, so they are written
// whole; a flash-style kernel that never stores them needs a different contract (docs/model.md).
// Generation's attention over the key/value cache is one block per (token, head).
#include "cuda_internal.cuh"

enum { ATTN_WS_CAP = 1 << 30 }; // workspace bytes before attention is cut into chunks of sequences

// Q, K, V (and optionally a D-wide tensor G, e.g. dout) of sequences [s0, s0 + cs) gathered into
// [cs * heads][S][hd] blocks; missing rows (row_of < 0) give zeros.
__global__ void attn_gather_k(float *Q, float *K, float *V, float *G, const float *qkv, const float *gsrc,
                              const int32_t *row_of, int s0, int cs, int S, int H, int hd)
{
    int D = H * hd;
    size_t n = (size_t)cs * S * D;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
        int d = (int)(e % hd), h = (int)((e / hd) % H);
        size_t si = e / D; // sl * S + i
        int i = (int)(si % S), sl = (int)(si / S);
        int32_t row = row_of[(size_t)(s0 + sl) * S + i];
        size_t to = (((size_t)sl * H + h) * S + i) * hd + d;
        if (row < 0) {
            if (Q)
                Q[to] = 0.0f, K[to] = 0.0f, V[to] = 0.0f;
            if (G)
                G[to] = 0.0f;
            continue;
        }
        const float *src = qkv + (size_t)row * 3 * D + h * hd + d;
        if (Q)
            Q[to] = src[0], K[to] = src[D], V[to] = src[2 * D];
        if (G)
            G[to] = gsrc[(size_t)row * D + h * hd + d];
    }
}

// out rows (= O) or dqkv rows (+= dQ | dK | dV) from the [cs * heads][S][hd] blocks.
__global__ void attn_scatter_k(float *dst, int width, int add, const float *A, const float *B, const float *C,
                               const int32_t *row_of, int s0, int cs, int S, int H, int hd)
{
    int D = H * hd;
    size_t n = (size_t)cs * S * D;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
        int d = (int)(e % hd), h = (int)((e / hd) % H);
        size_t si = e / D;
        int i = (int)(si % S), sl = (int)(si / S);
        int32_t row = row_of[(size_t)(s0 + sl) * S + i];
        if (row < 0)
            continue;
        size_t from = (((size_t)sl * H + h) * S + i) * hd + d;
        float *o = dst + (size_t)row * width + h * hd + d;
        if (add) {
            o[0] += A[from];
            o[D] += B[from];
            o[2 * D] += C[from];
        } else
            o[0] = A[from];
    }
}

// Rows of scaled scores -> probabilities, in place; masked keys 0; a row with no allowed key all 0.
__global__ void attn_softmax_k(float *P, const uint8_t *mask, int s0, int S, int H)
{
    __shared__ float sh[128];
    size_t row = blockIdx.x; // (sl * H + h) * S + i
    int i = (int)(row % S), sl = (int)(row / ((size_t)S * H));
    const uint8_t *m = mask + ((size_t)(s0 + sl) * S + i) * S;
    float *p = P + row * S;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < S; j += 128)
        if (m[j] && p[j] > mx)
            mx = p[j];
    mx = block_max<float, 128>(mx, sh);
    float s = 0.0f;
    for (int j = threadIdx.x; j < S; j += 128) {
        float e = m[j] && mx > -INFINITY ? expf(p[j] - mx) : 0.0f;
        p[j] = e;
        s += e;
    }
    s = block_sum<float, 128>(s, sh);
    float inv = s > 0.0f ? 1.0f / s : 0.0f;
    for (int j = threadIdx.x; j < S; j += 128)
        p[j] *= inv;
}

// dS = P (dP - sum_j dP P), in place over dP, one block per row.
__global__ void attn_softmax_bwd_k(float *dP, const float *P, int S)
{
    __shared__ float sh[128];
    size_t row = blockIdx.x;
    const float *p = P + row * S;
    float *d = dP + row * S;
    float s = 0.0f;
    for (int j = threadIdx.x; j < S; j += 128)
        s += d[j] * p[j];
    s = block_sum<float, 128>(s, sh);
    for (int j = threadIdx.x; j < S; j += 128)
        d[j] = p[j] * (d[j] - s);
}

// Row-major C_b = alpha op(A_b) op(B_b) + beta C_b for b < batch (strides in floats).
static void bgemm(cuda_ctx *c, const char *op, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                  long long sa, const float *B, int ldb, long long sb, float beta, float *C, int ldc, long long sc,
                  int batch)
{
    upm_cuda_gemm_args g = upm_cuda_gemm_map(ta, tb, M, N, K, lda, ldb, ldc);
    cublasSetPointerMode(c->blas, CUBLAS_POINTER_MODE_HOST);
    upm_cuda_blas_ok(c, op,
                     cublasSgemmStridedBatched(c->blas, g.transa ? CUBLAS_OP_T : CUBLAS_OP_N,
                                               g.transb ? CUBLAS_OP_T : CUBLAS_OP_N, g.m, g.n, g.k, &alpha, B, g.lda,
                                               sb, A, g.ldb, sa, &beta, C, g.ldc, sc, batch));
}

static int attn_chunk(cuda_ctx *c, const upm_attn_desc *a, const char *op, float **ws)
{
    int D = a->heads * a->head_dim;
    size_t want = upm_cuda_attn_ws(a->nseq, a->S, D, a->heads, ATTN_WS_CAP);
    *ws = (float *)upm_cuda_ws(c, want, op);
    return *ws ? upm_cuda_attn_chunk(a->nseq, a->S, D, a->heads, c->ws_bytes) : 0;
}

static void cu_attention_fwd(upm_backend *be, float *out, float *probs, const float *qkv, const upm_attn_desc *a)
{
    cuda_ctx *c = CTX(be);
    int S = a->S, H = a->heads, hd = a->head_dim, D = H * hd;
    if (a->nseq <= 0 || S <= 0 || H <= 0 || hd <= 0)
        return;
    float *ws;
    int chunk = attn_chunk(c, a, "attention_fwd", &ws);
    if (chunk < 1)
        return;
    float scale = 1.0f / sqrtf((float)hd);
    long long blk = (long long)S * hd, pp = (long long)S * S;
    for (int s0 = 0; s0 < a->nseq; s0 += chunk) {
        int cs = a->nseq - s0 < chunk ? a->nseq - s0 : chunk, nb = cs * H;
        size_t part = (size_t)cs * S * D;
        float *Q = ws, *K = Q + part, *V = K + part, *O = V + part, *P = probs + (size_t)s0 * H * pp;
        attn_gather_k<<<blocks_for(part), UPM_CUDA_THREADS, 0, c->stream>>>(Q, K, V, NULL, qkv, NULL, a->row_of, s0, cs,
                                                                           S, H, hd);
        bgemm(c, "attention_fwd", 0, 1, S, S, hd, scale, Q, hd, blk, K, hd, blk, 0.0f, P, S, pp, nb);
        attn_softmax_k<<<(unsigned)((size_t)nb * S), 128, 0, c->stream>>>(P, a->mask, s0, S, H);
        bgemm(c, "attention_fwd", 0, 0, S, hd, S, 1.0f, P, S, pp, V, hd, blk, 0.0f, O, hd, blk, nb);
        attn_scatter_k<<<blocks_for(part), UPM_CUDA_THREADS, 0, c->stream>>>(out, D, 0, O, NULL, NULL, a->row_of, s0, cs,
                                                                            S, H, hd);
    }
    LAUNCHED(c, "attention_fwd");
}

static void cu_attention_bwd(upm_backend *be, float *dqkv, const float *dout, const float *probs, const float *qkv,
                             const upm_attn_desc *a)
{
    cuda_ctx *c = CTX(be);
    int S = a->S, H = a->heads, hd = a->head_dim, D = H * hd;
    if (a->nseq <= 0 || S <= 0 || H <= 0 || hd <= 0)
        return;
    float *ws;
    int chunk = attn_chunk(c, a, "attention_bwd", &ws);
    if (chunk < 1)
        return;
    float scale = 1.0f / sqrtf((float)hd);
    long long blk = (long long)S * hd, pp = (long long)S * S;
    for (int s0 = 0; s0 < a->nseq; s0 += chunk) {
        int cs = a->nseq - s0 < chunk ? a->nseq - s0 : chunk, nb = cs * H;
        size_t part = (size_t)cs * S * D;
        float *Q = ws, *K = Q + part, *V = K + part, *dO = V + part, *dQ = dO + part, *dK = dQ + part, *dV = dK + part;
        float *dP = dV + part;
        const float *P = probs + (size_t)s0 * H * pp;
        attn_gather_k<<<blocks_for(part), UPM_CUDA_THREADS, 0, c->stream>>>(Q, K, V, dO, qkv, dout, a->row_of, s0, cs, S,
                                                                           H, hd);
        bgemm(c, "attention_bwd", 0, 1, S, S, hd, 1.0f, dO, hd, blk, V, hd, blk, 0.0f, dP, S, pp, nb); // dP = dO V^T
        bgemm(c, "attention_bwd", 1, 0, S, hd, S, 1.0f, P, S, pp, dO, hd, blk, 0.0f, dV, hd, blk, nb); // dV = P^T dO
        attn_softmax_bwd_k<<<(unsigned)((size_t)nb * S), 128, 0, c->stream>>>(dP, P, S);
        bgemm(c, "attention_bwd", 0, 0, S, hd, S, scale, dP, S, pp, K, hd, blk, 0.0f, dQ, hd, blk, nb); // dQ = dS K
        bgemm(c, "attention_bwd", 1, 0, S, hd, S, scale, dP, S, pp, Q, hd, blk, 0.0f, dK, hd, blk, nb); // dK = dS^T Q
        attn_scatter_k<<<blocks_for(part), UPM_CUDA_THREADS, 0, c->stream>>>(dqkv, 3 * D, 1, dQ, dK, dV, a->row_of, s0,
                                                                            cs, S, H, hd);
    }
    LAUNCHED(c, "attention_bwd");
}

// ---- generation: attention over the key/value cache ----

__global__ void kv_append_k(float *cache, const float *qkv, const int32_t *row_of, int nseq, int n_new, int n_append,
                            int len, int D)
{
    size_t n = (size_t)nseq * n_append * 2 * D;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
        int col = (int)(e % (2 * D));
        size_t si = e / (2 * D);
        int i = (int)(si % n_append), s = (int)(si / n_append);
        int32_t row = row_of[(size_t)s * n_new + i];
        cache[((size_t)(len + i) * nseq + s) * 2 * D + col] = qkv[(size_t)row * 3 * D + D + col];
    }
}

// One block per (sequence, new token, head); scores in dynamic shared memory.
__global__ void kv_attn_k(float *out, const float *qkv, upm_attn_kv_desc a)
{
    extern __shared__ float sc[];
    __shared__ float red[128];
    int h = blockIdx.y, hd = a.head_dim, D = a.heads * hd;
    int s = blockIdx.x / a.n_new, i = blockIdx.x % a.n_new;
    int32_t row = a.row_of[(size_t)s * a.n_new + i];
    int ncache = i < a.n_append ? a.len + i + 1 : a.len + a.n_append, self = i >= a.n_append;
    int nk = a.prefix_len + ncache + self;
    const float *q = qkv + (size_t)row * 3 * D + h * hd;
    float scale = 1.0f / sqrtf((float)hd);
    for (int j = threadIdx.x; j < nk; j += 128) {
        const float *k;
        if (j < a.prefix_len)
            k = a.prefix + ((size_t)(s / a.group) * a.prefix_len + j) * 3 * D + D + h * hd;
        else if (j - a.prefix_len < ncache)
            k = a.cache + ((size_t)(j - a.prefix_len) * a.nseq + s) * 2 * D + h * hd;
        else
            k = qkv + (size_t)row * 3 * D + D + h * hd;
        float d = 0.0f;
        for (int t = 0; t < hd; t++)
            d += q[t] * k[t];
        sc[j] = d * scale;
    }
    __syncthreads();
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < nk; j += 128)
        mx = sc[j] > mx ? sc[j] : mx;
    mx = block_max<float, 128>(mx, red);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < nk; j += 128) {
        sc[j] = expf(sc[j] - mx);
        sum += sc[j];
    }
    sum = block_sum<float, 128>(sum, red);
    for (int t = threadIdx.x; t < hd; t += 128) {
        float o = 0.0f;
        for (int j = 0; j < nk; j++) {
            const float *v;
            if (j < a.prefix_len)
                v = a.prefix + ((size_t)(s / a.group) * a.prefix_len + j) * 3 * D + 2 * D + h * hd;
            else if (j - a.prefix_len < ncache)
                v = a.cache + ((size_t)(j - a.prefix_len) * a.nseq + s) * 2 * D + D + h * hd;
            else
                v = qkv + (size_t)row * 3 * D + 2 * D + h * hd;
            o += sc[j] * v[t];
        }
        out[(size_t)row * D + h * hd + t] = o / sum;
    }
}

static void cu_attention_kv_fwd(upm_backend *be, float *out, const float *qkv, const upm_attn_kv_desc *a)
{
    cuda_ctx *c = CTX(be);
    int D = a->heads * a->head_dim;
    if (a->nseq <= 0 || a->n_new <= 0 || a->heads <= 0 || a->head_dim <= 0 || a->group <= 0)
        return;
    if (a->n_append > 0) {
        size_t n = (size_t)a->nseq * a->n_append * 2 * D;
        kv_append_k<<<blocks_for(n), UPM_CUDA_THREADS, 0, c->stream>>>(a->cache, qkv, a->row_of, a->nseq, a->n_new,
                                                                       a->n_append, a->len, D);
    }
    // the scores live in dynamic shared memory: up to what the GPU offers a block (227 KB on an H100), less
    // the kernel's own 512 bytes
    size_t keys = (size_t)a->prefix_len + a->len + a->n_append + 1, smem = keys * sizeof(float);
    int dev_max = 0;
    cudaDeviceGetAttribute(&dev_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, c->device);
    size_t cap = dev_max > 1024 ? (size_t)dev_max - 1024 : 48 * 1024 - 1024;
    if (smem > cap) {
        upm_cuda_fail(c, "attention_kv_fwd", "%zu keys exceed the kernel's shared memory (at most %zu)", keys,
                      cap / sizeof(float));
        return;
    }
    if (smem > 48 * 1024 - 1024 &&
        !upm_cuda_ok(c, "attention_kv_fwd",
                     cudaFuncSetAttribute(kv_attn_k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem)))
        return;
    dim3 grid((unsigned)(a->nseq * a->n_new), (unsigned)a->heads);
    kv_attn_k<<<grid, 128, smem, c->stream>>>(out, qkv, *a);
    LAUNCHED(c, "attention_kv_fwd");
}

void upm_cuda_attn_ops(upm_backend *be)
{
    be->attention_fwd = cu_attention_fwd;
    be->attention_bwd = cu_attention_bwd;
    be->attention_kv_fwd = cu_attention_kv_fwd;
}
