// The CUDA backend's shared state and helpers (backend_cuda.cu and the ops_*.cu files).
// One stream per backend: every op is queued on it in call order, so the workspace and the scalar slots
// can be reused from op to op without further synchronisation. Reductions never use floating-point
// atomics: fixed partitions summed in a fixed order (cuda_plan.h), so a job gives the same bits on the
// same GPU every time.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>

extern "C" {
#include "backend.h"
#include "cuda_plan.h"
}

struct upm_event {
    cudaEvent_t ev;
};

struct cuda_ctx {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    int failed;      // sticky: the first failure's op and reason in err
    upm_err err;
    void *ws;        // grow-only workspace (attention chunks, column partials, row losses)
    size_t ws_bytes;
    double *part;    // UPM_CUDA_SUM_PARTS partial sums
    float *scal;     // scalar slots: [0] gemm_temp alpha, [1] its beta, [2] xent valid rows
};

#define CTX(be) ((cuda_ctx *)(be)->ctx)

// Records the first failure (sticky, as the CUDA runtime's are).
void upm_cuda_fail(cuda_ctx *c, const char *op, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
// After a launch or an API call: records err (not cudaSuccess) against op. Returns 1 when all is well.
int upm_cuda_ok(cuda_ctx *c, const char *op, cudaError_t e);
int upm_cuda_blas_ok(cuda_ctx *c, const char *op, cublasStatus_t s);
#define LAUNCHED(c, op) upm_cuda_ok((c), (op), cudaGetLastError())
// The workspace, at least bytes long (grown here, once per larger request: cudaFree waits for the
// device, so work queued before still sees the old one). NULL (and a recorded failure) when out of memory.
void *upm_cuda_ws(cuda_ctx *c, size_t bytes, const char *op);

enum { UPM_CUDA_THREADS = 256, UPM_CUDA_MAX_BLOCKS = 65535 };
static inline unsigned blocks_for(size_t n) { return upm_cuda_blocks(n, UPM_CUDA_THREADS, UPM_CUDA_MAX_BLOCKS); }

// Sum over a block of T threads (T a power of two, <= 1024) in a fixed tree; the result in thread 0 (and
// returned to every thread). sh: T elements of shared memory.
template <typename V, int T> __device__ inline V block_sum(V v, V *sh)
{
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = T / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s)
            sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    V r = sh[0];
    __syncthreads();
    return r;
}

template <typename V, int T> __device__ inline V block_max(V v, V *sh)
{
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = T / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s && sh[threadIdx.x + s] > sh[threadIdx.x])
            sh[threadIdx.x] = sh[threadIdx.x + s];
        __syncthreads();
    }
    V r = sh[0];
    __syncthreads();
    return r;
}

// The op families, each filling its part of the table (ops_*.cu).
void upm_cuda_dense_ops(upm_backend *be);
void upm_cuda_rows_ops(upm_backend *be);
void upm_cuda_attn_ops(upm_backend *be);
void upm_cuda_loss_ops(upm_backend *be);
void upm_cuda_route_ops(upm_backend *be);

// Deterministic sum of x[i] * y[i] (y NULL: x[i]^2) over n, in double (UPM_CUDA_SUM_PARTS partials, then
// in order): out[0] = the sum, or out[0] += it when accumulate. With t non-NULL nothing is written when
// min(exp(t[0]), cap) is the cap (the temperature's gradient, backend.h temperature_bwd).
void upm_cuda_dot(cuda_ctx *c, float *out, const float *x, const float *y, size_t n, int accumulate, const float *t,
                  float cap, const char *op);
