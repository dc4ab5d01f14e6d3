/* Model configuration: the sizes of paper Table 6 (ti, s, b, l) or custom dimensions, the MoE kind and
 * its placement (paper Table 11). See docs/model.md for what every field means. */
#ifndef UPM_MODEL_CONFIG_H
#define UPM_MODEL_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* MERGED is the deployment form of a data-independent routed model (paper §3.3): for a fixed list of
 * attribute patterns (and a fixed task), each MoE linear holds one dense weight per pattern (the experts
 * already merged by their gates), selected by the token's attribute byte; no gates, no experts, one matmul
 * per pattern. The gated kinds (a gate on a fixed input per attribute pattern of a pass): ATTRIBUTE (the 8
 * attribute bits), MODALITY (an embedding of the token's modality: image, video or text) and TASK (an
 * embedding of the pass's task id). TASK_SPECIFIC has no gate: every task has its own weights in each MoE
 * linear (experts = task slots, the task's expert chosen with weight 1), the paper's interference-free
 * reference. TOKEN routes each token by its own representation (paper Eq. 5): gate values per row, experts
 * with a capacity, tokens past it dropped (docs/model.md, "Token routing"). Values are stable: they are not
 * written anywhere, but kept. */
typedef enum upm_moe_kind {
    UPM_MOE_NONE = 0,
    UPM_MOE_ATTRIBUTE,
    UPM_MOE_MERGED,
    UPM_MOE_MODALITY,
    UPM_MOE_TASK,
    UPM_MOE_TASK_SPECIFIC,
    UPM_MOE_TOKEN,
    UPM_MOE_CONTEXT
} upm_moe_kind;

/* Task routing's table: the model's task ids are its slots 1..task_slots, assigned to task names in the
 * order a run first meets them (trainer) and kept in the configuration, so checkpoints carry them. */
#define UPM_MAX_TASK_SLOTS 64
#define UPM_TASK_NAME_MAX 64

typedef struct upm_model_config {
    int dim, heads, layers, mlp; /* mlp: FFN width (4 * dim) */
    int vocab, max_text, max_frames;
    upm_moe_kind moe;
    int experts, topk;
    int moe_sa, moe_ffn, moe_every; /* MoE on attention / FFN linears of layers l with (l+1) % every == 0 */
    float drop_path;                /* uniform stochastic-depth rate (training only) */
    float layerscale_init, ln_eps;
    float gate_noise; /* std of the gate-logit noise in training; < 0 = 1/experts (the default) */
    int expert_copies; /* 1: every expert of an MoE linear starts as the same draw (the MoE model starts as
                          the dense one); 0: each expert is drawn on its own */
    int gate_renorm;  /* 1: the k kept gate values are renormalised to sum to 1 (the official code, the
                         default); 0: Eq. 3 as written (top-k of the softmax over all experts) */
    int npatterns;    /* MERGED: the attribute bytes it serves, ascending; experts == npatterns */
    uint8_t patterns[256];
    int task_slots;   /* TASK, TASK_SPECIFIC: rows of the task table (TASK_SPECIFIC: experts == task_slots) */
    int ntasks;       /* the slots assigned so far; task id i + 1 is task_names[i] */
    char task_names[UPM_MAX_TASK_SLOTS][UPM_TASK_NAME_MAX + 1];
    /* TOKEN: each expert takes at most ceil(capacity * topk * tokens / experts) tokens of a pass (training
     * passes; eval_capacity in the others), and the Switch balance loss enters with weight balance. */
    float capacity, eval_capacity, balance;
} upm_model_config;

#define UPM_VOCAB 49411 /* CLIP's 49,408 ids + <|mask|>, <|gen|>, <|spe|> */
#define UPM_PATCH_DIM (3 * 16 * 16)
#define UPM_GATE_BITS 8
/* Modality routing's ids (docs/model.md, "Conditional-MoE linear"): a visual token of a pass with video
 * segments is video, other visual tokens image; a token whose attribute says text is text. */
enum { UPM_MOD_ID_IMAGE = 0, UPM_MOD_ID_VIDEO, UPM_MOD_ID_TEXT, UPM_NMODALITY_IDS };
/* The modality id of the tokens of attribute byte `attr` (bit 5: this token is text, paper Table 2) in a
 * pass that has video segments (video) or not. */
static inline int upm_modality_id(unsigned attr, int video)
{
    return (attr >> 5) & 1 ? UPM_MOD_ID_TEXT : video ? UPM_MOD_ID_VIDEO : UPM_MOD_ID_IMAGE;
}
/* A kind whose gates are evaluated once per attribute pattern from a fixed input. */
static inline int upm_moe_gated(int moe)
{
    return moe == UPM_MOE_ATTRIBUTE || moe == UPM_MOE_MODALITY || moe == UPM_MOE_TASK;
}
/* A kind whose MoE linears mix experts by gate values G (gated, or TASK_SPECIFIC's fixed one-hot G). */
static inline int upm_moe_routed(int moe) { return upm_moe_gated(moe) || moe == UPM_MOE_TASK_SPECIFIC; }
/* A kind whose gates read each token's representation (data-dependent: gate values per row, capacity):
 * token routing, and context routing, which adds the attention-pooled sequence to the gate's input. */
static inline int upm_moe_token_routed(int moe) { return moe == UPM_MOE_TOKEN || moe == UPM_MOE_CONTEXT; }
/* Context routing (docs/model.md, "Context routing"): gate logits W_g concat(x, attnpool(X)). */
static inline int upm_moe_context(int moe) { return moe == UPM_MOE_CONTEXT; }
/* A kind whose gates take logit noise in training (per attribute pattern, or per token). */
static inline int upm_moe_noisy(int moe) { return upm_moe_gated(moe) || upm_moe_token_routed(moe); }
/* A kind with experts in its MoE linears (data-independent or not). */
static inline int upm_moe_has_experts(int moe) { return upm_moe_routed(moe) || upm_moe_token_routed(moe); }
/* A kind that needs the pass's task id (upm_seq_input.task). */
static inline int upm_moe_needs_task(int moe) { return moe == UPM_MOE_TASK || moe == UPM_MOE_TASK_SPECIFIC; }
/* The width of a gate's input: the attribute bits, a one-hot modality id, or a one-hot task id. */
static inline int upm_gate_inputs(const upm_model_config *c)
{
    return c->moe == UPM_MOE_MODALITY ? UPM_NMODALITY_IDS : c->moe == UPM_MOE_TASK ? c->task_slots : UPM_GATE_BITS;
}
/* One row of gate inputs for attribute byte attr in a pass with video segments (video) of task id task
 * (1-based; task routing): width upm_gate_inputs(c). */
static inline void upm_gate_input_row(const upm_model_config *c, unsigned attr, int video, int task, float *row)
{
    int n = upm_gate_inputs(c);
    for (int i = 0; i < n; i++)
        row[i] = c->moe == UPM_MOE_MODALITY ? (float)(i == upm_modality_id(attr, video))
                 : c->moe == UPM_MOE_TASK   ? (float)(i == task - 1)
                                            : (float)((attr >> i) & 1);
}

/* The preset of a named size: "ti", "s", "b" or "l" (UPM_EUSAGE for another name). */
int upm_model_config_preset(const char *size, upm_model_config *c, upm_err *err);
/* The preset names for messages: "ti, s, b or l". */
const char *upm_model_size_names(void);
/* MoE kinds by name ("none", "attribute", "task-specific", "merged", ...). A merged model is made by
 * upmoe-export, not trained: with trainable set, parse refuses "merged". Names for messages. */
const char *upm_moe_kind_name(upm_moe_kind k);
int upm_moe_kind_parse(const char *name, int trainable, upm_moe_kind *k, upm_err *err);
const char *upm_moe_kind_names(int trainable);
/* Refuses inconsistent configurations (dim % heads, dim % 4 for sin-cos, topk <= experts, ...). */
int upm_model_config_check(const upm_model_config *c, upm_err *err);
/* Whether layer l has MoE attention / FFN linears. */
int upm_layer_moe_sa(const upm_model_config *c, int l);
int upm_layer_moe_ffn(const upm_model_config *c, int l);
/* The task id (1-based) of task `name` in the model's table, or 0 when the model has not met it. */
int upm_model_task_id(const upm_model_config *c, const char *name);
/* The task id of `name`, assigning the next free slot to a task the model has not met (training). A full
 * table is UPM_EINVAL naming the task and the table's size. */
int upm_model_task_assign(upm_model_config *c, const char *name, int *id, upm_err *err);
/* The model's task names for messages ("a, b, c", cut to fit; "none" for an empty table): buf. */
const char *upm_model_task_list(const upm_model_config *c, char *buf, size_t n);
/* Token routing: the rows each expert takes in a pass of `tokens` routed tokens, ceil(factor * topk *
 * tokens / experts) with the training or the evaluation capacity factor. */
int upm_token_capacity(const upm_model_config *c, int tokens, int train);
/* The gate noise std actually used in training. */
float upm_gate_noise_std(const upm_model_config *c);

#endif
