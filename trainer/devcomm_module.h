/* The contract between devcomm.c and a device communicator module loaded with dlopen (comm_nccl.c builds
 * libupmoe-comm-nccl.so; tests/support/fake_devcomm.c a stand-in for the bootstrap tests). The module
 * links none of upmoe's libraries and writes its errors into upm_err itself. Not a public header. */
#ifndef UPM_DEVCOMM_MODULE_H
#define UPM_DEVCOMM_MODULE_H

#include <stddef.h>

#include "err.h"

#define UPM_DEVCOMM_MODULE_ABI 1
#define UPM_DEVCOMM_MODULE_ENTRY "upm_devcomm_module_v1"
#define UPM_DEVCOMM_ID_MAX 256

typedef struct upm_devcomm_module {
    int abi;          /* UPM_DEVCOMM_MODULE_ABI */
    const char *name; /* "nccl" */
    size_t id_bytes;  /* the bootstrap id rank 0 makes and every rank receives (<= UPM_DEVCOMM_ID_MAX) */
    int (*make_id)(void *id, upm_err *err);
    /* Joins the communicator of `world` ranks as `rank` on the calling thread's device, queuing its
     * collectives on `stream` (the backend's); gives up after timeout_s. */
    int (*open)(const void *id, int rank, int world, void *stream, double timeout_s, void **impl, upm_err *err);
    /* buf[0..n) (device memory) = the sum over ranks, in place, queued on the stream. */
    int (*allreduce_sum)(void *impl, float *buf, size_t n, upm_err *err);
    /* Waits until everything queued on the stream so far has completed, at most timeout_s (then the
     * communicator is aborted: the error says so). */
    int (*wait)(void *impl, double timeout_s, upm_err *err);
    void (*close)(void *impl, int abort);
} upm_devcomm_module;

typedef const upm_devcomm_module *(*upm_devcomm_module_fn)(void);

#endif
