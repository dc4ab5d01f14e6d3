/* The CPU training loop behind upmoe-train: batches from the sampler, the encoder passes of each
 * formulation, the loss, the backward, clipping and AdamW, per-step per-task metrics in the catalog,
 * a progress line, checkpoints (periodic, final, and on SIGINT/SIGTERM) and exact resume. */
#ifndef UPM_TRAIN_H
#define UPM_TRAIN_H

#include <signal.h>
#include <stdint.h>

#include "catalog.h"
#include "comm.h"
#include "config.h"
#include "optim.h"
#include "records.h"

typedef struct upm_train_opts {
    const char *catalog;  /* NULL: the default catalog */
    const char *mixture;
    const char *out_dir;  /* checkpoints and state */
    /* The options that define the run, as a JSON array of strings (["--lr", "0.001", ...]), kept in every
     * checkpoint's state.json as "args" so that a resume continues the run that was started (upmoe-train
     * --resume DIR takes them from there), or NULL. */
    const char *run_args;
    int resume;           /* continue from the newest checkpoint under out_dir */
    const char *name;     /* run name (default: the out dir's base name) */
    const char *model_name; /* "ti", "s", "b", "l" or "custom" (for the runs table) */
    const char *bpe_vocab;
    upm_model_config model;
    upm_optim_config optim;
    int64_t steps;
    uint64_t seed;
    const char *backend;  /* backend name (model/backend.h; NULL = upm_backend_default()) */
    int threads;          /* backend threads (0 = all) */
    const char *precision; /* the linears' matmuls: "fp32" or "bf16"; NULL: bf16 on cuda, else fp32 */
    int loader_threads;
    int image_size;
    const char *dump_dir; /* --dump-batches: step files for a replay (batchdump.h), or NULL */
    upm_augment augment; /* training augmentation of datasets that do not choose their own (paper) */
    int stage2_size;      /* > 0: images of this size from step stage2_at * steps on (paper: 224 px) */
    double stage2_at;     /* fraction of the steps (paper: 0.9) */
    int batch;            /* > 0: every dataset's batch size */
    double batch_scale;   /* > 0: every dataset's catalog batch size times this */
    int log_every, checkpoint_every, keep, metrics_every;
    int vocab_sampled; /* vocab tasks: 0 = score against the full vocabulary, N = targets + N sampled */
    int vocab_chunk;   /* candidate sequences encoded per pass (4096) */
    int quiet;
    volatile sig_atomic_t *stop; /* set asynchronously to checkpoint and stop after the current step */
    /* Data parallel (docs/distributed.md): the ranks, or NULL for one process. */
    upm_comm *comm;
    int nccl; /* gradient sums in device memory (NCCL): -1 auto (on the cuda backend with several ranks), 0 off
                 (over the host communicator), 1 on (a usage error where the backend has no device stream) */
    int readers;            /* reader threads per dataset stream (0: 2); part of the data order */
    int shuffle_block;      /* shuffle block size (0: 256); part of the data order */
    int reduce_all_experts; /* reduce the gradients of experts no rank used, too (for measurements) */
    int no_overlap;         /* reduce the gradients after the backward pass, not during it (for measurements) */
    int no_prefetch;        /* decode each step's batch when it is needed, not during the step before */
    int64_t job, attempt;   /* > 0: started by a job worker (upmoe-jobs): every catalog write is fenced */
    /* Evaluation during training (evaluate.c): after every eval_every steps and the last, the full pass over
     * each of eval_datasets (at most eval_limit samples each when > 0), results stored with the run and
     * step. Side-effect free: the training's bits are those of a run without it. */
    const char *const *eval_datasets;
    int n_eval_datasets;
    int eval_every;
    int64_t eval_limit;
} upm_train_opts;

void upm_train_opts_default(upm_train_opts *o);
/* The first step of the second stage. */
int64_t upm_train_stage2_step(const upm_train_opts *o);
/* Trains; 0 when the run finished or was stopped cleanly (after a checkpoint). */
int upm_train(const upm_train_opts *o, upm_err *err);

typedef struct upm_eval_row {
    char dataset[128], task[128];
    int64_t batches, samples, scored; /* scored: the predictions behind the accuracy (masked tokens, ...) */
    double loss, accuracy; /* means over batches; accuracy -1 where undefined (pair: image-to-text R@1) */
    double chance;         /* mean over batches of a uniform guess's accuracy among the candidates */
    double accuracy_t2i;   /* pair: text-to-image R@1; -1 for other formulations */
    double blind;          /* vocab formulations: the input-blind baseline's accuracy on the scored targets
                              (tasks/blind_baseline.h); -1 for other formulations */
} upm_eval_row;

