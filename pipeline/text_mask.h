/* text_mask: BERT-style whole-word masking for masked language modelling over CLIP BPE ids.
 *
 * The algorithm, exactly:
 *  1. Words: a word is a maximal run of non-special tokens ending with a token whose string ends in "</w>"
 *     (CLIP's word boundary); a trailing run without one (a truncated text) is a word too. Special tokens
 *     (<|startoftext|>, <|endoftext|>, <|mask|>, <|gen|>, <|spe|>) belong to no word and are never masked.
 *  2. How many: with W words, k = floor(word_rate * W + 0.5), at least 1 when W > 0, at most W.
 *  3. Which: words are visited in a uniformly random order (a Fisher-Yates shuffle drawn lazily from rng);
 *     a word is taken when its tokens still fit into max_targets (upm_text_mask_ex), skipped otherwise (as
 *     BERT skips), until
 *     k words are taken or none are left.
 *  4. What: every token of a taken word, in position order, draws u = upm_rng_uniform(rng): u < p_mask ->
 *     <|mask|>; u < p_mask + p_random -> a uniform id in [0, 49406) (no special token; it may equal the
 *     original, as in BERT); else the token stays.
 * All randomness comes from the caller's stream (use purpose UPM_RNG_MASK), so the same stream gives the
 * same masking on any thread. */
#ifndef UPM_TEXT_MASK_H
#define UPM_TEXT_MASK_H

#include <stdint.h>

#include "bpe.h"
#include "err.h"
#include "rng.h"

typedef struct upm_text_mask_opts {
    double word_rate; /* share of words selected: 0.15 */
    double p_mask;    /* share of selected tokens that become <|mask|>: 0.8 */
    double p_random;  /* share that become a random id: 0.1 (the rest, 0.1, stay) */
} upm_text_mask_opts;

#define UPM_TEXT_MASK_DEFAULTS ((upm_text_mask_opts){0.15, 0.8, 0.1})

/* In place with the default rates, in the batch layout (pipeline/batch.h mlm_targets): ids[0..n) are
 * masked, targets[i] is the original id where position i was chosen and -1 elsewhere. Returns 0 or a
 * negative UPM_E* (an id outside the vocabulary). */
int upm_text_mask(const upm_bpe *bpe, int32_t *ids, int n, upm_rng *rng, int32_t *targets, upm_err *err);

/* The general form: masks ids[0..n) into masked[0..n) (masked may be ids itself) with opts (NULL = the
 * defaults), writes the chosen positions in increasing order and the original ids there into positions[]
 * and targets[] (room for max_targets each) and returns their count, or a negative UPM_E* (an id outside
 * the vocabulary, rates outside [0, 1]). */
int upm_text_mask_ex(const upm_bpe *bpe, const int32_t *ids, int n, const upm_text_mask_opts *opts, upm_rng *rng,
                     int32_t *masked, int32_t *positions, int32_t *targets, int max_targets, upm_err *err);

#endif
