/* Training runs and their metrics in the catalog (schema v2): the trainer creates a run, updates its
 * step and state as it goes, and writes one metrics row per (step, task) in short batched
 * transactions, so readers (sqlite3, upmoe-jobs) see progress while it trains.
 *
 * runs.c is the only file that reads or writes the tables runs and metrics: the trainer writes through
 * the first group of functions, upmoe-jobs and the job worker read through the second. */
#ifndef UPM_RUNS_H
#define UPM_RUNS_H

#include <stdint.h>

#include "catalog.h"

typedef struct upm_metric_row {
    int64_t step;
    char task[128], dataset[128];
    double loss, weighted_loss, accuracy; /* accuracy < 0: not defined for this task (stored NULL) */
    int64_t samples;
    double lr, grad_norm, samples_per_s;
    char ranks[256]; /* the ranks that trained this task in this step, "0 3 5" ("" = unknown) */
    double chance;   /* the accuracy of a uniform guess among the step's candidates (not stored) */
    double accuracy_t2i; /* pair, in evaluation: text-to-image R@1 (accuracy is image-to-text); else < 0; not stored */
    int64_t scored;      /* the predictions the accuracy is over (rows, masked tokens, caption tokens); not stored */
    /* token routing (has_route): the step's mean balance loss per gate evaluation (E sum f P, 1 = uniform) and
     * the share of (token, expert) assignments dropped past capacity; stored NULL without has_route */
    int has_route;
    double balance_loss, dropped;
} upm_metric_row;

int upm_run_create(upm_catalog *cat, const char *name, const char *mixture, const char *model, const char *config_json,
                   const char *out_dir, int64_t total_steps, int64_t *id, upm_err *err);
/* state: running, finished, interrupted or failed; checkpoint and message may be NULL (kept). */
int upm_run_update(upm_catalog *cat, int64_t id, const char *state, int64_t step, const char *checkpoint,
                   const char *message, upm_err *err);
/* Inserts (or replaces, for recomputed steps) rows in one transaction. */
/* A run resumed from its checkpoint at `step`: state running, and the metrics rows of the steps after
 * the checkpoint (written before the crash, about to be recomputed) removed in the same transaction, so
 * every step's row exists exactly once. */
int upm_run_resume(upm_catalog *cat, int64_t id, int64_t step, upm_err *err);
/* Links run `id` to job `job` (both rows), for a trainer started by a job worker. */
int upm_run_link_job(upm_catalog *cat, int64_t id, int64_t job, upm_err *err);
int upm_metrics_put(upm_catalog *cat, int64_t run_id, const upm_metric_row *rows, int n, upm_err *err);
/* Whether run id exists (for resume). */
int upm_run_exists(upm_catalog *cat, int64_t id, int *exists, upm_err *err);

/* ---- reading runs and metrics (upmoe-jobs status, metrics, plot; the job worker) ---- */

/* A run's progress. found = 0 when there is no such run (the rest then zero). The rates come from the
 * last 20 steps' rows (a resume's first slow steps age out); < 0 when there are none yet. */
typedef struct upm_run_progress {
    int found;
    char state[32];
    int64_t step, total_steps;
    char last_checkpoint[4096];
    double samples_per_s; /* samples over the window / their seconds */
    double s_per_step;    /* mean seconds per step over the window */
} upm_run_progress;
int upm_run_progress_get(upm_catalog *cat, int64_t run_id, upm_run_progress *p, upm_err *err);

/* The latest loss of each task of the run, in task order. */
typedef int (*upm_task_loss_fn)(const char *task, double loss, void *ctx);
int upm_run_latest_losses(upm_catalog *cat, int64_t run_id, upm_task_loss_fn fn, void *ctx, upm_err *err);

/* Stored metrics rows as cells, in the column order of upm_metric_columns: steps >= since, of one task
 * or all (task NULL), by step then task. A cell's text is SQLite's rendering of the stored value (NULL
 * for a NULL cell), so a CSV reads back exactly what is stored. */
#define UPM_METRIC_NCOLS 12
extern const char *const upm_metric_columns[UPM_METRIC_NCOLS];
typedef enum upm_cell_type { UPM_CELL_NULL, UPM_CELL_NUMBER, UPM_CELL_TEXT } upm_cell_type;
typedef struct upm_cell {
    upm_cell_type type;
    double num;       /* UPM_CELL_NUMBER */
    const char *text; /* valid during the callback */
} upm_cell;
typedef int (*upm_metric_cells_fn)(const upm_cell *cells, void *ctx);
int upm_metrics_foreach(upm_catalog *cat, int64_t run_id, int64_t since, const char *task, upm_metric_cells_fn fn,
                        void *ctx, upm_err *err);

/* The tasks that have metrics in the run, in name order (at most max, *n of them). */
int upm_metrics_tasks(upm_catalog *cat, int64_t run_id, char (*tasks)[128], int max, int *n, upm_err *err);
/* (step, value) in step order: task's loss, or with task NULL the learning rate of each step. */
typedef int (*upm_step_value_fn)(int64_t step, double value, void *ctx);
int upm_metrics_series(upm_catalog *cat, int64_t run_id, const char *task, upm_step_value_fn fn, void *ctx,
                       upm_err *err);

#endif
