// The CUDA backend's dense algebra (backend.h): GEMMs through cuBLAS SGEMM (row-major mapped onto its
// column-major interface, cuda_plan.h), BLAS-1, bias gradients and every sum of the step as fixed-order
// reductions, the temperature's matmul and gradient, element-type conversion, and bucket packing.
#include "cuda_internal.cuh"

// ---- GEMM ----

static void gemm_call(cuda_ctx *c, const char *op, int ta, int tb, int M, int N, int K, const float *alpha,
                      const float *A, int lda, const float *B, int ldb, const float *beta, float *C, int ldc)
{
    upm_cuda_gemm_args g = upm_cuda_gemm_map(ta, tb, M, N, K, lda, ldb, ldc);
    upm_cuda_blas_ok(c, op,
                     cublasSgemm(c->blas, g.transa ? CUBLAS_OP_T : CUBLAS_OP_N, g.transb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                 g.m, g.n, g.k, alpha, B, g.lda, A, g.ldb, beta, C, g.ldc));
}

static void cu_gemm(upm_backend *be, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                    const float *B, int ldb, float beta, float *C, int ldc)
{
    cuda_ctx *c = CTX(be);
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) { // C = beta C
        if (beta == 0.0f)
            upm_cuda_ok(c, "gemm", cudaMemset2DAsync(C, sizeof(float) * ldc, 0, sizeof(float) * N, M, c->stream));
        else if (beta != 1.0f)
            for (int i = 0; i < M; i++)
                be->scale(be, C + (size_t)i * ldc, beta, (size_t)N);
        return;
    }
    cublasSetPointerMode(c->blas, CUBLAS_POINTER_MODE_HOST); // beta = 0: cuBLAS does not read C
    gemm_call(c, "gemm", ta, tb, M, N, K, &alpha, A, lda, B, ldb, &beta, C, ldc);
}

// Rows x cols of X (leading dimension ld) to packed bfloat16, nearest even (convert's rounding).
__device__ inline uint16_t to_bf16(float f)
{
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) // NaN: a quiet NaN of the same sign
        return (uint16_t)((u >> 16) | 0x0040u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16); // nearest, ties to even; overflow to infinity
}
__global__ void pack_bf16_k(uint16_t *dst, const float *X, int rows, int cols, int ld)
{
    size_t n = (size_t)rows * cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = to_bf16(X[(i / cols) * ld + i % cols]);
}

