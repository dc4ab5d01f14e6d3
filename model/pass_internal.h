/* The inside of an encoder pass, shared by model.c (embeddings, head, orchestration) and block.c (the
 * transformer blocks and their MoE linears). All float/int pointers are backend memory carved from one
 * arena (model.c: carve_pass). Not a public header.
 *
 * Shapes (row-major): N token rows of the pass (grouped by attribute pattern, docs/ARCHITECTURE.md §15),
 * D = dim, F = mlp width, H = heads, P = attribute patterns present, E = experts, B = sequences (nseq),
 * S = the longest sequence, R = read-out rows (the features), T/Hp/Wp = frames and pixels of a visual
 * segment, K = its tokens, out/in = a linear's output/input width. Token routing (a gate per row): gate
 * arrays hold N rows instead of P, and each expert e takes C dispatched rows (idx, w). */
#ifndef UPM_PASS_INTERNAL_H
#define UPM_PASS_INTERNAL_H

#include "model.h"

typedef struct upm_gate_act {
    float *Hg;    /* [P, D]  the gate's input per pattern (the attribute bits embedded) */
    float *mean;  /* [P]     its LayerNorm statistics */
    float *rstd;  /* [P] */
    float *Rn;    /* [P, D]  normalised */
    float *Z;     /* [P, E]  gate logits (plus noise in training) */
    float *probs; /* [P, E]  softmax over the experts */
    float *G;     /* [P, E]  gate values: top-k kept (renormalised by default), the rest 0 */
    float *noise; /* [P, E]  the logit noise of this pass, or NULL */
    float *dG, *dZ; /* [P, E] */
    float *dRn, *dHg; /* [P, D] */
    int32_t *idx;   /* token routing: [E, C] the rows each expert takes (-1: a free slot) */
    float *w;       /* [E, C] their gate values */
    /* context routing: the pool as a one-head attention of width E (docs/model.md, "Context routing"): per
     * row q | k | v = the constant query e_0 | (sqrt(E/in) q.x, 0, ...) | W_ctx x, and its probabilities */
    float *cqkv;    /* [N, 3E] */
    float *cprobs;  /* [B, S, S] */
} upm_gate_act;

typedef struct upm_linear_act {
    float *Wm, *dWm; /* [P, out*in] the experts merged per pattern (MoE linears only) */
    float *bm, *dbm; /* [P, out] */
    float *Ye;       /* token routing: [E, C, out] each expert's output on its rows, before the gate value */
} upm_linear_act;

enum { UPM_LIN_QKV = 0, UPM_LIN_PROJ, UPM_LIN_FC1, UPM_LIN_FC2, UPM_NLIN };

/* Attentions per layer that a generation step runs over caches: the block's, and context routing's pools. */
enum { UPM_KV_STREAMS = 1 + UPM_NGATES };

