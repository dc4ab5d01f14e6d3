/* Caption generation with a key/value cache (docs/model.md, "Generation"). The input side of a caption
 * batch without its caption segments (SPE and the image or video) is the prefix: it never attends to the
 * caption, so it is encoded once per sample and its keys and values are kept for every layer. Each step
 * then encodes only the new tokens of every beam against that cache: the token chosen at the previous step
 * (causal caption text at position t-1, whose keys and values join the cache) and the query <|gen|> at
 * position t, whose feature scores the next token. The features equal those of the full caption pass
 * (tests/unit/test_decode.c). */
#ifndef UPM_MODEL_DECODE_H
#define UPM_MODEL_DECODE_H

#include <stdint.h>

#include "model.h"

typedef struct upm_decoder upm_decoder;

typedef struct upm_decoder_opts {
    int samples;       /* prefixes (images or videos) per batch, at most */
    int beams;         /* sequences per prefix after the first step */
    int max_len;       /* caption tokens at most: the cache's capacity */
    uint8_t text_attr; /* the attribute byte of the caption's text and query tokens */
    int32_t query_id;  /* the query token (<|gen|>) */
} upm_decoder_opts;

int upm_decoder_new(upm_model *m, const upm_decoder_opts *o, upm_decoder **out, upm_err *err);
void upm_decoder_free(upm_decoder *d);
/* Encodes the prefix of prefix->nseq samples (full-attention segments only) and keeps its keys and
 * values; the next step is step 0. */
int upm_decoder_start(upm_decoder *d, const upm_seq_input *prefix, upm_err *err);
/* One step for nseq = samples * group sequences (group 1 at step 0, the beam count after; sequence s
 * belongs to sample s / group): prev[s] is the token sequence s chose at the previous step (ignored at
 * step 0). *features: the queries' L2-normalised features, backend [nseq, dim], valid until the next call. */
int upm_decoder_step(upm_decoder *d, int group, const int32_t *prev, const float **features, upm_err *err);
/* After choosing: new sequence s (of nseq) continues old sequence parent[s]'s cached caption. */
int upm_decoder_reorder(upm_decoder *d, const int32_t *parent, int nseq, upm_err *err);
/* The step the next upm_decoder_step call encodes. */
int upm_decoder_position(const upm_decoder *d);

#endif
