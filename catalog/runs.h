/* Training runs and their metrics in the catalog (schema v2): the trainer creates a run, updates its
 * step and state as it goes, and writes one metrics row per (step, task) in short batched
 * transactions, so readers (sqlite3, upmoe-jobs) see progress while it trains. */
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

#endif
