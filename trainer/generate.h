/* Caption generation for evaluation: beam search (greedy = one beam) over the vocabulary features, as the
 * official Uni-Perceiver searcher does it (docs/evaluation.md, "Captions"): at step 0 one sequence per
 * sample, then `beams`; each step keeps the best `beams` continuations of a sample by summed log-probability
 * (log-softmax of s * cos(query, vocabulary token)); a finished sequence (it chose <|endoftext|>) only
 * continues with <|endoftext|> at no cost; after max_len steps the best beam by summed log-probability,
 * divided by (tokens + 1)^length_penalty when length_penalty > 0, is the caption. Ties go to the lower
 * (beam, token) index. Steps run on the key/value cache (model/decode.h), or, with reencode, as full caption
 * passes over the caption so far (the baseline the cache is measured against; same captions). */
#ifndef UPM_GENERATE_H
#define UPM_GENERATE_H

#include <stdint.h>

#include "model.h"

typedef struct upm_generate_opts {
    int beams;             /* >= 1 */
    int max_len;           /* tokens at most, the end token included */
    double length_penalty; /* 0: none */
    int reencode;          /* full passes instead of the cache */
    int32_t end_id;        /* <|endoftext|> */
    int32_t query_id;      /* <|gen|> */
    uint8_t text_attr;     /* the caption's attribute byte */
} upm_generate_opts;

typedef struct upm_generator upm_generator;

/* A generator for batches of at most `samples` samples. */
int upm_generator_new(upm_model *m, int samples, const upm_generate_opts *o, upm_generator **out, upm_err *err);
void upm_generator_free(upm_generator *g);
/* One caption per sample of prefix (the input side without its caption segments): tokens[i * max_len ..]
 * and lens[i] (up to, without, the end token). V: backend [C, dim] features of the candidate tokens 0..C-1;
 * scale: the logit temperature. Deterministic. */
int upm_generator_run(upm_generator *g, const upm_seq_input *prefix, const float *V, int C, float scale,
                      int32_t *tokens, int *lens, upm_err *err);
/* Steps run by the last upm_generator_run (fewer than max_len when every beam finished early). */
int upm_generator_steps(const upm_generator *g);

#endif
