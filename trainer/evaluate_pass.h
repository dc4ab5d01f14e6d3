/* The full evaluation pass's pieces shared by its files (evaluate.c: the driver, label and pair;
 * evaluate_vocab.c: the vocabulary formulations and caption generation). Not a public header. */
#ifndef UPM_EVALUATE_PASS_H
#define UPM_EVALUATE_PASS_H

#include "evalset.h"
#include "trainer_state.h"

typedef struct pass_ctx {
    trainer *t;
    upm_evalset *es;
    const upm_eval_opts *eo;
    int64_t total;
    int batch; /* samples per batch at most */
} pass_ctx;

/* Forward passes of evaluation: no gate noise, no drop path. */
static const upm_pass_opts no_noise = {.train = 0};

/* Appends metric `name` (chance < 0: none) to r. */
void upm_eval_add_metric(upm_eval_result *r, const char *name, double value, double chance);
/* The progress callback, with the dataset's samples so far. */
void upm_eval_tick(const pass_ctx *p);
/* Per-row scores of one batch: the label's rank (ties to the lower index), its cross-entropy and the
 * top-ranked class (pred[i], when pred is not NULL; -1 for an unscored row). */
void upm_eval_score_rows(const float *logits, int B, int C, const int32_t *labels, int64_t *top1, int64_t *top5,
                         int64_t *n, double *ce, int32_t *pred);
/* vocab-mlm and vocab-caption (evaluate_vocab.c). */
int upm_eval_vocab(pass_ctx *p, upm_eval_result *r, upm_err *err);

#endif
