/* The contract between comm.c and a communicator module loaded with dlopen (comm_mpi.c builds
 * libupmoe-comm-mpi.so). The module links none of upmoe's libraries: it gets what it needs here and
 * writes errors into upm_err itself. Not a public header. */
#ifndef UPM_COMM_MODULE_H
#define UPM_COMM_MODULE_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define UPM_COMM_MODULE_ABI 2
#define UPM_COMM_MODULE_ENTRY "upm_comm_module_init"

typedef struct upm_comm_ops {
    int (*iallreduce_sum)(void *impl, float *buf, size_t n, int *req, upm_err *err);
    int (*test)(void *impl, int req, int *done, upm_err *err);
    int (*wait)(void *impl, int req, upm_err *err);
    int (*allreduce_max_i64)(void *impl, int64_t *v, size_t n, upm_err *err);
    int (*broadcast)(void *impl, void *buf, size_t bytes, int root, upm_err *err);
    int (*barrier)(void *impl, upm_err *err);
    int (*allgather)(void *impl, const void *mine, size_t bytes, void *all, upm_err *err);
    /* counts[r] bytes from rank r (known to every rank) into all at displs[r] */
    int (*allgatherv)(void *impl, const void *mine, size_t bytes, void *all, const size_t *counts,
                      const size_t *displs, upm_err *err);
    void (*close)(void *impl, int abort_job);
} upm_comm_ops;

typedef struct upm_comm_module_args {
    int abi;                     /* in: UPM_COMM_MODULE_ABI */
    double timeout_s;            /* in */
    volatile sig_atomic_t *stop; /* in: may be NULL */
    const char *phase;           /* in: the caller's current phase text (read at error time) */
    double *wait_s;              /* in: where to add the seconds spent waiting */
    const double *patience;      /* in: how long a live rank may go without progress (read at wait time) */
    int64_t (*work)(void);       /* in: this process's work count (common/progress.h), sent with heartbeats */
    int rank, world, local_rank, local_world; /* out */
    const upm_comm_ops *ops;     /* out */
    void *impl;                  /* out */
} upm_comm_module_args;

typedef int (*upm_comm_module_init_fn)(upm_comm_module_args *mi, upm_err *err);

#endif
