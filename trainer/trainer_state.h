/* The training loop's state, shared by train.c, dp.c and evaluate.c (private to trainer/). */
#ifndef UPM_TRAINER_STATE_H
#define UPM_TRAINER_STATE_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "blind_baseline.h"
#include "comm.h"
#include "devcomm.h"
#include "gradsync.h"
#include "inputs.h"
#include "loader.h"
#include "prefetch.h"
#include "model.h"
#include "optim.h"
#include "runs.h"
#include "train.h"
#include "vocab.h"

typedef struct label_cache {
    char dataset[UPM_NAME_MAX + 1];
    upm_label_texts lt;
} label_cache;

typedef struct trainer {
    const upm_train_opts *o;
    int eval;                /* forward only: no noise, no drop path, no updates, nothing written */
    int grads;               /* with eval: training passes and their gradients in m->g (no noise, no drop
                                path, no update), for analyses (upmoe-analyze interference) */
    const char *eval_ckpt;
    upm_model_config cfg;
    upm_catalog *cat;
    upm_backend *be;
    upm_model *m;
    upm_optim opt;
    int have_opt;
    upm_loader *loader;
    upm_prefetch *prefetch; /* the next step's batch decoded during this one (NULL: --no-prefetch, eval) */
    upm_bpe *bpe;
    upm_pass *pass_in;  /* the inputs' pass (images, video, text) */
    upm_pass *pass_tg;  /* the target texts' pass (label names, paired captions) */
    upm_pass *pass_voc; /* the vocabulary candidates' passes (vocab-mlm, vocab-caption) */
    upm_batch batch;
    int64_t run_id, step;
    int image_size; /* of the open loader */
    label_cache *labels;
    int nlabels;
    /* backend buffers that grow with the batch: M input features read out (B for label and pair), C target
     * candidates (labels, captions or vocabulary entries) */
    float *dU;       /* [M, D] gradient of the input features */
    float *dV;       /* [C, D] gradient of the target features */
    float *logits;   /* [M, C] */
    float *V;        /* [C, D] vocabulary features (vocab formulations) */
    float *logq;     /* [C]    log-Q correction of sampled vocabulary candidates */
    int32_t *dlabels; /* [M]   the target column of each row */
    size_t cap_u, cap_v, cap_l, cap_lab, cap_V, cap_logq; /* their capacities in bytes */
    int32_t *readout; /* host [2][B]: read-out sequences and positions of cloze prompts (upm_prompt_readouts) */
    size_t cap_readout;
    float *noise[2]; /* host [layers][gates][256][E]: gate noise of the two passes (token routing:
                        [layers][gates][nseq][S][E], model.h upm_pass_opts) */
    size_t cap_noise[2]; /* token routing: floats allocated in noise[i] */
    float *keep[2];  /* host [layers][2][B]: drop-path keep factors of the two passes */
    size_t cap_keep[2];
    upm_metric_row *pending;
    int npending, cap_pending;
    double t0;
    int64_t step0;
    /* data parallel */
    upm_comm *comm;
    int rank, world;
    upm_gradsync *gs;
    upm_devcomm *dev;                 /* gradient sums in device memory (NCCL), or NULL */
    upm_gradsync_stats gst;           /* the last step's */
    double dp_steps, dp_step_s, dp_comm_s, dp_sync_s, dp_wait_s, dp_reduced, dp_all; /* sums for the summary */
    double slowest_step; /* seconds, any rank */
    struct rank_rec *recs;            /* world records of the last step */
    double route_balance, route_dropped; /* token routing: the last step's (upm_metric_row), < 0: none */
    int ckpt_cpu_threads; /* the resumed checkpoint's backend cpu_threads (0: not recorded) */
    upm_blind_baseline *blind; /* evaluation: where vocab steps count their targets (NULL: nowhere) */
} trainer;

/* What each rank tells the others after a step. */
typedef struct rank_rec {
    char task[128], dataset[128];
    double loss, weighted_loss, accuracy, samples, seconds;
    double balance_loss, dropped; /* token routing; < 0: none */
    int64_t stop;
} rank_rec;

/* dp.c */
/* After a step: every rank's record to every rank; rank 0 appends the step's metrics rows (see dp.c).
 * *any_stop: some rank asked to stop. */
int dp_exchange(trainer *t, const upm_metric_row *mine, double seconds, int stop, int *any_stop, upm_err *err);
/* Every rank's weights are the same (checksums), else an error naming the first rank that differs. */
int dp_check_same_weights(trainer *t, upm_err *err);
/* This rank's cursor from a checkpoint's cursors (regrouped for another world size: *regrouped = its size). */
int dp_pick_cursor(trainer *t, const cJSON *cursors, char **cursor, int *regrouped, upm_err *err);
/* Rank 0's end-of-run summary of a data-parallel run. */
void dp_summary(const trainer *t);

/* train.c, for evaluate.c */

/* Opens the trainer: with eval_ckpt, its weights for evaluation (no optimizer, nothing written); the
 * training loader is opened only when o->mixture is set. */
int upm_trainer_open(trainer *t, const upm_train_opts *o, const char *eval_ckpt, upm_err *err);
void upm_trainer_close(trainer *t);
/* One step (or, in evaluation, one forward) on the batch in t->batch; fills row. */
int upm_trainer_batch_step(trainer *t, upm_metric_row *row, upm_err *err);
/* The label texts of b's dataset (canonical names in evaluation), cached per dataset. */
const upm_label_texts *upm_trainer_labels(trainer *t, const upm_batch *b, upm_err *err);
/* evaluate.c: the training's evaluation after this step (o->eval_datasets), stored by rank 0. */
int upm_trainer_eval_step(trainer *t, upm_err *err);
/* Reads in's features at its rows' prompt <|spe|> where the input has one (inputs.h); UPM_ENOMEM. */
int upm_trainer_prompt_readouts(trainer *t, upm_seq_input *in);
/* task_ids.c: the model's task table for the mixture (fresh: sized by --task-slots or the mixture's tasks;
 * resumed: tasks new to the model get free slots), for task routing and task-specific weights. */
int upm_trainer_task_table(trainer *t, int fresh, upm_err *err);
/* The id of task `task` in the model's table (0 for models without one); UPM_EINVAL for a task the model
 * never met, naming the tasks it knows. */
int upm_trainer_task_id(trainer *t, const char *task, int *id, upm_err *err);
/* upm_batch_side_input with the pass's task id. */
int upm_trainer_side_input(trainer *t, const upm_batch *b, upm_side side, upm_seq_input *in, upm_err *err);
/* Grows the backend buffer *p (capacity *cap bytes) to at least bytes; UPM_ENOMEM on failure. */
int upm_trainer_ensure(upm_backend *be, void **p, size_t *cap, size_t bytes);

#endif