/* Sampled evaluation (upmoe-eval --steps N, evaluate.c): the weights of checkpoint directory `checkpoint`
 * (model configuration from its state.json) on `steps` batches drawn from o->mixture as training draws
 * them, with evaluation transforms, no gate noise and no drop path; nothing is written. Pair datasets
 * are scored as retrieval with the batch as the gallery, both ways, every text equal to a sample's
 * caption counting as its ground truth (tasks/retrieval.h). *rows (caller frees; NULL on failure) holds one row per
 * dataset drawn. A quick look; the paper's protocol is upm_evaluate_full. */
int upm_evaluate(const upm_train_opts *o, const char *checkpoint, int64_t steps, upm_eval_row **rows, int *nrows,
                 upm_err *err);

/* ---- full-pass evaluation (evaluate.c; docs/evaluation.md) ---- */

#define UPM_EVAL_MAX_METRICS 8
typedef struct upm_eval_metric {
    char name[24];  /* "top1", "top5", "i2t_r1", ..., "recall_mean", "token_accuracy", "perplexity" */
    double value;
    double chance;  /* the value of a uniform guess; < 0 where it has none */
} upm_eval_metric;

typedef struct upm_eval_result {
    char dataset[128], task[128];
    upm_formulation formulation;
    int64_t samples; /* scored samples: every usable sample of the split (or of --limit) once */
    int64_t skipped; /* samples or bad shards left out, each reported */
    int64_t scored;  /* predictions behind the metrics (samples, queries, tokens) */
    int64_t captions; /* pair: the gallery's captions (a sample may carry several) */
    double loss;     /* mean cross-entropy without label smoothing over the scored predictions; < 0: n/a */
    double seconds;          /* wall time of the pass (not part of the deterministic output) */
    double generate_seconds; /* vocab-caption: of it, generating the captions */
    int nmetrics;
    upm_eval_metric metrics[UPM_EVAL_MAX_METRICS];
    /* label, with upm_eval_opts.predictions: each scored sample's class and the top-ranked class, in pass
     * order (caller frees both with upm_eval_results_free) */
    int32_t *labels, *predicted;
    int64_t npredicted;
    /* vocab-caption, with upm_eval_opts.predictions: each sample's generated caption and its reference
     * field (captions one per line), in pass order */
    char **generated, **references;
    int64_t ngenerated;
} upm_eval_result;

/* Progress of the dataset being evaluated: samples done and the split's recorded size (-1: unknown). */
typedef void (*upm_eval_progress_fn)(void *ctx, const char *dataset, int64_t done, int64_t total);

typedef struct upm_eval_opts {
    const char *const *datasets; /* catalog datasets, evaluated in this order */
    int ndatasets;
    int64_t limit;               /* > 0: the first `limit` samples of each dataset only */
    upm_eval_progress_fn progress;
    void *progress_ctx;
    int predictions;             /* keep the per-sample predictions (label classes, generated captions) */
    /* caption generation (trainer/generate.h); 0 = the defaults: 2 beams (the official code's), the
     * task's caption length, no length penalty, the key/value cache */
    int beams, max_len;
    double length_penalty;
    int reencode;
    /* a video label task's views, whose class probabilities are averaged: crops (1 or 3) x clips; 0 = the
     * defaults, 3 crops x 1 clip */
    int video_crops, video_clips;
} upm_eval_opts;

/* Evaluates checkpoint `checkpoint` on every sample of each dataset once, in shard order, with the
 * evaluation transforms, batched (o->batch, else the dataset's catalog batch size), and the metrics of
 * its formulation (tasks/formulation.h): label top-1/top-5 with the label texts encoded once (two classes:
 * also F1 of class 1 and Matthews' correlation, as GLUE reports them); pair
 * R@1/5/10 both ways over the whole split as the gallery; vocab token accuracy, and perplexity when
 * scored against the full vocabulary. Deterministic: the same inputs give the same bits. Nothing is
 * written. *out (caller frees) holds one result per dataset. */
int upm_evaluate_full(const upm_train_opts *o, const char *checkpoint, const upm_eval_opts *eo, upm_eval_result **out,
                      int *nout, upm_err *err);
void upm_eval_results_free(upm_eval_result *r, int n);
/* Every named dataset exists and has shard URLs; else one error naming all those without (a preset's
 * evaluation sets start as placeholders). */
int upm_eval_check_datasets(upm_catalog *cat, const char *const *names, int n, upm_err *err);
/* Stores results in the catalog (catalog/results.h) with run_id (0: none), step and checkpoint, one row per
 * dataset and metric and the loss, in one transaction. With replace, rows of the same run, step and
 * dataset stored earlier go (a resumed run that evaluates a step again). *stored: rows written. */
int upm_eval_results_store(upm_catalog *cat, int64_t run_id, int64_t step, const char *checkpoint,
                           const upm_eval_result *res, int n, int replace, int *stored, upm_err *err);

#endif
