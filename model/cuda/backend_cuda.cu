// The CUDA backend (model/backend.h) as a loadable module, libupmoe-backend-cuda.so: memory, the stream,
// events, page-locked host memory, the sticky status, and the module's entry point. The ops are in
// ops_*.cu. fp32 throughout for now (cuBLAS SGEMM without TF32); see docs/model.md, "Element types".
#include <dlfcn.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.cuh"

extern "C" {
#include "backend_module.h"
}

void upm_cuda_fail(cuda_ctx *c, const char *op, const char *fmt, ...)
{
    if (c->failed)
        return;
    c->failed = 1;
    char what[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    c->err.code = UPM_EBACKEND;
    snprintf(c->err.msg, sizeof c->err.msg, "cuda backend: %s: %s", op, what);
}

int upm_cuda_ok(cuda_ctx *c, const char *op, cudaError_t e)
{
    if (e == cudaSuccess)
        return 1;
    upm_cuda_fail(c, op, "%s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
    return 0;
}

int upm_cuda_blas_ok(cuda_ctx *c, const char *op, cublasStatus_t s)
{
    if (s == CUBLAS_STATUS_SUCCESS)
        return 1;
    upm_cuda_fail(c, op, "cuBLAS: %s", cublasGetStatusString(s));
    return 0;
}

void *upm_cuda_ws(cuda_ctx *c, size_t bytes, const char *op)
{
    if (bytes <= c->ws_bytes)
        return c->ws;
    if (c->ws) { // work queued before still reads the old one: let it finish (growth is rare)
        cudaStreamSynchronize(c->stream);
        cudaFree(c->ws);
    }
    c->ws = NULL;
    c->ws_bytes = 0;
    size_t want = (bytes + 0xFFFFF) & ~(size_t)0xFFFFF; // whole MiB: fewer regrowths
    if (!upm_cuda_ok(c, op, cudaMalloc(&c->ws, want)))
        return NULL;
    c->ws_bytes = want;
    return c->ws;
}

// ---- memory ----

static void *cu_alloc(upm_backend *be, size_t bytes)
{
    cuda_ctx *c = CTX(be);
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 64) != cudaSuccess) {
        cudaGetLastError(); // out of memory is the caller's to report (NULL), not a sticky failure
        return NULL;
    }
    upm_cuda_ok(c, "alloc", cudaMemsetAsync(p, 0, bytes ? bytes : 64, c->stream));
    return p;
}

static void cu_free(upm_backend *be, void *p)
{
    if (p)
        upm_cuda_ok(CTX(be), "free", cudaFree(p));
}

