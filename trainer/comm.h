/* The communicator: how the ranks of a data-parallel run talk (docs/distributed.md). The trainer
 * calls only this; the model and the sampler never communicate.
 *
 * Backends:
 *   local  one process, rank 0 of 1: every collective is a no-op or a copy; no MPI at run time.
 *   mpi    OpenMPI (or any MPI-3), in the module libupmoe-comm-mpi.so, loaded with dlopen only when a
 *          launcher started the process (mpirun / srun with PMI), so single-process runs and machines
 *          without MPI never load it. A NCCL backend (GPU buffers, bootstrapped over this one) fits the
 *          same table.
 *
 * No collective waits forever: a rank that is silent for `timeout_s` (dead, stopped) or alive but behind
 * for longer than the patience (upm_comm_set_patience) makes the others fail with UPM_ECOMM and a message
 * naming it. Every rank must call the collectives in the same order with the same sizes (as with MPI). */
#ifndef UPM_COMM_H
#define UPM_COMM_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef enum upm_comm_kind { UPM_COMM_AUTO = 0, UPM_COMM_LOCAL, UPM_COMM_MPI } upm_comm_kind;

typedef struct upm_comm_opts {
    upm_comm_kind kind;  /* AUTO: mpi when a launcher's environment is present, else local */
    double timeout_s;    /* a rank silent this long is dead or stopped (default 60; see set_patience) */
    /* Set asynchronously (SIGINT/SIGTERM): a collective that has waited `timeout_s` or is interrupted
     * this way gives up with the names of the missing ranks. NULL = not watched. */
    volatile sig_atomic_t *stop;
} upm_comm_opts;

typedef struct upm_comm upm_comm;
typedef int upm_comm_req; /* a pending non-blocking collective */

void upm_comm_opts_default(upm_comm_opts *o);
/* Which launcher (if any) started this process, from its environment: "mpirun", "srun (PMIx)", ... or
 * NULL. *world is the world size it announces (1 when none). */
const char *upm_comm_launcher(int *world);
int upm_comm_open(const upm_comm_opts *o, upm_comm **out, upm_err *err);
/* Finalises. With `failed` set, or after a failed collective, aborts the whole job instead (every rank
 * stops, exit code 1): a rank that gives up must not leave the others waiting. */
void upm_comm_close(upm_comm *c, int failed);

int upm_comm_rank(const upm_comm *c);
int upm_comm_world(const upm_comm *c);
int upm_comm_local_rank(const upm_comm *c);  /* rank among the ranks on this node */
int upm_comm_local_world(const upm_comm *c); /* ranks on this node */
const char *upm_comm_name(const upm_comm *c); /* "local", "mpi" */

/* buf[0..n) = the sum over ranks (in place), blocking. */
int upm_comm_allreduce_sum(upm_comm *c, float *buf, size_t n, upm_err *err);
/* buf[0..n) = the mean over ranks (in place), blocking: the sum times 1/world (a NCCL backend would use
 * ncclAvg). */
int upm_comm_allreduce_mean(upm_comm *c, float *buf, size_t n, upm_err *err);
/* The sum, started: buf must stay untouched until upm_comm_wait/upm_comm_test reports it done. */
int upm_comm_iallreduce_sum(upm_comm *c, float *buf, size_t n, upm_comm_req *req, upm_err *err);
/* Drives progress; *done = 1 once req completed (req is then released). */
int upm_comm_test(upm_comm *c, upm_comm_req req, int *done, upm_err *err);
int upm_comm_wait(upm_comm *c, upm_comm_req req, upm_err *err);
/* Max over ranks of a 64-bit integer (in place). */
int upm_comm_allreduce_max_i64(upm_comm *c, int64_t *v, size_t n, upm_err *err);
int upm_comm_broadcast(upm_comm *c, void *buf, size_t bytes, int root, upm_err *err);
int upm_comm_barrier(upm_comm *c, upm_err *err);
/* all[r * bytes ..] = rank r's `mine` (bytes each, the same on every rank). */
int upm_comm_allgather(upm_comm *c, const void *mine, size_t bytes, void *all, upm_err *err);
/* Variable-size: *all (caller frees) = every rank's bytes back to back, off[r]..off[r + 1] rank r's
 * (off has world + 1 entries, caller frees). */
int upm_comm_allgatherv(upm_comm *c, const void *mine, size_t bytes, char **all, size_t **off, upm_err *err);

/* What the ranks are doing, for error messages ("step 17: gradient all-reduce"). */
void upm_comm_set_phase(upm_comm *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* How long a rank that is alive (its heartbeats arrive) may stay behind the others before a collective
 * gives up on it: a long step is not a hang. The trainer sets it from the step times it has seen
 * (5 x the slowest step of any rank, at least the timeout); until then 10 x the timeout. A rank that
 * is silent for the timeout (dead, stopped) is given up on at once. */
void upm_comm_set_patience(upm_comm *c, double seconds);
double upm_comm_timeout(const upm_comm *c);
double upm_comm_patience(const upm_comm *c);
/* Seconds spent inside blocking collectives and upm_comm_wait since open. */
double upm_comm_wait_seconds(const upm_comm *c);

#endif
