/* Evaluation results in the catalog (schema v7, table eval_results; docs/evaluation.md): upmoe-eval writes
 * one row per (dataset, metric) of an evaluation in one transaction; `upmoe-catalog results` lists them.
 * results.c is the only file that reads or writes the table. */
#ifndef UPM_RESULTS_H
#define UPM_RESULTS_H

#include <stdint.h>

#include "catalog.h"

typedef struct upm_eval_record {
    int64_t run_id;          /* the checkpoint's run in this catalog; 0 = none (stored NULL) */
    char checkpoint[4096];   /* the step directory evaluated */
    int64_t step;
    char dataset[128], task[128], formulation[32];
    char metric[32];         /* "top1", "i2t_r5", "loss", ... */
    double value;
    double chance;           /* < 0: none (stored NULL) */
    int64_t samples;
    char at[40];             /* when stored (filled by reads) */
} upm_eval_record;

/* Stores n records in one transaction (all or nothing). With replace, earlier rows of the same run, step
 * and dataset as any of the records (run_id > 0) are deleted in that transaction first. */
int upm_results_put(upm_catalog *cat, const upm_eval_record *rows, int n, int replace, upm_err *err);
/* Task-interference matrices (schema v10, table interference; docs/analysis.md): one record per (block,
 * task i, task j) of a measurement. */
typedef struct upm_interference_record {
    int64_t run_id;        /* the checkpoint's run in this catalog; 0 = none (stored NULL) */
    char checkpoint[4096];
    int64_t step;
    char mixture[128];
    int block;             /* 1-based */
    char task_i[128], task_j[128];
    double value;          /* I(i, j) */
    int batches;
    char seed[24];
} upm_interference_record;
/* Stores n records of one measurement in one transaction, replacing earlier rows of the same checkpoint,
 * mixture, block, batches and seed. */
int upm_interference_put(upm_catalog *cat, const upm_interference_record *rows, int n, upm_err *err);
/* Dataset verifications (schema v11, table verifications): what `upmoe-catalog verify --store` found. */
typedef struct upm_verify_record {
    char dataset[128];
    char url_pattern[4096];
    int64_t shards, samples, bytes;
    int64_t bad_samples, bad_shards; /* structural: damaged or incomplete samples, shards that failed */
    int64_t undecodable;             /* samples whose content did not decode; -1: not decoded (stored NULL) */
    char at[40];                     /* when stored (filled by reads) */
} upm_verify_record;
/* Adds r inside the caller's write transaction. */
int upm_verify_add(upm_catalog *cat, const upm_verify_record *r, upm_err *err);
/* The newest verification of dataset into *r: 1 when there is one, 0 when none, or a negative UPM_E*. */
int upm_verify_last(upm_catalog *cat, const char *dataset, upm_verify_record *r, upm_err *err);
/* Records in storage order, of one dataset and/or one run (NULL / 0: all). */
typedef int (*upm_eval_record_fn)(const upm_eval_record *r, void *ctx);
int upm_results_foreach(upm_catalog *cat, const char *dataset, int64_t run_id, upm_eval_record_fn fn, void *ctx,
                        upm_err *err);

#endif
