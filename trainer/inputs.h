/* From the pipeline's batches to the model's encoder passes: one side of a batch as a sequence input,
 * and the label texts of a label task (tokenized once per label set, encoded as a target pass every
 * step: [SPE, words..., <|endoftext|>]). */
#ifndef UPM_INPUTS_H
#define UPM_INPUTS_H

#include "batch.h"
#include "bpe.h"
#include "catalog.h"
#include "seqplan.h"

/* The segments of the given side of b, in batch order; spe_attr from the batch. */
int upm_batch_side_input(const upm_batch *b, upm_side side, upm_seq_input *in, upm_err *err);
/* Cloze prompts (GLUE as the paper poses it): a prompt marks where the answer is read with a <|spe|>
 * token inside its text. When some row of `in` has one, its feature is read there, the other rows' at
 * their leading <|spe|>: fills seq/pos (host, [in->nseq] each, owned by the caller, alive until the pass
 * ran), points in->read_seq/read_pos at them and returns 1; returns 0 and leaves in as it is otherwise. */
int upm_prompt_readouts(upm_seq_input *in, int32_t *seq, int32_t *pos);

typedef struct upm_label_texts {
    char set[UPM_NAME_MAX + 1];
    int C, L;
    int32_t *ids, *lengths; /* [C][L], [C]: the texts of the current step (upm_label_texts_pick) */
    uint8_t *attrs;         /* [C][L] */
    uint8_t spe_attr;
    /* every name of every label, tokenized once: class c's names are variants first[c] .. first[c]+count[c]-1 */
    int nvariants;
    int32_t *var_ids, *var_len, *first, *count;
} upm_label_texts;

/* Tokenizes every name of every label of set `set` for task t, texts cut to the task's
 * max_target_len - 1 tokens (the model prepends SPE) with <|endoftext|> kept last; L is the longest
 * name's length (padding beyond it would be masked work); the current texts are the first (canonical)
 * names. */
int upm_label_texts_load(upm_catalog *cat, const upm_task *t, const char *set, upm_bpe *bpe, upm_label_texts *out,
                         upm_err *err);
void upm_label_texts_free(upm_label_texts *lt);
/* The texts of one training step: for a label with synonyms (ImageNet-21k's WordNet synonyms) one name
 * drawn per class from the stream (seed, step, class), as the reference implementation does per batch;
 * step < 0 takes the canonical names (evaluation). */
void upm_label_texts_pick(upm_label_texts *lt, uint64_t seed, int64_t step);
/* The label texts as a target-pass input. */
void upm_label_texts_input(const upm_label_texts *lt, upm_seq_input *in);

#endif
