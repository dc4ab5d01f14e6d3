/* The local job worker: claims queued jobs from the catalog and runs each trainer as a child process
 * in its own process group, renewing the attempt's lease while it runs (docs/jobs.md). It meets the
 * trainer only in the catalog: the trainer is started with --job ID --attempt N and fences its own
 * writes; the worker reads the run's state when the child exits.
 *
 *   - the child gets SIGUSR1 if the worker dies (PR_SET_PDEATHSIG): it checkpoints and exits, and the
 *     job's lease then expires and another worker requeues and resumes it;
 *   - cancel: SIGUSR1 to the child's group (checkpoint and stop) -> state cancelled;
 *   - a trainer that dies is retried (resuming from its last checkpoint) up to the job's max_attempts;
 *   - a lost lease (another worker reaped the job) kills the child's group at once. */
#ifndef UPM_JOBS_WORKER_H
#define UPM_JOBS_WORKER_H

#include <signal.h>
#include <stdint.h>

#include "err.h"

typedef struct upm_worker_opts {
    const char *catalog;        /* resolved catalog path */
    const char *train;          /* the upmoe-train program (pretrain jobs) */
    const char *eval;           /* the upmoe-eval program (eval jobs) */
    int slots;                  /* jobs run at once (1) */
    int once;                   /* run at most one job, then return */
    double lease_s;             /* lease length (30 s); heartbeat every third of it */
    double poll_s;              /* how often to look for work and at children (0.2 s) */
    int quiet;
    volatile sig_atomic_t *stop; /* SIGINT/SIGTERM: children checkpoint, jobs go back to the queue */
    const char *backend;        /* the jobs it claims and reaps ("local") */
    int64_t only;               /* > 0: run this job only (the Slurm batch step), then return */
    const char *owner;          /* NULL: host:pid */
    int srun;                   /* ranks > 1 start with `srun --mpi=pmix` instead of `mpirun` */
    int *requeued;              /* if set: counts the jobs that went back to the queue after a stop */
    const char *stop_note;      /* why a stop happens, for the job's message ("the worker stopped") */
} upm_worker_opts;

void upm_worker_opts_default(upm_worker_opts *o);
int upm_worker_run(const upm_worker_opts *o, upm_err *err);

#endif
