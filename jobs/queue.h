/* The job queue in the catalog (schema v4: tables jobs and job_events; docs/jobs.md).
 *
 * States: queued -> running -> succeeded | failed | cancelled, and running -> queued when the
 * attempt's lease expires or its trainer died with attempts left. Every claim is one BEGIN IMMEDIATE
 * transaction that increments `attempt` and sets owner + lease; every later write about that attempt
 * (heartbeat, finish, the trainer's progress through upm_catalog_fence) is guarded by (id, attempt), so
 * a worker that lost its lease changes nothing. Every transition appends a job_events row.
 *
 * queue.c is the only file that reads or writes the tables jobs and job_events (apart from the fence
 * check of catalog/db.c, which reads a job's state and attempt when a fenced connection begins a write:
 * the catalog cannot call up into jobs/); the worker, the Slurm backend and upmoe-jobs call these. */
#ifndef UPM_JOBS_QUEUE_H
#define UPM_JOBS_QUEUE_H

#include <stdint.h>

#include "catalog.h"

#define UPM_JOB_STATE_MAX 16

typedef struct upm_job {
    int64_t id;
    char name[201];
    char kind[16];
    char state[UPM_JOB_STATE_MAX];
    int64_t priority;
    char backend[16];
    int ranks;
    char *argv_json; /* the trainer's arguments, a JSON array (owned) */
    char out_dir[4096];
    char log_path[4096];
    int64_t run_id; /* 0 = none yet */
    int64_t attempt, max_attempts;
    char owner[128];
    double lease_until;
    int64_t pid;
    char slurm_job[64];
    int cancel_requested;
    char message[1024];
    char submitted_at[40], started_at[40], finished_at[40];
    char *backend_opts; /* JSON object ("{}" when none; owned) */
} upm_job;

void upm_job_free(upm_job *j);

typedef struct upm_job_submit {
    const char *name, *kind, *backend;
    int64_t priority;
    int ranks;
    int64_t max_attempts;
    const char *argv_json; /* trainer arguments, without --out / --catalog (the worker adds them) */
    const char *out_dir;   /* NULL: <catalog folder>/runs/job-<id> */
    const char *backend_opts; /* JSON object or NULL (Slurm: partition, time, signal_lead, cpus_per_rank, extra) */
} upm_job_submit;

int upm_job_submit_new(upm_catalog *cat, const upm_job_submit *s, int64_t *id, upm_err *err);
int upm_job_get(upm_catalog *cat, int64_t id, upm_job *out, upm_err *err);
typedef int (*upm_job_fn)(const upm_job *j, void *ctx);
/* Jobs in id order; state NULL = all. */
int upm_job_foreach(upm_catalog *cat, const char *state, upm_job_fn fn, void *ctx, upm_err *err);
/* *any = 1 when a Slurm job is queued or running with a Slurm id (something for upm_slurm_follow). */
int upm_job_slurm_active(upm_catalog *cat, int *any, upm_err *err);

/* Claims the next queued job (highest priority, then oldest) of `backend` for `owner` with a lease of
 * lease_s seconds -- or, with only > 0, that job if it is queued; *got = 0 when none is queued. The
 * claimed job is returned in *out (running, its new attempt). */
int upm_job_claim(upm_catalog *cat, const char *backend, int64_t only, const char *owner, double lease_s, upm_job *out,
                  int *got, upm_err *err);
/* Extends the lease of (id, attempt) and records the child's pid; *lost = 1 when the attempt no longer owns
 * the job (reaped, or cancelled and finished by someone else). *cancel = a cancel was requested. */
int upm_job_heartbeat(upm_catalog *cat, int64_t id, int64_t attempt, double lease_s, int64_t pid, int *lost,
                      int *cancel, upm_err *err);
/* Ends attempt (id, attempt): state "succeeded", "cancelled", "failed", "retry" (back to queued when
 * attempts are left, else failed) or "requeue" (back to queued without using up an attempt: the worker
 * was stopped). No-op with *lost = 1 when the attempt no longer owns the job. */
int upm_job_finish(upm_catalog *cat, int64_t id, int64_t attempt, const char *state, const char *message, int *lost,
                   upm_err *err);
/* Requeues (or fails, when out of attempts) running jobs of `backend` whose lease expired; *n = how many. */
int upm_job_reap(upm_catalog *cat, const char *backend, int *n, upm_err *err);
/* Cancel: a queued job is cancelled at once; a running one gets cancel_requested (its worker stops the
 * trainer with a checkpoint). A finished job is refused (UPM_EINVAL, nothing changed). */
int upm_job_cancel(upm_catalog *cat, int64_t id, const char *why, upm_err *err);
/* resume: a cancelled or failed job goes back to the queue (it continues from its last checkpoint);
 * retry: the same, with a fresh attempt budget. Other states are refused. */
int upm_job_requeue(upm_catalog *cat, int64_t id, int fresh_attempts, upm_err *err);
/* Slurm backend: records the Slurm job that will run job `id` (queued). requeue = 0: a new job, which
 * must be queued; 1 (resume) or 2 (retry, fresh attempts): a cancelled or failed job goes back to the
 * queue with its new Slurm job. Refused otherwise (UPM_EINVAL, nothing changed). */
int upm_job_set_slurm(upm_catalog *cat, int64_t id, const char *slurm_job, int requeue, upm_err *err);
/* Slurm backend: Slurm says job `slurm_job` ended, so job `id` ends as `state` -- only if it still belongs
 * to that Slurm job and no attempt holds a live lease (queued, or running with an expired lease). */
int upm_job_end_outside(upm_catalog *cat, int64_t id, const char *slurm_job, const char *state, const char *message,
                        int *changed, upm_err *err);
/* Removes a job that never started (queued, attempt 0), e.g. when sbatch refused it. */
int upm_job_withdraw(upm_catalog *cat, int64_t id, upm_err *err);
/* Appends an event (in its own transaction). */
int upm_job_event(upm_catalog *cat, int64_t id, int64_t attempt, const char *event, const char *detail, upm_err *err);

/* Unix time, seconds. */
double upm_job_now(void);

#endif
