/* The Slurm backend of the job queue (docs/jobs.md, "Slurm").
 *
 * `submit --backend slurm` queues the job in the catalog and hands it to sbatch. The batch script is a
 * constant file (<out>/job.sbatch: `exec "$@"`); everything else -- options, names, paths -- travels
 * as separate argv elements of sbatch and of the script, so no shell ever parses user text. The batch
 * runs `upmoe-jobs --catalog C slurm-run ID`, which claims the job like a local worker (attempt, lease,
 * fencing) and starts the trainer: directly for one rank, `srun --mpi=pmix` for several where Slurm's
 * MPI supports PMIx, else `mpirun` inside the allocation.
 *
 * Time limits and preemption: sbatch gets --signal=B:USR1@LEAD and --requeue. USR1 reaches slurm-run,
 * the trainer checkpoints at the next step, and slurm-run asks Slurm to requeue the batch job (scontrol
 * requeue); SIGTERM (preemption, scancel) also makes the trainer checkpoint and puts the job back in the
 * queue. The requeued batch starts from the top and the trainer resumes from its checkpoint.
 *
 * Following: list/status ask squeue about every queued or running Slurm job; a Slurm job that ended
 * while the catalog still expects it to run (scancel outside upmoe-jobs, a node failure, a time limit
 * hit before the checkpoint) is recorded as cancelled or failed. sacct needs slurmdbd, which many small
 * clusters lack; squeue (with -t all) knows a job for MinJobAge after it ends, which is enough here. */
#ifndef UPM_JOBS_SLURM_H
#define UPM_JOBS_SLURM_H

#include <stddef.h>

#include "catalog.h"
#include "queue.h"

typedef struct upm_slurm_opts {
    const char *jobs_prog;    /* absolute path of upmoe-jobs: the batch script runs it */
    const char *catalog;      /* absolute catalog path */
    const char *partition;    /* NULL: the cluster's default */
    const char *time_limit;   /* NULL: the partition's default (Slurm's formats: MM, HH:MM:SS, D-HH, ...) */
    int signal_lead_s;        /* USR1 this many seconds before the time limit (120) */
    int cpus_per_rank;        /* 0: Slurm's default */
    int gpus_per_rank;        /* 0: none; else --gpus-per-task, and the ranks compute on the cuda backend */
    const char *const *extra; /* more sbatch options, each passed as one argument */
    int nextra;
} upm_slurm_opts;

/* The sbatch command line for job j (NULL-terminated; free with upm_slurm_argv_free). */
char **upm_slurm_sbatch_argv(const upm_slurm_opts *o, const upm_job *j);
void upm_slurm_argv_free(char **argv);
/* Writes the job's batch script and runs sbatch; *slurm_job = Slurm's job id. */
int upm_slurm_submit(const upm_slurm_opts *o, const upm_job *j, char *slurm_job, size_t n, upm_err *err);

/* Slurm's view of a job: state ("PENDING", "RUNNING", "COMPLETED", ...; "" when Slurm does not know it
 * (any more)) and its reason ("None", "Resources", "BeginTime", ...). */
int upm_slurm_query(const char *slurm_job, char *state, size_t sn, char *reason, size_t rn, upm_err *err);
/* Whether a Slurm state is final (the job will not run again by itself). */
int upm_slurm_state_final(const char *state);
/* scancel [--batch --signal=SIG] JOB; signal NULL cancels the job. */
int upm_slurm_cancel(const char *slurm_job, const char *signal, upm_err *err);
/* scontrol requeue JOB */
int upm_slurm_requeue(const char *slurm_job, upm_err *err);
/* Records Slurm jobs that ended while the catalog expected them to run (see above); *changed counts them. */
int upm_slurm_follow(upm_catalog *cat, int *changed, upm_err *err);
/* Whether `srun --mpi=list` offers PMIx (Open MPI's ranks can then be started by srun). */
int upm_slurm_has_pmix(void);

/* Runs argv (PATH lookup), its stdout into out and stderr into errout (both NUL-terminated, truncated
 * to their size); *status = the wait status. Fails only when the program cannot be started. */
int upm_run_capture(char *const argv[], char *out, size_t on, char *errout, size_t en, int *status, upm_err *err);

#endif
