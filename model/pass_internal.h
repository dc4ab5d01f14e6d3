/* The inside of an encoder pass, shared by model.c (embeddings, head, orchestration) and block.c (the
 * transformer blocks and their MoE linears). All float/int pointers are backend memory carved from one
 * arena. Not a public header. */
#ifndef UPM_PASS_INTERNAL_H
#define UPM_PASS_INTERNAL_H

#include "model.h"

typedef struct upm_gate_act {
    float *Hg, *mean, *rstd, *Rn, *Z, *probs, *G, *noise; /* [P,D] [P] [P] [P,D] [P,E] [P,E] [P,E] [P,E] */
    float *dG, *dZ, *dRn, *dHg;
} upm_gate_act;

typedef struct upm_linear_act {
    float *Wm, *bm, *dWm, *dbm; /* merged per pattern: [P,out*in] [P,out] (MoE linears only) */
} upm_linear_act;

enum { UPM_LIN_QKV = 0, UPM_LIN_PROJ, UPM_LIN_FC1, UPM_LIN_FC2, UPM_NLIN };

typedef struct upm_layer_act {
    float *x_out; /* the block's output (the next block's input) */
    float *mean1, *rstd1, *h, *qkv, *probs, *a, *o, *x_mid, *mean2, *rstd2, *h2, *f, *gl, *o2;
    float *keep1, *keep2; /* [nseq] or NULL */
    int has_noise;
    upm_gate_act gate[UPM_NGATES];
    upm_linear_act lin[UPM_NLIN];
} upm_layer_act;

struct upm_pass {
    upm_seq_plan plan;
    int have_plan;
    void *arena;
    size_t arena_bytes;
    /* index arrays (uploaded from the plan) */
    int32_t *perm, *row_of, *seq_of, *read_rows, *spe_idx;
    int32_t *ids[UPM_SEQ_MAX_SEGMENTS], *pos_idx[UPM_SEQ_MAX_SEGMENTS], *frame_idx[UPM_SEQ_MAX_SEGMENTS];
    uint8_t *mask;
    /* embeddings */
    float *pixels[UPM_SEQ_MAX_SEGMENTS], *patches[UPM_SEQ_MAX_SEGMENTS], *sincos[UPM_SEQ_MAX_SEGMENTS];
    float *E, *x0, *bits;
    upm_layer_act *layers;
    /* head */
    float *zsel, *zmean, *zrstd, *zn, *feat, *fnorm, *U;
    /* backward scratch */
    float *dxa, *dxb, *dx_mid, *dh, *dqkv, *da, *do_, *dh2, *df, *dgl, *do2, *dE;
    float *dfeat, *dzn, *dzsel;
    upm_attn_desc attn;
    int slot[256]; /* merged models: the weight slot of each pattern of the plan */
    upm_seq_input in; /* the segment shapes of the planned input (host pointers not kept) */
    int train;        /* this pass is a training pass (upm_pass_opts.train) */
};

/* block.c */
void upm_block_forward(upm_model *m, upm_pass *p, int l, const float *x_in);
void upm_block_backward(upm_model *m, upm_pass *p, int l, const float *x_in, const float *dx_out, float *dx_in);

#endif