// gemm with bf16 inputs and fp32 accumulation: A and B rounded into the workspace, then cublasGemmEx on
// the tensor cores (CUBLAS_COMPUTE_32F: products of bf16 values accumulated in fp32).
static void cu_gemm_ct(upm_backend *be, upm_dtype compute, int ta, int tb, int M, int N, int K, float alpha,
                       const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    cuda_ctx *c = CTX(be);
    if (compute == UPM_F32 || M <= 0 || N <= 0 || K <= 0) {
        be->gemm(be, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    int ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
    size_t na = ((size_t)ar * ac + 127) & ~(size_t)127, nb = (size_t)br * bc;
    uint16_t *a16 = (uint16_t *)upm_cuda_ws(c, sizeof(uint16_t) * (na + nb), "gemm_ct");
    if (!a16)
        return;
    uint16_t *b16 = a16 + na;
    pack_bf16_k<<<blocks_for((size_t)ar * ac), UPM_CUDA_THREADS, 0, c->stream>>>(a16, A, ar, ac, lda);
    pack_bf16_k<<<blocks_for(nb), UPM_CUDA_THREADS, 0, c->stream>>>(b16, B, br, bc, ldb);
    if (!LAUNCHED(c, "gemm_ct"))
        return;
    upm_cuda_gemm_args g = upm_cuda_gemm_map(ta, tb, M, N, K, ac, bc, ldc);
    cublasSetPointerMode(c->blas, CUBLAS_POINTER_MODE_HOST);
    upm_cuda_blas_ok(c, "gemm_ct",
                     cublasGemmEx(c->blas, g.transa ? CUBLAS_OP_T : CUBLAS_OP_N, g.transb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                  g.m, g.n, g.k, &alpha, b16, CUDA_R_16BF, g.lda, a16, CUDA_R_16BF, g.ldb, &beta, C,
                                  CUDA_R_32F, g.ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// The temperature s = min(exp(t), cap) and the caller's beta, as device scalars for cuBLAS.
__global__ void temp_scalars(float *scal, const float *t, float cap, float beta)
{
    float s = expf(t[0]);
    scal[0] = s < cap ? s : cap;
    scal[1] = beta;
}

static void cu_gemm_temp(upm_backend *be, int ta, int tb, int M, int N, int K, const float *t, float cap,
                         const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    cuda_ctx *c = CTX(be);
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) { // an empty product: C = beta C, as gemm
        be->gemm(be, ta, tb, M, N, 0, 1.0f, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    if (beta == 0.0f) // overwritten: NaNs in C must not propagate, whatever cuBLAS does with a device beta
        upm_cuda_ok(c, "gemm_temp", cudaMemset2DAsync(C, sizeof(float) * ldc, 0, sizeof(float) * N, M, c->stream));
    temp_scalars<<<1, 1, 0, c->stream>>>(c->scal, t, cap, beta);
    if (!LAUNCHED(c, "gemm_temp"))
        return;
    cublasSetPointerMode(c->blas, CUBLAS_POINTER_MODE_DEVICE);
    gemm_call(c, "gemm_temp", ta, tb, M, N, K, c->scal, A, lda, B, ldb, c->scal + 1, C, ldc);
    cublasSetPointerMode(c->blas, CUBLAS_POINTER_MODE_HOST);
}

// ---- BLAS-1 and bias ----

__global__ void axpy_k(float *y, const float *x, float alpha, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] += alpha * x[i];
}

static void cu_axpy(upm_backend *be, float *y, const float *x, float alpha, size_t n)
{
    cuda_ctx *c = CTX(be);
    if (!n)
        return;
    axpy_k<<<blocks_for(n), UPM_CUDA_THREADS, 0, c->stream>>>(y, x, alpha, n);
    LAUNCHED(c, "axpy");
}

__global__ void scale_k(float *y, float alpha, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] *= alpha;
}

static void cu_scale(upm_backend *be, float *y, float alpha, size_t n)
{
    cuda_ctx *c = CTX(be);
    if (!n)
        return;
    scale_k<<<blocks_for(n), UPM_CUDA_THREADS, 0, c->stream>>>(y, alpha, n);
    LAUNCHED(c, "scale");
}

__global__ void add_bias_k(float *Y, const float *b, size_t rows, int cols)
{
    size_t n = rows * (size_t)cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        Y[i] += b[i % cols];
}

static void cu_add_bias(upm_backend *be, float *Y, const float *b, int rows, int cols)
{
    cuda_ctx *c = CTX(be);
    if (rows <= 0 || cols <= 0)
        return;
    add_bias_k<<<blocks_for((size_t)rows * cols), UPM_CUDA_THREADS, 0, c->stream>>>(Y, b, (size_t)rows, cols);
    LAUNCHED(c, "add_bias");
}

// Column sums in two passes (cuda_plan.h, UPM_CUDA_COL_RUNS): part[run][col] over the run's rows in order,
// then each column's runs in order, added into out (double throughout, as the CPU backend sums).
__global__ void col_partial_k(double *part, const float *X, int rows, int cols, int runs)
{
    int col = blockIdx.x * blockDim.x + threadIdx.x, run = blockIdx.y;
    if (col >= cols)
        return;
    int len = (rows + runs - 1) / runs, r0 = run * len, r1 = r0 + len < rows ? r0 + len : rows;
    double s = 0.0;
    for (int r = r0; r < r1; r++)
        s += (double)X[(size_t)r * cols + col];
    part[(size_t)run * cols + col] = s;
}

__global__ void col_finish_k(float *out, const double *part, int cols, int runs)
{
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= cols)
        return;
    double s = 0.0;
    for (int k = 0; k < runs; k++)
        s += part[(size_t)k * cols + col];
    out[col] = (float)((double)out[col] + s);
}

static void cu_bias_grad(upm_backend *be, float *db, const float *dY, int rows, int cols)
{
    cuda_ctx *c = CTX(be);
    if (rows <= 0 || cols <= 0)
        return;
    int runs = upm_cuda_col_runs(rows);
    double *part = (double *)upm_cuda_ws(c, sizeof(double) * (size_t)runs * cols, "bias_grad");
    if (!part)
        return;
    dim3 grid((cols + 127) / 128, runs);
    col_partial_k<<<grid, 128, 0, c->stream>>>(part, dY, rows, cols, runs);
    col_finish_k<<<(cols + 127) / 128, 128, 0, c->stream>>>(db, part, cols, runs);
    LAUNCHED(c, "bias_grad");
}

// ---- fixed-order dot products: sumsq, the temperature's gradient ----

__global__ void dot_partial_k(double *part, const float *x, const float *y, size_t n)
{
    __shared__ double sh[UPM_CUDA_THREADS];
    size_t per = (n + UPM_CUDA_SUM_PARTS - 1) / UPM_CUDA_SUM_PARTS, lo = blockIdx.x * per;
    size_t hi = lo + per < n ? lo + per : n;
    double s = 0.0;
    for (size_t i = lo + threadIdx.x; i < hi; i += UPM_CUDA_THREADS)
        s += (double)x[i] * (double)(y ? y[i] : x[i]);
    s = block_sum<double, UPM_CUDA_THREADS>(s, sh);
    if (threadIdx.x == 0)
        part[blockIdx.x] = s;
}

__global__ void dot_finish_k(float *out, const double *part, int accumulate, const float *t, float cap)
{
    if (t && !(expf(t[0]) < cap)) // the temperature is at its cap: no gradient
        return;
    double s = 0.0;
    for (int p = 0; p < UPM_CUDA_SUM_PARTS; p++)
        s += part[p];
    out[0] = accumulate ? (float)((double)out[0] + s) : (float)s;
}

void upm_cuda_dot(cuda_ctx *c, float *out, const float *x, const float *y, size_t n, int accumulate, const float *t,
                  float cap, const char *op)
{
    dot_partial_k<<<UPM_CUDA_SUM_PARTS, UPM_CUDA_THREADS, 0, c->stream>>>(c->part, x, y, n);
    dot_finish_k<<<1, 1, 0, c->stream>>>(out, c->part, accumulate, t, cap);
    LAUNCHED(c, op);
}

static void cu_sumsq(upm_backend *be, float *out, const float *x, size_t n)
{
    upm_cuda_dot(CTX(be), out, x, NULL, n, 0, NULL, 0.0f, "sumsq");
}

static void cu_temperature_bwd(upm_backend *be, float *dt, const float *dy, const float *y, size_t n, const float *t,
                               float cap)
{
    upm_cuda_dot(CTX(be), dt, dy, y, n, 1, t, cap, "temperature_bwd");
}

// ---- element types ----


__global__ void convert_k(void *dst, int dt, const void *src, int st, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float v = st == UPM_BF16 ? __uint_as_float((uint32_t)((const uint16_t *)src)[i] << 16) : ((const float *)src)[i];
        if (dt == UPM_BF16)
            ((uint16_t *)dst)[i] = to_bf16(v);
        else
            ((float *)dst)[i] = v;
    }
}

static void cu_convert(upm_backend *be, void *dst, upm_dtype dt, const void *src, upm_dtype st, size_t n)
{
    cuda_ctx *c = CTX(be);
    if (!n)
        return;
    if (dt == st) {
        upm_cuda_ok(c, "convert", cudaMemcpyAsync(dst, src, n * upm_dtype_size(dt), cudaMemcpyDeviceToDevice, c->stream));
        return;
    }
    convert_k<<<blocks_for(n), UPM_CUDA_THREADS, 0, c->stream>>>(dst, (int)dt, src, (int)st, n);
    LAUNCHED(c, "convert");
}

// ---- gradient buckets ----

static void cu_pack(upm_backend *be, float *dst, const float *src, const size_t *off, const size_t *len, int n)
{
    cuda_ctx *c = CTX(be);
    size_t at = 0;
    for (int r = 0; r < n; r++) {
        if (len[r])
            upm_cuda_ok(c, "pack", cudaMemcpyAsync(dst + at, src + off[r], sizeof(float) * len[r],
                                                   cudaMemcpyDeviceToDevice, c->stream));
        at += len[r];
    }
}

__global__ void scale_copy_k(float *dst, const float *src, float alpha, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = alpha * src[i];
}

static void cu_unpack_scale(upm_backend *be, float *dst, const float *src, const size_t *off, const size_t *len, int n,
                            float alpha)
{
    cuda_ctx *c = CTX(be);
    size_t at = 0;
    for (int r = 0; r < n; r++) {
        if (len[r])
            scale_copy_k<<<blocks_for(len[r]), UPM_CUDA_THREADS, 0, c->stream>>>(dst + off[r], src + at, alpha, len[r]);
        at += len[r];
    }
    LAUNCHED(c, "unpack_scale");
}

void upm_cuda_dense_ops(upm_backend *be)
{
    be->gemm = cu_gemm;
    be->gemm_ct = cu_gemm_ct;
    be->gemm_temp = cu_gemm_temp;
    be->temperature_bwd = cu_temperature_bwd;
    be->axpy = cu_axpy;
    be->scale = cu_scale;
    be->add_bias = cu_add_bias;
    be->bias_grad = cu_bias_grad;
    be->sumsq = cu_sumsq;
    be->convert = cu_convert;
    be->pack = cu_pack;
    be->unpack_scale = cu_unpack_scale;
}
