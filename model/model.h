/* The Uni-Perceiver encoder with attribute-routed Conditional-MoE linears (docs/model.md): the model
 * (config, parameter layout, parameters and gradients in backend memory) and encoder passes. A pass
 * encodes one side of a batch (inputs, or the targets: label texts, paired captions) into L2-normalised
 * features; its backward adds the parameter gradients into model->g. Model code only calls backend ops. */
#ifndef UPM_MODEL_H
#define UPM_MODEL_H

#include <stdint.h>

#include "backend.h"
#include "config.h"
#include "params.h"
#include "rng.h"
#include "seqplan.h"

typedef struct upm_model {
    upm_model_config cfg;
    upm_layout L;
    upm_backend *be;
    float *w, *g; /* backend memory, L.total floats each */
    /* Experts chosen by any gate of a training pass since the last upm_model_zero_grad,
     * [layers][UPM_NGATES][experts] (0/1): an expert not marked has an all-zero gradient this step, which
     * data-parallel training need not reduce. Marked on the backend (expert_used_dev); expert_used is the
     * host copy upm_model_experts_used downloads. NULL for dense and merged models. */
    uint8_t *expert_used, *expert_used_dev;
    /* The step's statistics, written on the backend by the losses and the optimizer (UPM_STAT_*) and read
     * by the trainer with the step's one download (upm_model_stats_read), so that nothing inside a step
     * waits for the backend. */
    float *stats;
    /* The precision of the linears' matmuls (UPM_F32, or UPM_BF16: inputs rounded to bfloat16, fp32
     * accumulation; backend.h gemm_ct). Gates, attention, norms, losses and the optimizer stay fp32. */
    upm_dtype compute;
    /* Backend scratch of the losses (trainer/loss.c): grown to the largest request, then reused, so a
     * step allocates nothing once the largest batch has been seen. iota: 0, 1, ..., iota_n - 1. */
    void *scratch;
    size_t scratch_bytes;
    int32_t *iota;
    int iota_n;
    /* The fixed 2-D sin-cos position tables uploaded so far, one per patch grid (160 px and 224 px images
     * are two grids), so that a pass uploads none it has seen. */
    struct {
        int gh, gw;
        float *t; /* backend [gh * gw, dim] */
    } sincos[8];
    int nsincos;
    int64_t route_evals;       /* token routing: gate evaluations of training passes since zero_grad */
    double route_assignments;  /* ... and the (token, choice) assignments of every pass since then */
} upm_model;

/* Slots of upm_model.stats: the loss and correct rows of the label loss, or of the pair loss's
 * image-to-text direction (and _T: text-to-image); the squared gradient norm and the clipping factor. */
enum { UPM_STAT_LOSS, UPM_STAT_CORRECT, UPM_STAT_LOSS_T, UPM_STAT_CORRECT_T, UPM_STAT_SUMSQ, UPM_STAT_GSCALE,
       UPM_STAT_DROPPED, UPM_STAT_BALANCE, UPM_NSTATS };
/* Token routing's slots (zeroed by upm_model_zero_grad): DROPPED counts the (token, expert) assignments past
 * an expert's capacity (every pass), BALANCE sums the balance loss E sum_e f_e P_e of every gate evaluation
 * of a training pass; route_assignments and route_evals (host) count the assignments asked for and those
 * evaluations, so dropped / assignments is the dropped share and balance / evals the mean balance loss (1 =
 * uniform). */

/* A model with initial values drawn from seed (docs/model.md), gradients zeroed. */
int upm_model_new(const upm_model_config *cfg, upm_backend *be, uint64_t seed, upm_model **out, upm_err *err);
void upm_model_free(upm_model *m);
/* The experts used this step (model.h, expert_used), downloaded once: host memory, or NULL for a model
 * without attribute routing. */
const uint8_t *upm_model_experts_used(upm_model *m);
/* The step's statistics (UPM_STAT_*) into host[UPM_NSTATS]: one download, the step's wait. */
void upm_model_stats_read(upm_model *m, float host[UPM_NSTATS]);
/* Backend pointers of parameter i's values and gradient. */
float *upm_model_w(const upm_model *m, int i);
float *upm_model_g(const upm_model *m, int i);
void upm_model_zero_grad(upm_model *m);

typedef struct upm_pass_opts {
    int train;
    /* Gate-logit noise, or NULL for none: host [layers][UPM_NGATES][256][experts] by attribute byte; token
     * routing: [layers][UPM_NGATES][noise_nseq][S][experts] by (sequence, position), S =
     * upm_seq_positions(in), the pass's sequence b reading the table's sequence noise_seq0 + b (noise_nseq
     * 0: the pass's own count), so chunks of one set of sequences can share a table. */
    const float *gate_noise;
    /* Drop-path keep factors (0 or 1/(1-p)), host [layers][2][nseq] (attention, MLP), or NULL = 1. */
    const float *keep;
    int noise_seq0, noise_nseq;
} upm_pass_opts;

/* Fills keep[0..n) with drop-path keep factors at rate p: 0 with probability p, else 1/(1-p), one
 * uniform draw of r per factor in order (the one rule the trainer, vocabulary passes and oracle share). */
void upm_drop_path_keep(float *keep, size_t n, float p, upm_rng *r);

typedef struct upm_pass upm_pass;

/* A pass object holds a plan and activation memory; reuse one per side from step to step, so memory is
 * allocated only when a larger batch arrives. */
upm_pass *upm_pass_new(void);
void upm_pass_free(upm_model *m, upm_pass *p);
/* Encodes the sequences of `in`; the features of its read-out tokens ([nread, dim], L2-normalised,
 * backend memory) are then upm_pass_features(p). */
int upm_pass_forward(upm_model *m, upm_pass *p, const upm_seq_input *in, const upm_pass_opts *o, upm_err *err);
const float *upm_pass_features(const upm_pass *p);
/* Token routing, for analyses: counts[e] += the routed tokens of the pass's last forward whose first choice
 * at gate gi (UPM_GATE_*) of block l is expert e, *tokens += their number. Downloads (not for a training step).
 * UPM_EINVAL when the model is not token-routed or the block has no such gate. */
int upm_pass_token_choices(upm_model *m, const upm_pass *p, int l, int gi, double *counts, int64_t *tokens,
                           upm_err *err);
/* The backend memory the pass holds for its activations (bytes), for measurements. */
size_t upm_pass_bytes(const upm_pass *p);
/* Backward from dU (backend memory, [nread, dim]): adds every parameter gradient into m->g. */
int upm_pass_backward(upm_model *m, upm_pass *p, const float *dU, upm_err *err);
/* Parameter groups in the order a backward pass completes them: the head (group `layers`), the blocks
 * from the top (group l), the embeddings (group -1). */
int upm_param_group(const upm_model *m, int param);
/* upm_pass_backward that calls done(ctx, group) as soon as the pass has added its gradients of a group,
 * so a data-parallel trainer can reduce them while the rest of the backward runs. */
int upm_pass_backward_cb(upm_model *m, upm_pass *p, const float *dU, void (*done)(void *ctx, int group), void *ctx,
                         upm_err *err);

/* The fixed 2-D sin-cos position table of a gh x gw patch grid, host [gh*gw][D] (docs/model.md). */
void upm_sincos_2d(float *out, int gh, int gw, int D);

#endif
