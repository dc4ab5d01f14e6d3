/* `upmoe-train --dump-batches DIR`: the run's initial weights (DIR/initial.safetensors, with the model and
 * optimizer configuration as metadata) and every step as a step file (DIR/step-NNNNNNNN.safetensors,
 * stepfile.h) holding exactly what the step trained on and what it measured (loss, learning rate,
 * gradient norm), so an independent implementation can replay the run (tests/trainer/long_oracle.py). */
#ifndef UPM_BATCHDUMP_H
#define UPM_BATCHDUMP_H

#include "batch.h"
#include "model.h"
#include "optim.h"
#include "vocab.h"

int upm_batchdump_initial(const char *dir, const upm_model *m, const upm_optim_config *oc, upm_err *err);

/* One step. tg: the target pass (label texts, paired targets) or NULL for the vocabulary formulations,
 * which give vb and the vocabulary pass's attribute byte instead. noise: the per-pass gate-noise tables
 * (NULL without noise). */
typedef struct upm_batchdump_step {
    int64_t step;
    const upm_batch *b;
    const upm_seq_input *in, *tg;
    const upm_vocab_batch *vb;
    uint8_t vocab_attr;
    const float *noise[2];
    double loss, lr, grad_norm;
} upm_batchdump_step;

int upm_batchdump_step_write(const char *dir, const upm_model *m, const upm_batchdump_step *s, upm_err *err);

#endif
