/* A batch: one task, B samples, ready to be copied to a device. Everything lives in ONE allocation
 * (batch->mem), laid out segment by segment in the order below, each array 64-byte aligned:
 *
 *   for each segment s (inputs first, in the task's field order; then the target segment):
 *     pixels  float   [n][T][3][H][W]   image (T = 1) or video segments, normalised
 *     ids     int32   [n][L]            text segments: token ids, 0-padded after lengths[i]
 *     lengths int32   [n]               text segments: tokens used per row (SPE/specials included)
 *     attrs   uint8   [n][tokens]       ONE ATTRIBUTE BYTE PER TOKEN (paper Table 2; bit i = index i);
 *                                       tokens = T*(H/16)*(W/16) for pixels, L for text
 *   labels       int32 [B]              label tasks: the class index of each sample, else -1
 *   mlm_targets  int32 [B][L0]          vocab-mlm: the original id at masked positions, -1 elsewhere
 *                                       (L0 = L of the first text input segment); absent otherwise
 *
 * Caption tasks (vocab-caption) use the query-token layout: after the causal text segment comes a
 * query segment of the same length (ids = <|gen|> where the text has a token, 0 after), attention
 * UPM_ATTN_CAPTION_QUERY; query j is scored against the vocabulary with text token j as its target,
 * so no target text can leak into the position that predicts it.
 *
 * Every sequence the model builds starts with an <|spe|> token whose attribute byte is spe_attr[side].
 * Targets of label tasks are the label set's texts, encoded by the model side from the catalog, so a
 * label batch has no target segment; pair and vocab tasks carry their target text as a segment. */
#ifndef UPM_BATCH_H
#define UPM_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "attributes.h"
#include "err.h"
#include "records.h"

#define UPM_MAX_SEGMENTS (UPM_MAX_INPUTS + 2)
#define UPM_PATCH 16

typedef enum upm_attn {
    UPM_ATTN_FULL = 0,     /* bidirectional */
    UPM_ATTN_CAUSAL,       /* text token j sees the visual tokens and text tokens 0..j */
    UPM_ATTN_CAPTION_QUERY /* caption query j (a <|gen|> token at position j) sees the visual tokens, the
                            * text tokens 0..j-1 and itself; its output predicts text token j */
} upm_attn;

typedef struct upm_segment {
    char field[UPM_FIELD_MAX + 1];
    upm_side side;
    upm_modality modality;
    upm_attn attn;
    uint8_t attr; /* the attribute byte of every token of this segment */
    int n;        /* rows */
    int T, H, W;  /* pixel segments */
    int L;        /* text segments: tokens per row */
    float *pixels;
    int32_t *ids, *lengths;
    uint8_t *attrs;
} upm_segment;

typedef struct upm_batch_shape {
    int B;
    int nseg;
    struct {
        const char *field;
        upm_side side;
        upm_modality modality;
        int T, H, W, L;
        int query; /* a caption query segment (text modality) */
    } seg[UPM_MAX_SEGMENTS];
    int with_labels, with_mlm_targets;
} upm_batch_shape;

/* Where a batch's block lives: malloc when alloc is NULL. A trainer gives its backend's host_alloc, so the
 * batch is uploaded from page-locked memory on a GPU (model/backend.h). alloc returns 64-byte-aligned
 * memory or NULL; both may be called from a decoding thread. */
typedef struct upm_batch_mem {
    void *(*alloc)(void *ctx, size_t bytes);
    void (*free)(void *ctx, void *p);
    void *ctx;
} upm_batch_mem;

typedef struct upm_batch {
    char task[UPM_NAME_MAX + 1];
    char dataset[UPM_NAME_MAX + 1];
    upm_formulation formulation;
    uint64_t step;
    int B;
    float loss_weight;
    uint8_t spe_attr[2]; /* by upm_side */
    int nseg;
    upm_segment seg[UPM_MAX_SEGMENTS];
    int32_t *labels;      /* [B] or NULL */
    int32_t *mlm_targets; /* [B][seg[first text].L] or NULL */
    void *mem;
    upm_batch_mem memfn; /* how mem was allocated (kept by realloc; set it on a zeroed batch) */
    size_t mem_bytes;  /* allocated */
    size_t used_bytes; /* laid out for this batch (<= mem_bytes when memory is reused) */
} upm_batch;

/* Allocates a batch of the given shape for task t (zeroed; attribute bytes filled from the task's
 * declaration, labels and mlm targets set to -1). */
int upm_batch_alloc(upm_batch *b, const upm_task *t, const upm_batch_shape *shape, upm_err *err);
/* The same, reusing b's current allocation when it is large enough (else it is freed and replaced):
 * a loader producing batch after batch then touches no fresh pages. b must be a batch or zeroed. */
int upm_batch_realloc(upm_batch *b, const upm_task *t, const upm_batch_shape *shape, upm_err *err);
void upm_batch_free(upm_batch *b);
/* Tokens of one row of a segment (patches or text positions). */
int upm_segment_tokens(const upm_segment *s);
/* 64-bit XXH3 over every byte of the batch's allocation and its header fields: equal batches have
 * equal checksums (used by the resume tests). */
uint64_t upm_batch_checksum(const upm_batch *b);

#endif
