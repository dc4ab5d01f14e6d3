/* The NCCL device communicator (devcomm_module.h), built as libupmoe-comm-nccl.so where nvcc and NCCL are
 * installed and loaded by devcomm.c. The communicator is non-blocking (ncclConfig_t.blocking = 0), so no
 * call can hang: initialisation, enqueueing and the wait for completion poll with a deadline, and a
 * communicator that misses it is aborted (ncclCommAbort), which makes every pending collective return.
 * Sums are queued on the backend's stream behind the backward ops that produced the gradients. */
#include <cuda_runtime.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "devcomm_module.h"

typedef struct nccl_impl {
    ncclComm_t comm;
    cudaStream_t stream;
    cudaEvent_t ev;
    int rank, world;
} nccl_impl;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void nap(void)
{
    struct timespec t = {0, 100000}; /* 0.1 ms */
    nanosleep(&t, NULL);
}

static int fail(upm_err *err, int code, const char *what, ncclResult_t r, ncclComm_t comm)
{
    const char *last = comm ? ncclGetLastError(comm) : NULL;
    err->code = code;
    snprintf(err->msg, sizeof err->msg, "NCCL: %s: %s%s%s", what, ncclGetErrorString(r), last && *last ? ": " : "",
             last ? last : "");
    return code;
}

/* Polls the communicator's state until it leaves ncclInProgress, at most timeout_s. */
static ncclResult_t settle(ncclComm_t comm, double timeout_s, int *timed_out)
{
    double end = now_s() + timeout_s;
    ncclResult_t st = ncclInProgress;
    *timed_out = 0;
    while (ncclCommGetAsyncError(comm, &st) == ncclSuccess && st == ncclInProgress) {
        if (now_s() > end) {
            *timed_out = 1;
            return ncclInProgress;
        }
        nap();
    }
    return st;
}

static int make_id(void *id, upm_err *err)
{
    ncclUniqueId u;
    ncclResult_t r = ncclGetUniqueId(&u);
    if (r != ncclSuccess)
        return fail(err, UPM_ECOMM, "ncclGetUniqueId", r, NULL);
    memcpy(id, &u, sizeof u);
    return 0;
}

static int open_comm(const void *id, int rank, int world, void *stream, double timeout_s, void **out, upm_err *err)
{
    *out = NULL;
    if (!stream) {
        err->code = UPM_EUSAGE;
        snprintf(err->msg, sizeof err->msg, "NCCL sums device memory: it needs the cuda backend's stream");
        return UPM_EUSAGE;
    }
    nccl_impl *x = calloc(1, sizeof *x);
    if (!x) {
        err->code = UPM_ENOMEM;
        snprintf(err->msg, sizeof err->msg, "no memory for the NCCL communicator");
        return UPM_ENOMEM;
    }
    x->stream = (cudaStream_t)stream, x->rank = rank, x->world = world;
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    int timed_out = 0;
    ncclResult_t r = ncclCommInitRankConfig(&x->comm, world, u, rank, &cfg);
    if (r == ncclSuccess || r == ncclInProgress)
        r = settle(x->comm, timeout_s, &timed_out);
    if (r != ncclSuccess) {
        int code = UPM_ECOMM;
        if (timed_out) {
            err->code = code;
            snprintf(err->msg, sizeof err->msg, "NCCL: the %d ranks did not all join within %g s", world, timeout_s);
        } else
            fail(err, code, "ncclCommInitRankConfig", r, x->comm);
        if (x->comm)
            ncclCommAbort(x->comm);
        free(x);
        return code;
    }
    if (cudaEventCreateWithFlags(&x->ev, cudaEventDisableTiming) != cudaSuccess) {
        err->code = UPM_ECOMM;
        snprintf(err->msg, sizeof err->msg, "NCCL: cannot create an event: %s", cudaGetErrorString(cudaGetLastError()));
        ncclCommAbort(x->comm);
        free(x);
        return UPM_ECOMM;
    }
    *out = x;
    return 0;
}

static int allreduce_sum(void *impl, float *buf, size_t n, upm_err *err)
{
    nccl_impl *x = impl;
    ncclResult_t r = ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, x->comm, x->stream);
    if (r == ncclInProgress) { /* non-blocking: enqueued once the state settles */
        int timed_out;
        r = settle(x->comm, 60.0, &timed_out);
    }
    return r == ncclSuccess ? 0 : fail(err, UPM_ECOMM, "ncclAllReduce", r, x->comm);
}

static int wait_all(void *impl, double timeout_s, upm_err *err)
{
    nccl_impl *x = impl;
    cudaError_t ce = cudaEventRecord(x->ev, x->stream);
    double end = now_s() + timeout_s;
    while (ce == cudaSuccess && (ce = cudaEventQuery(x->ev)) == cudaErrorNotReady) {
        ncclResult_t st = ncclSuccess;
        ncclCommGetAsyncError(x->comm, &st);
        if (st != ncclSuccess && st != ncclInProgress) {
            fail(err, UPM_ECOMM, "a gradient sum failed", st, x->comm);
            ncclCommAbort(x->comm), x->comm = NULL;
            return UPM_ECOMM;
        }
        if (now_s() > end) { /* a rank died or hung: cancel, so that this rank can report and leave */
            ncclCommAbort(x->comm), x->comm = NULL;
            err->code = UPM_ECOMM;
            snprintf(err->msg, sizeof err->msg,
                     "NCCL: the gradient sums did not complete within %g s (a rank died or hung); aborted",
                     timeout_s);
            return UPM_ECOMM;
        }
        nap();
    }
    if (ce != cudaSuccess) {
        err->code = UPM_ECOMM;
        snprintf(err->msg, sizeof err->msg, "NCCL: waiting for the gradient sums: %s", cudaGetErrorString(ce));
        return UPM_ECOMM;
    }
    return 0;
}

static void close_comm(void *impl, int abort)
{
    nccl_impl *x = impl;
    if (x->comm) {
        if (abort)
            ncclCommAbort(x->comm);
        else {
            int timed_out;
            if (ncclCommFinalize(x->comm) == ncclInProgress)
                settle(x->comm, 60.0, &timed_out);
            ncclCommDestroy(x->comm);
        }
    }
    if (x->ev)
        cudaEventDestroy(x->ev);
    free(x);
}

static const upm_devcomm_module module = {UPM_DEVCOMM_MODULE_ABI, "nccl", sizeof(ncclUniqueId), make_id, open_comm,
                                          allreduce_sum, wait_all, close_comm};

__attribute__((visibility("default"))) const upm_devcomm_module *upm_devcomm_module_v1(void);
const upm_devcomm_module *upm_devcomm_module_v1(void) { return &module; }
