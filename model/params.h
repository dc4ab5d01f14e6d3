/* The parameter layout: every tensor of the model (names as in docs/model.md and in checkpoints) at an
 * offset of ONE contiguous float buffer, each 64-byte aligned. Gradients and optimizer moments use the
 * same layout, so the optimizer is one flat loop and a checkpoint is the table plus the buffer. */
#ifndef UPM_MODEL_PARAMS_H
#define UPM_MODEL_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define UPM_PARAM_NAME_MAX 64

typedef enum upm_init { UPM_INIT_ZERO, UPM_INIT_CONST, UPM_INIT_NORMAL, UPM_INIT_TRUNC_NORMAL } upm_init;

typedef struct upm_param {
    char name[UPM_PARAM_NAME_MAX];
    int ndim;
    int64_t shape[3];
    size_t offset, numel; /* in floats */
    int decay;            /* weight decay applies (Linear weights only) */
    upm_init init;
    float init_value; /* std, or the constant */
    int replicas;     /* > 1: the first numel / replicas values are drawn and repeated (experts that start
                         as copies of one Linear) */
} upm_param;

enum { UPM_GATE_ATTN = 0, UPM_GATE_FC1, UPM_GATE_FC2, UPM_NGATES };

typedef struct upm_gate_idx {
    int attr_w, attr_b, norm_w, norm_b, proj_w; /* parameter indices (token routing: proj_w only, -1 else) */
    int in;    /* token and context routing: the width of the gate's input (its first linear's input) */
    int query; /* context routing: the attention pool's learned query [in] (proj_w is then [E, 2 in]) */
} upm_gate_idx;

typedef struct upm_linear_idx {
    int w, b;    /* [out, in] / [out], MoE: [E, out, in] / [E, out] */
    int in, out;
    int gate;    /* UPM_GATE_* when MoE, -1 when dense */
} upm_linear_idx;

typedef struct upm_block_idx {
    int ln1_w, ln1_b, ls1, ln2_w, ln2_b, ls2;
    upm_linear_idx qkv, proj, fc1, fc2;
    int has_gate[UPM_NGATES];
    upm_gate_idx gate[UPM_NGATES];
} upm_block_idx;

/* Whether MoE linears of block k are routed by gate gi (gated, or task-specific weights' fixed choice). */
static inline int upm_block_routes(const upm_block_idx *k, int gi)
{
    return k->qkv.gate == gi || k->proj.gate == gi || k->fc1.gate == gi || k->fc2.gate == gi;
}

typedef struct upm_layout {
    upm_param *p;
    int n;
    size_t total; /* floats, padding included */
    int token, text_pos, patch_w, patch_b, temporal, spe, norm_w, norm_b, proj_w, logit_scale;
    upm_block_idx *blocks;
    int nblocks;
} upm_layout;

int upm_layout_build(const upm_model_config *c, upm_layout *L, upm_err *err);
void upm_layout_free(upm_layout *L);
/* The index of a parameter by name, or -1. */
int upm_layout_find(const upm_layout *L, const char *name);
/* Initial values (docs/model.md) into a host buffer of L->total floats; each tensor draws from its own
 * stream keyed by (seed, its name), so adding a tensor never changes the others' values. */
void upm_layout_init(const upm_layout *L, uint64_t seed, float *host);
/* 1 per float that takes weight decay, 0 elsewhere (norms, biases, embeddings, gates, LayerScale,
 * temperature, padding); host buffer of L->total bytes. */
void upm_layout_decay_mask(const upm_layout *L, uint8_t *mask);
/* Parameters that count (padding excluded). */
size_t upm_layout_count(const upm_layout *L);

#endif
