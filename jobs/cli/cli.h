/* The commands of upmoe-jobs, one file each (jobs/cli/cmd_*.c), and the helpers they share (util.c).
 * Commands call the jobs/ and catalog/ libraries; none of them writes SQL. */
#ifndef UPM_JOBS_CLI_H
#define UPM_JOBS_CLI_H

#include <cjson/cJSON.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "catalog.h"
#include "err.h"
#include "queue.h"

#define PROG "upmoe-jobs"

/* Prints "upmoe-jobs: error: MSG"; returns the exit status (2 for usage errors, else 1). */
int fail(const upm_err *e);
/* Prints the usage error (fmt has one %s) and a pointer to --help; returns 2. */
int usage_error(const char *fmt, const char *arg);
/* An integer option in [lo, hi] into *out: 0, or the usage error's exit status (naming opt and s). */
int int_option(const char *opt, const char *s, long long lo, long long hi, long long *out);
/* A positive job id; -1 if s is not one. */
int parse_id(const char *s, int64_t *id);
/* The path of a program next to this one (upmoe-train may be overridden by $UPMOE_TRAIN); "" = this one. */
void sibling(const char *name, char *buf, size_t n);

/* The job's argument array a plus argv[first..argc) (refusing the options in the NULL-terminated
 * `refused`: the worker sets them; `hint` ends that message) and the submitter's UPMOE_BPE_VOCAB as
 * --bpe-vocab unless given, as JSON text (free it); a is deleted. NULL with *rc the exit status. */
char *job_arguments(cJSON *a, int argc, char **argv, int first, const char *const *refused, const char *hint,
                    int *rc);
/* Set by SIGINT/SIGTERM once cli_catch_stop() installed the handler (worker, logs -f). */
extern volatile sig_atomic_t cli_stop;
void cli_catch_stop(void);

/* Each command gets argv from its name on; returns the exit status. */
int cmd_submit(upm_catalog *cat, int argc, char **argv); /* cmd_submit.c */
int cmd_submit_eval(upm_catalog *cat, int argc, char **argv); /* cmd_submit_eval.c: submit eval */
int cmd_list(upm_catalog *cat, int argc, char **argv);   /* cmd_list.c */
int cmd_status(upm_catalog *cat, int argc, char **argv); /* cmd_status.c */
int cmd_cancel(upm_catalog *cat, int argc, char **argv); /* cmd_cancel.c: cancel, resume, retry */
int cmd_resume(upm_catalog *cat, int argc, char **argv);
int cmd_retry(upm_catalog *cat, int argc, char **argv);
int cmd_logs(upm_catalog *cat, int argc, char **argv);   /* cmd_logs.c */
int cmd_worker(const char *path, int argc, char **argv); /* cmd_worker.c: opens its own connections */

/* metrics ID [--task T] [--since STEP] [--csv|--json]; plot ID -o FILE.png|.svg (cmd_metrics.c) */
int cmd_metrics(upm_catalog *cat, int argc, char **argv);
int cmd_plot(upm_catalog *cat, int argc, char **argv);

/* ---- the Slurm backend's commands (cmd_slurm.c) ---- */

/* The sbatch options of `submit pretrain|eval --backend slurm`, validated, as the JSON object kept in the
 * job row. Both submit commands put SLURM_CLI_OPTIONS in their getopt table and hand each option to
 * slurm_cli_option. */
typedef struct slurm_cli {
    const char *partition, *time_limit;
    long signal_lead, cpus_per_rank, gpus_per_rank; /* signal_lead: 120 unless given */
    const char *extra[64];
    int nextra;
    int given; /* any of them was given */
} slurm_cli;
enum { SLURM_O_PART = 1000, SLURM_O_TIME, SLURM_O_LEAD, SLURM_O_CPUS, SLURM_O_SBATCH, SLURM_O_GPUS };
#define SLURM_CLI_OPTIONS                                                                                \
    {"partition", 1, 0, SLURM_O_PART}, {"time", 1, 0, SLURM_O_TIME}, {"signal-lead", 1, 0, SLURM_O_LEAD}, \
        {"cpus-per-rank", 1, 0, SLURM_O_CPUS}, {"sbatch-arg", 1, 0, SLURM_O_SBATCH},                    \
        {"gpus-per-rank", 1, 0, SLURM_O_GPUS}
/* getopt code c with its argument: 0 when it was a Slurm option and taken, the usage error's exit status
 * when its value is bad, -1 when c is not a Slurm option. */
int slurm_cli_option(int c, const char *arg, slurm_cli *s);
/* After parsing: 1 for --backend slurm, 0 for local, or (-) the usage error's exit status for another
 * backend or Slurm options without --backend slurm (returned negated). */
int slurm_cli_backend(const slurm_cli *s, const char *backend);
char *slurm_opts_json(const slurm_cli *s);
/* submit: hands queued job `id` to sbatch (withdrawn from the catalog if sbatch refuses it). */
int slurm_submit(upm_catalog *cat, int64_t id);
/* --dry-run: prints the sbatch command and what the batch step runs. */
void slurm_dry_run(const upm_catalog *cat, const slurm_cli *s, const char *name, int ranks, const char *out,
                   const char *train_cmd);
/* cancel / resume (retry = 0) / retry (1) of a Slurm job. */
int slurm_cancel(upm_catalog *cat, const upm_job *j);
int slurm_resubmit(upm_catalog *cat, const upm_job *j, int retry);
/* list/status: records Slurm jobs that ended behind the catalog's back (needs a writable connection:
 * opens one only when there are active Slurm jobs). Problems are warnings: progress still shows. */
void slurm_follow(const char *path, upm_catalog *ro);
/* status: Slurm's current state of the job, "" when not a Slurm job. */
void slurm_state_line(const upm_job *j, char *buf, size_t n);
/* slurm-run ID: the batch step (see jobs/slurm.h). */
int cmd_slurm_run(const char *path, int argc, char **argv);

#endif