static void cu_upload(upm_backend *be, void *dst, const void *src, size_t bytes)
{
    cuda_ctx *c = CTX(be);
    if (bytes)
        upm_cuda_ok(c, "upload", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
}

static void cu_download(upm_backend *be, void *dst, const void *src, size_t bytes)
{
    cuda_ctx *c = CTX(be);
    if (bytes)
        upm_cuda_ok(c, "download", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    upm_cuda_ok(c, "download", cudaStreamSynchronize(c->stream)); // the one implicit wait
}

static void cu_copy(upm_backend *be, void *dst, const void *src, size_t bytes)
{
    cuda_ctx *c = CTX(be);
    if (bytes)
        upm_cuda_ok(c, "copy", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream));
}

static void cu_zero(upm_backend *be, void *p, size_t bytes)
{
    cuda_ctx *c = CTX(be);
    if (bytes)
        upm_cuda_ok(c, "zero", cudaMemsetAsync(p, 0, bytes, c->stream));
}

static void cu_sync(upm_backend *be) { upm_cuda_ok(CTX(be), "sync", cudaStreamSynchronize(CTX(be)->stream)); }

// ---- events and page-locked host memory ----

static upm_event *cu_event_new(upm_backend *be)
{
    upm_event *e = (upm_event *)calloc(1, sizeof *e);
    if (!e)
        return NULL;
    cudaError_t r = cudaEventCreateWithFlags(&e->ev, cudaEventDisableTiming);
    if (r != cudaSuccess) {
        cudaGetLastError();
        if (r != cudaErrorMemoryAllocation) // out of memory is the caller's to report (NULL)
            upm_cuda_ok(CTX(be), "event_new", r);
        free(e);
        return NULL;
    }
    return e;
}

static void cu_event_free(upm_backend *be, upm_event *e)
{
    (void)be;
    if (e) {
        cudaEventDestroy(e->ev);
        free(e);
    }
}

static void cu_record(upm_backend *be, upm_event *e) { upm_cuda_ok(CTX(be), "record", cudaEventRecord(e->ev, CTX(be)->stream)); }

static int cu_query(upm_backend *be, upm_event *e)
{
    cudaError_t r = cudaEventQuery(e->ev);
    if (r == cudaErrorNotReady) {
        cudaGetLastError(); // not an error: clear it
        return 0;
    }
    upm_cuda_ok(CTX(be), "query", r); // a failed stream never completes: recorded; the status stops the run
    return 1;
}

static void cu_wait(upm_backend *be, upm_event *e) { upm_cuda_ok(CTX(be), "wait", cudaEventSynchronize(e->ev)); }

// Called from the decoding thread too: the runtime's current device is per thread, so set ours first (else
// the allocation would create a context on GPU 0).
static void *cu_host_alloc(upm_backend *be, size_t bytes)
{
    cudaSetDevice(CTX(be)->device);
    void *p = NULL;
    if (cudaMallocHost(&p, bytes ? bytes : 64) != cudaSuccess) { // page-locked; 256-byte aligned
        cudaGetLastError();
        return NULL;
    }
    memset(p, 0, bytes ? bytes : 64);
    return p;
}

static void cu_host_free(upm_backend *be, void *p)
{
    if (!p)
        return;
    cudaSetDevice(CTX(be)->device);
    cudaError_t r = cudaFreeHost(p);
    if (r != cudaSuccess) // possibly another thread: report on stderr rather than racing on the status
        fprintf(stderr, "cuda backend: host_free: %s\n", cudaGetErrorString(r));
}

static void *cu_host_ptr(upm_backend *be, void *p)
{
    (void)be, (void)p;
    return NULL; // device memory: the reduction stages through host_alloc memory
}

static void *cu_native_stream(upm_backend *be) { return CTX(be)->stream; }

static int cu_status(upm_backend *be, upm_err *err)
{
    cuda_ctx *c = CTX(be);
    if (!c->failed) { // errors of kernels that ran since: the stream reports them
        cudaError_t r = cudaStreamQuery(c->stream);
        if (r != cudaSuccess && r != cudaErrorNotReady)
            upm_cuda_ok(c, "a queued op", r);
        else if (r == cudaErrorNotReady)
            cudaGetLastError();
    }
    if (!c->failed)
        return 0;
    if (err)
        *err = c->err;
    return UPM_EBACKEND;
}

static void cu_destroy(upm_backend *be)
{
    cuda_ctx *c = CTX(be);
    cudaStreamSynchronize(c->stream);
    if (c->ws)
        cudaFree(c->ws);
    if (c->part)
        cudaFree(c->part);
    if (c->scal)
        cudaFree(c->scal);
    if (c->blas)
        cublasDestroy(c->blas);
    cudaStreamDestroy(c->stream);
    free(c);
    free(be);
}

// ---- the module ----

static const char *env(const char *name) { return getenv(name); }

static int cu_probe(char *why, size_t cap)
{
    int n = 0;
    cudaError_t r = cudaGetDeviceCount(&n);
    if (r != cudaSuccess) {
        void *drv = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
        if (!drv)
            snprintf(why, cap, "no NVIDIA driver on this machine (libcuda.so.1 not found)");
        else {
            snprintf(why, cap, "no usable CUDA device here (%s)", cudaGetErrorString(r));
            dlclose(drv);
        }
        cudaGetLastError();
        return 0;
    }
    if (n < 1)
        snprintf(why, cap, "no CUDA device here");
    return n;
}

static int cu_open(const upm_backend_opts *o, upm_backend **out, upm_err *err)
{
    (void)o;
    *out = NULL;
    char why[256];
    int n = cu_probe(why, sizeof why);
    if (n < 1) {
        err->code = UPM_EUSAGE;
        snprintf(err->msg, sizeof err->msg, "backend 'cuda': %s", why);
        return UPM_EUSAGE;
    }
    int dev = upm_cuda_pick_device(n, env, why, sizeof why);
    if (dev < 0) {
        err->code = UPM_EUSAGE;
        snprintf(err->msg, sizeof err->msg, "backend 'cuda': %s", why);
        return UPM_EUSAGE;
    }
    upm_backend *be = (upm_backend *)calloc(1, sizeof *be);
    cuda_ctx *c = (cuda_ctx *)calloc(1, sizeof *c);
    if (!be || !c) {
        free(be), free(c);
        err->code = UPM_ENOMEM;
        snprintf(err->msg, sizeof err->msg, "cuda backend: out of memory");
        return UPM_ENOMEM;
    }
    c->device = dev;
    be->name = "cuda";
    be->ctx = c;
    cudaError_t r = cudaSetDevice(dev);
    if (r == cudaSuccess)
        r = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (r == cudaSuccess)
        r = cudaMalloc((void **)&c->part, sizeof(double) * UPM_CUDA_SUM_PARTS);
    if (r == cudaSuccess)
        r = cudaMalloc((void **)&c->scal, sizeof(float) * 16);
    cublasStatus_t s = CUBLAS_STATUS_SUCCESS;
    if (r == cudaSuccess && (s = cublasCreate(&c->blas)) == CUBLAS_STATUS_SUCCESS &&
        (s = cublasSetStream(c->blas, c->stream)) == CUBLAS_STATUS_SUCCESS)
        s = cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH); // fp32: no TF32 (docs/model.md)
    if (r != cudaSuccess || s != CUBLAS_STATUS_SUCCESS) {
        err->code = UPM_EBACKEND;
        snprintf(err->msg, sizeof err->msg, "cuda backend: cannot start on GPU %d: %s", dev,
                 r != cudaSuccess ? cudaGetErrorString(r) : cublasGetStatusString(s));
        if (c->stream)
            cu_destroy(be);
        else
            free(c), free(be);
        return UPM_EBACKEND;
    }
    be->alloc = cu_alloc;
    be->free = cu_free;
    be->upload = cu_upload;
    be->download = cu_download;
    be->copy = cu_copy;
    be->zero = cu_zero;
    be->sync = cu_sync;
    be->event_new = cu_event_new;
    be->event_free = cu_event_free;
    be->record = cu_record;
    be->query = cu_query;
    be->wait = cu_wait;
    be->host_alloc = cu_host_alloc;
    be->host_free = cu_host_free;
    be->status = cu_status;
    be->host_ptr = cu_host_ptr;
    be->native_stream = cu_native_stream;
    be->destroy = cu_destroy;
    upm_cuda_dense_ops(be);
    upm_cuda_rows_ops(be);
    upm_cuda_attn_ops(be);
    upm_cuda_loss_ops(be);
    upm_cuda_route_ops(be);
    cudaGetLastError(); // nothing the libraries' start-up left behind is blamed on the first op
    *out = be;
    return 0;
}

static const upm_backend_module module = {UPM_BACKEND_MODULE_ABI, "cuda", cu_probe, cu_open};

extern "C" __attribute__((visibility("default"))) const upm_backend_module *upm_backend_module_v1(void)
{
    return &module;
}
