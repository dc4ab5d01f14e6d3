/* The host-side plan of one encoder pass: how a batch side's segments become sequences of tokens,
 * where each token's row lives (rows grouped by attribute pattern, so each pattern's linears are one
 * matmul), the attention mask of every sequence, and the index arrays the embedding ops need. Built
 * on the host from the batch description, then uploaded once. Layouts are explained in docs/model.md. */
#ifndef UPM_MODEL_SEQPLAN_H
#define UPM_MODEL_SEQPLAN_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define UPM_SEQ_MAX_SEGMENTS 8

typedef enum upm_seg_kind { UPM_SEG_TEXT = 0, UPM_SEG_IMAGE, UPM_SEG_VIDEO } upm_seg_kind;
/* The same order as the pipeline's upm_attn. */
typedef enum upm_seg_attn { UPM_SEG_FULL = 0, UPM_SEG_CAUSAL, UPM_SEG_QUERY } upm_seg_attn;

typedef struct upm_seq_segment {
    upm_seg_kind kind;
    upm_seg_attn attn;
    int T, H, W;          /* pixel segments (T = 1 for images) */
    int L;                /* text segments: positions per row */
    int pos0;             /* text segments: the position of their first token (0; generation steps go on) */
    const float *pixels;  /* host [nseq][T][3][H][W] */
    const int32_t *ids;   /* host [nseq][L] */
    const int32_t *lengths; /* host [nseq] (text) */
    const uint8_t *attrs; /* host [nseq][tokens]: one attribute byte per token */
} upm_seq_segment;

typedef struct upm_seq_input {
    int nseq;
    uint8_t spe_attr;
    /* A generation step (model/decode.c): the sequences continue cached ones, so they have no leading
     * SPE token and need explicit read-outs (nread > 0). */
    int no_spe;
    int nseg;
    upm_seq_segment seg[UPM_SEQ_MAX_SEGMENTS];
    /* Feature read-out positions (sequence, position); nread = 0 reads every sequence's SPE token. */
    int nread;
    const int32_t *read_seq, *read_pos;
    /* Task routing and task-specific weights: the pass's task id in the model's table (1-based,
     * upm_model_task_id); 0 = not given, which such a model refuses. Other models ignore it. */
    int task;
} upm_seq_input;

/* Tokens per row of a segment. */
int upm_seq_segment_tokens(const upm_seq_segment *s);
/* Positions per sequence of an input: its SPE token (unless no_spe) and every segment's tokens. */
int upm_seq_positions(const upm_seq_input *in);

typedef struct upm_seq_plan {
    int nseq, S, N; /* sequences, positions per sequence, rows (= nseq * S) */
    int npat;
    uint8_t pat[256];   /* distinct attribute bytes, ascending */
    int pat_start[257]; /* rows of pattern p: [pat_start[p], pat_start[p+1]) */
    int nread;
    /* Host arrays (one allocation). E-order is the embedding layout: the nseq SPE rows, then each
     * segment's rows (sequence-major). X-order is the grouped layout the blocks run on. */
    int32_t *perm;     /* [N]: X row -> E row */
    int32_t *row_of;   /* [nseq*S]: (sequence, position) -> X row */
    int32_t *seq_of;   /* [N]: X row -> sequence */
    int32_t *read_rows; /* [nread]: X rows of the read-out tokens */
    int32_t *spe_idx;  /* [nseq]: zeros (the SPE table has one row) */
    int32_t *seg_e0;   /* [nseg]: first E row of each segment */
    int32_t *pos_idx[UPM_SEQ_MAX_SEGMENTS]; /* text: position of each token; pixels: gy*gw + gx */
    int32_t *frame_idx[UPM_SEQ_MAX_SEGMENTS]; /* video: frame of each patch */
    uint8_t *mask;     /* [nseq][S][S] */
    void *mem;
} upm_seq_plan;

/* Validates the input (shapes, ids within vocab, lengths, positions within max_text, frames within
 * max_frames) and builds the plan. */
int upm_seq_plan_build(const upm_seq_input *in, int vocab, int max_text, int max_frames, upm_seq_plan *p, upm_err *err);
void upm_seq_plan_free(upm_seq_plan *p);

#endif
