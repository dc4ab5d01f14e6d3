/* The device communicator: gradient sums over device memory (NCCL), next to the host communicator
 * (comm.h), which bootstraps it and keeps every other collective (metrics, stop requests, heartbeats).
 * A data-parallel run on the cuda backend opens it (docs/distributed.md): the buckets are packed, summed
 * and written back on the backend's stream, without a host copy. */
#ifndef UPM_DEVCOMM_H
#define UPM_DEVCOMM_H

#include <stddef.h>

#include "comm.h"

typedef struct upm_devcomm upm_devcomm;

/* Every rank of c joins: rank 0 makes the id, c broadcasts it, each rank opens on `stream` (a backend's
 * native_stream), and the ranks agree on the outcome: if any rank fails, every rank returns UPM_ECOMM
 * naming the ranks that failed and the first one's reason. The module is $UPMOE_COMM_NCCL, else
 * libupmoe-comm-nccl.so next to the program. */
int upm_devcomm_open(upm_comm *c, void *stream, upm_devcomm **out, upm_err *err);
const char *upm_devcomm_name(const upm_devcomm *d);
/* buf[0..n) (device memory) = the sum over ranks, queued on the stream. */
int upm_devcomm_allreduce_sum(upm_devcomm *d, float *buf, size_t n, upm_err *err);
/* Waits for what was queued, at most the host communicator's patience (a hung rank: UPM_ECOMM). */
int upm_devcomm_wait(upm_devcomm *d, upm_err *err);
/* abort: after a failure (pending collectives are cancelled, not waited for). */
void upm_devcomm_close(upm_devcomm *d, int abort);

#endif