typedef struct upm_layer_act {
    float *x_out;        /* [N, D] the block's output (the next block's input) */
    float *mean1, *rstd1; /* [N]   LayerNorm 1 statistics */
    float *h;            /* [N, D] LayerNorm 1 output */
    float *qkv;          /* [N, 3D] */
    float *probs;        /* [B, H, S, S] attention probabilities */
    float *a;            /* [N, D] attention output (heads concatenated) */
    float *o;            /* [N, D] after the projection */
    float *x_mid;        /* [N, D] residual after attention */
    float *mean2, *rstd2; /* [N]   LayerNorm 2 statistics */
    float *h2;           /* [N, D] LayerNorm 2 output */
    float *f;            /* [N, F] fc1 output (before GELU) */
    float *gl;           /* [N, F] GELU(f) */
    float *o2;           /* [N, D] fc2 output */
    float *keep1, *keep2; /* [B] drop-path keep factors of the two branches, or NULL */
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
    int32_t *perm;      /* [N]     grouped row -> embedding-order row (E, x0 before grouping) */
    int32_t *row_of;    /* [B, S]  the row of each (sequence, position); N = B * S (padding is masked) */
    int32_t *seq_of;    /* [N]     the sequence of each row */
    int32_t *read_rows; /* [R]     the rows read out as features */
    int32_t *spe_idx;   /* [B]     each sequence's row of the <|spe|> table (zeros: it has one row) */
    int32_t *ids[UPM_SEQ_MAX_SEGMENTS];       /* [B, K] token ids (text segments) */
    int32_t *pos_idx[UPM_SEQ_MAX_SEGMENTS];   /* [B, K] position of each token in its segment */
    int32_t *frame_idx[UPM_SEQ_MAX_SEGMENTS]; /* [B, K] frame of each token (video) */
    uint8_t *mask;      /* [B, S, S] 1 where a query may attend to a key */
    /* embeddings */
    float *pixels[UPM_SEQ_MAX_SEGMENTS];  /* [B, T, 3, Hp, Wp] */
    float *patches[UPM_SEQ_MAX_SEGMENTS]; /* [B, K, 3*16*16] */
    float *sincos[UPM_SEQ_MAX_SEGMENTS];  /* [Hp/16 * Wp/16, D] fixed 2-D positions */
    float *E;     /* [N, D] embeddings with positions, in embedding order (every <|spe|>, then each segment) */
    float *x0;    /* [N, D] E's rows grouped by pattern (gathered through perm): the first block's input */
    float *bits;  /* [P, upm_gate_inputs] each pattern's gate input: attribute bits, one-hot modality or task */
    float *G_fixed; /* [P, E] task-specific weights: one-hot of the pass's task per pattern (every gate's G) */
    upm_layer_act *layers; /* [layers] */
    /* head: the read-out rows through the final LayerNorm, the projection and the L2 norm */
    float *zsel;  /* [R, D] */
    float *zmean, *zrstd; /* [R] */
    float *zn;    /* [R, D] */
    float *feat;  /* [R, D] projected */
    float *fnorm; /* [R]    their norms */
    float *U;     /* [R, D] L2-normalised features (upm_pass_features) */
    /* backward scratch */
    float *dxa, *dxb, *dx_mid, *dh, *da, *do_, *do2, *dE; /* [N, D] */
    float *dqkv;           /* [N, 3D] */
    float *dh2;            /* [N, D] */
    float *df, *dgl;       /* [N, F] */
    float *dfeat, *dzn, *dzsel; /* [R, D] */
    /* token routing: the valid rows in priority order (sequence, then position), the capacity of this pass,
     * and scratch for one expert's rows ([C, max(in)], [C, max(out)]) */
    int32_t *order;
    int nvalid, cap;
    float *Xs, *Ys;
    /* context routing: the pools' attention over the pass (one head of width E, the pass's mask), the
     * constant row added to every q | k | v row (1 at q's first column), and the backward's scratch */
    upm_attn_desc cattn;
    float *cone;  /* [3E] */
    float *dcqkv; /* [N, 3E] */
    upm_attn_desc attn;
    int slot[256]; /* merged models: the weight slot of each pattern of the plan */
    upm_seq_input in; /* the segment shapes of the planned input (host pointers not kept) */
    int train;        /* this pass is a training pass (upm_pass_opts.train) */
    /* A generation step (decode.c): [layers][UPM_KV_STREAMS] attention over the key/value caches instead of
     * attention_fwd: stream 0 the block's attention, stream 1 + gi context routing's pool of gate gi; nseq,
     * n_new and row_of are filled from the plan by the block. NULL for every other pass. */
    const upm_attn_kv_desc *kv;
};

/* block.c */
/* A data-independent gate (attribute, modality, task) on P rows of gate inputs bits [P, gin]: its values G
 * [P, E] and what its backward keeps; noise [P, E] or NULL. Each row's bits depend on that row only, so
 * upm_model_merge computes the gate values of the routed pass. */
void upm_gate_eval(const upm_model *m, const upm_gate_idx *k, const float *bits, int P, float *Hg, float *mean,
                   float *rstd, float *Rn, float *Z, float *probs, float *G, const float *noise);
void upm_block_forward(upm_model *m, upm_pass *p, int l, const float *x_in);
void upm_block_backward(upm_model *m, upm_pass *p, int l, const float *x_in, const float *dx_out, float *dx_in);

#endif
