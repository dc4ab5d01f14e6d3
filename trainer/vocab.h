/* Vocabulary targets (vocab-mlm, vocab-caption): the positions read out of the input pass and their
 * target token ids, the candidate tokens scored against them, and the encoding of those candidates by
 * the same encoder (each token v as the sequence [SPE, v], its feature read at SPE), in chunks.
 *
 * Candidates are either the full vocabulary (the paper's faithful mode) or, with sampled:N, the target
 * ids present in the batch plus N negatives drawn uniformly without replacement from the other regular
 * tokens; a sampled negative's logit gets the correction -log q (q = N / (regular tokens - targets), its
 * inclusion probability), so the sampled softmax estimates the full one (Jean et al. 2015). */
#ifndef UPM_VOCAB_H
#define UPM_VOCAB_H

#include <stdint.h>

#include "batch.h"
#include "blind_baseline.h"
#include "formulation.h"
#include "model.h"

typedef struct upm_vocab_batch {
    int M;                            /* read-out positions */
    int32_t *read_seq, *read_pos;     /* host [M] */
    int32_t *target_ids;              /* host [M] */
    int C;                            /* candidates */
    int32_t *cand;                    /* host [C] token ids */
    int32_t *target_idx;              /* host [M]: index of each target in cand */
    float *logq;                      /* host [C] correction, or NULL (full vocabulary) */
} upm_vocab_batch;

/* Read-outs of a vocab batch (readout: the formulation's, tasks/formulation.h): UPM_READ_MASKED = the
 * masked positions of the first text input (mlm_targets); UPM_READ_QUERIES (caption)
 * = every query position j < length, whose target is caption token j. `in` is the batch's input side. */
int upm_vocab_readouts(const upm_batch *b, const upm_seq_input *in, upm_readout_kind readout, upm_vocab_batch *vb,
                       upm_err *err);
/* Counts a batch's read-out targets into b for the input-blind baseline (tasks/blind_baseline.h): captions by
 * read-out position (a blind captioner may know where it is), MLM as one group. b NULL: nothing. */
int upm_vocab_blind_add(upm_blind_baseline *b, const upm_vocab_batch *vb, upm_readout_kind readout, upm_err *err);

/* Parses a --vocab-targets value: "full" (*sampled_n = 0) or "sampled:N" with 1 <= N <= 10^7; UPM_EUSAGE
 * naming the value otherwise. The one rule for every program that takes the option. */
int upm_vocab_targets_parse(const char *s, int *sampled_n, upm_err *err);
/* Candidates: the whole vocabulary [0, V) when sampled_n <= 0, else targets + sampled_n negatives drawn
 * from the stream (seed, step). */
int upm_vocab_candidates(upm_vocab_batch *vb, int V, int sampled_n, uint64_t seed, int64_t step, upm_err *err);
void upm_vocab_batch_free(upm_vocab_batch *vb);

typedef struct upm_vocab_encode_opts {
    uint8_t spe_attr, text_attr; /* target-side attribute bytes */
    int chunk;                   /* sequences per pass */
    const float *gate_noise;     /* per-pass noise table or NULL (token routing: for all C candidates, S = 2) */
    float drop_path;             /* 0: off */
    uint64_t seed;
    int64_t step;
    int task;                    /* the pass's task id (task routing; upm_seq_input.task) */
    int eval;                    /* evaluation passes (token routing: the evaluation capacity) */
} upm_vocab_encode_opts;

/* Forward: the candidates' features into V (backend [C, dim]). Backward (dV non-NULL): re-encodes each
 * chunk (the same noise and drop path) and back-propagates dV into the parameter gradients; a single
 * chunk still held by the pass is not re-encoded. */
int upm_vocab_encode(upm_model *m, upm_pass *p, const int32_t *cand, int C, const upm_vocab_encode_opts *o, float *V,
                     const float *dV, upm_err *err);

#endif
