/* Building the parameter table of a configuration, and initial values. */
#include "params.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

#define ALIGN_FLOATS 16

typedef struct builder {
    upm_layout *L;
    int cap;
    int failed;
} builder;

static int add(builder *b, upm_init init, float value, int decay, int ndim, int64_t d0, int64_t d1, int64_t d2,
               const char *fmt, ...) __attribute__((format(printf, 9, 10)));

static int add(builder *b, upm_init init, float value, int decay, int ndim, int64_t d0, int64_t d1, int64_t d2,
               const char *fmt, ...)
{
    upm_layout *L = b->L;
    if (L->n == b->cap) {
        int cap = b->cap ? 2 * b->cap : 64;
        upm_param *p = realloc(L->p, (size_t)cap * sizeof *p);
        if (!p) {
            b->failed = 1;
            return -1;
        }
        L->p = p, b->cap = cap;
    }
    upm_param *p = &L->p[L->n];
    memset(p, 0, sizeof *p);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->name, sizeof p->name, fmt, ap);
    va_end(ap);
    p->ndim = ndim;
    p->shape[0] = d0, p->shape[1] = d1, p->shape[2] = d2;
    p->numel = (size_t)d0 * (size_t)(ndim > 1 ? d1 : 1) * (size_t)(ndim > 2 ? d2 : 1);
    p->offset = L->total;
    p->decay = decay;
    p->init = init;
    p->init_value = value;
    L->total += (p->numel + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
    return L->n++;
}

static upm_linear_idx linear(builder *b, const upm_model_config *c, int l, const char *name, int in, int out, int gate)
{
    upm_linear_idx x = {.in = in, .out = out, .gate = gate};
    if (gate >= 0) {
        x.w = add(b, UPM_INIT_TRUNC_NORMAL, 0.02f, 1, 3, c->experts, out, in, "blocks.%d.%s.weight", l, name);
        if (x.w >= 0 && c->expert_copies)
            b->L->p[x.w].replicas = c->experts;
        x.b = add(b, UPM_INIT_ZERO, 0, 0, 2, c->experts, out, 0, "blocks.%d.%s.bias", l, name);
    } else {
        x.w = add(b, UPM_INIT_TRUNC_NORMAL, 0.02f, 1, 2, out, in, 0, "blocks.%d.%s.weight", l, name);
        x.b = add(b, UPM_INIT_ZERO, 0, 0, 1, out, 0, 0, "blocks.%d.%s.bias", l, name);
    }
    return x;
}

static upm_gate_idx gate(builder *b, const upm_model_config *c, int l, const char *name, int in)
{
    int D = c->dim;
    upm_gate_idx g = {-1, -1, -1, -1, -1, in, -1};
    if (upm_moe_context(c->moe)) { /* logits = W_g concat(x, attnpool(X)) (Eq. 6); the pool's query */
        g.proj_w = add(b, UPM_INIT_NORMAL, 0.02f, 0, 2, c->experts, 2 * in, 0, "blocks.%d.%s.proj.weight", l, name);
        g.query = add(b, UPM_INIT_NORMAL, 0.02f, 0, 1, in, 0, 0, "blocks.%d.%s.query", l, name);
        return g;
    }
    if (upm_moe_token_routed(c->moe)) { /* logits = W_g x: the token's own representation (Eq. 5) */
        g.proj_w = add(b, UPM_INIT_NORMAL, 0.02f, 0, 2, c->experts, in, 0, "blocks.%d.%s.proj.weight", l, name);
        return g;
    }
    if (c->moe == UPM_MOE_MODALITY) { /* the embedding of the modality id, as a linear of its one-hot */
        g.attr_w = add(b, UPM_INIT_NORMAL, 0.02f, 0, 2, D, UPM_NMODALITY_IDS, 0, "blocks.%d.%s.modality.weight", l, name);
        g.attr_b = add(b, UPM_INIT_ZERO, 0, 0, 1, D, 0, 0, "blocks.%d.%s.modality.bias", l, name);
    } else if (c->moe == UPM_MOE_TASK) { /* the embedding of the task id, as a linear of its one-hot */
        g.attr_w = add(b, UPM_INIT_NORMAL, 0.02f, 0, 2, D, c->task_slots, 0, "blocks.%d.%s.task.weight", l, name);
        g.attr_b = add(b, UPM_INIT_ZERO, 0, 0, 1, D, 0, 0, "blocks.%d.%s.task.bias", l, name);
    } else {
        g.attr_w = add(b, UPM_INIT_NORMAL, 0.02f, 0, 2, D, UPM_GATE_BITS, 0, "blocks.%d.%s.attr.weight", l, name);
        g.attr_b = add(b, UPM_INIT_ZERO, 0, 0, 1, D, 0, 0, "blocks.%d.%s.attr.bias", l, name);
    }
    g.norm_w = add(b, UPM_INIT_CONST, 1, 0, 1, D, 0, 0, "blocks.%d.%s.norm.weight", l, name);
    g.norm_b = add(b, UPM_INIT_ZERO, 0, 0, 1, D, 0, 0, "blocks.%d.%s.norm.bias", l, name);
    g.proj_w = add(b, UPM_INIT_NORMAL, 0.02f, 0, 2, c->experts, D, 0, "blocks.%d.%s.proj.weight", l, name);
    return g;
}

int upm_layout_build(const upm_model_config *c, upm_layout *L, upm_err *err)
{
    memset(L, 0, sizeof *L);
    int rc = upm_model_config_check(c, err);
    if (rc)
        return rc;
    builder b = {L, 0, 0};
    int D = c->dim, F = c->mlp;
    L->token = add(&b, UPM_INIT_NORMAL, 0.02f, 0, 2, c->vocab, D, 0, "embed.token");
    L->text_pos = add(&b, UPM_INIT_NORMAL, 0.02f, 0, 2, c->max_text, D, 0, "embed.text_pos");
    L->patch_w = add(&b, UPM_INIT_TRUNC_NORMAL, 0.02f, 1, 2, D, UPM_PATCH_DIM, 0, "embed.patch.weight");
    L->patch_b = add(&b, UPM_INIT_ZERO, 0, 0, 1, D, 0, 0, "embed.patch.bias");
    L->temporal = add(&b, UPM_INIT_NORMAL, 0.02f, 0, 2, c->max_frames, D, 0, "embed.temporal");
    L->spe = add(&b, UPM_INIT_NORMAL, 0.02f, 0, 1, D, 0, 0, "embed.spe");
    L->nblocks = c->layers;
    L->blocks = calloc((size_t)c->layers, sizeof *L->blocks);
    if (!L->blocks)
        b.failed = 1;
    for (int l = 0; l < c->layers && !b.failed; l++) {
        upm_block_idx *k = &L->blocks[l];
        int sa = upm_layer_moe_sa(c, l), ffn = upm_layer_moe_ffn(c, l);
        k->ln1_w = add(&b, UPM_INIT_CONST, 1, 0, 1, D, 0, 0, "blocks.%d.ln1.weight", l);
        k->ln1_b = add(&b, UPM_INIT_ZERO, 0, 0, 1, D, 0, 0, "blocks.%d.ln1.bias", l);
        k->qkv = linear(&b, c, l, "attn.qkv", D, 3 * D, sa ? UPM_GATE_ATTN : -1);
        k->proj = linear(&b, c, l, "attn.proj", D, D, sa ? UPM_GATE_ATTN : -1);
        k->ls1 = add(&b, UPM_INIT_CONST, c->layerscale_init, 0, 1, D, 0, 0, "blocks.%d.ls1", l);
        k->ln2_w = add(&b, UPM_INIT_CONST, 1, 0, 1, D, 0, 0, "blocks.%d.ln2.weight", l);
        k->ln2_b = add(&b, UPM_INIT_ZERO, 0, 0, 1, D, 0, 0, "blocks.%d.ln2.bias", l);
        k->fc1 = linear(&b, c, l, "mlp.fc1", D, F, ffn ? UPM_GATE_FC1 : -1);
        k->fc2 = linear(&b, c, l, "mlp.fc2", F, D, ffn ? UPM_GATE_FC2 : -1);
        k->ls2 = add(&b, UPM_INIT_CONST, c->layerscale_init, 0, 1, D, 0, 0, "blocks.%d.ls2", l);
        /* a merged model has per-pattern weights and task-specific one its task's: no gates */
        int gates = upm_moe_gated(c->moe) || upm_moe_token_routed(c->moe);
        k->has_gate[UPM_GATE_ATTN] = sa && gates;
        k->has_gate[UPM_GATE_FC1] = k->has_gate[UPM_GATE_FC2] = ffn && gates;
        if (sa && gates)
            k->gate[UPM_GATE_ATTN] = gate(&b, c, l, "attn.gate", D);
        if (ffn && gates) {
            k->gate[UPM_GATE_FC1] = gate(&b, c, l, "mlp.gate1", D);
            k->gate[UPM_GATE_FC2] = gate(&b, c, l, "mlp.gate2", F);
        }
    }
    L->norm_w = add(&b, UPM_INIT_CONST, 1, 0, 1, D, 0, 0, "norm.weight");
    L->norm_b = add(&b, UPM_INIT_ZERO, 0, 0, 1, D, 0, 0, "norm.bias");
    L->proj_w = add(&b, UPM_INIT_NORMAL, 1.0f / sqrtf((float)D), 1, 2, D, D, 0, "proj.weight");
    L->logit_scale = add(&b, UPM_INIT_CONST, logf(1.0f / 0.07f), 0, 1, 1, 0, 0, "logit_scale");
    if (b.failed) {
        upm_layout_free(L);
        return upm_errf(err, UPM_ENOMEM, "model: no memory for the parameter table");
    }
    return 0;
}

void upm_layout_free(upm_layout *L)
{
    free(L->p);
    free(L->blocks);
    memset(L, 0, sizeof *L);
}

int upm_layout_find(const upm_layout *L, const char *name)
{
    for (int i = 0; i < L->n; i++)
        if (!strcmp(L->p[i].name, name))
            return i;
    return -1;
}

static uint64_t name_key(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    return h;
}

void upm_layout_init(const upm_layout *L, uint64_t seed, float *host)
{
    memset(host, 0, L->total * sizeof *host);
    for (int i = 0; i < L->n; i++) {
        const upm_param *p = &L->p[i];
        float *w = host + p->offset;
        upm_rng r = upm_rng_stream(seed, UPM_RNG_INIT, name_key(p->name), 0, 0);
        size_t drawn = p->replicas > 1 ? p->numel / (size_t)p->replicas : p->numel;
        for (size_t j = 0; j < drawn; j++) {
            double v = 0;
            if (p->init == UPM_INIT_CONST)
                v = p->init_value;
            else if (p->init == UPM_INIT_NORMAL)
                v = p->init_value * upm_rng_normal(&r);
            else if (p->init == UPM_INIT_TRUNC_NORMAL)
                /* timm's trunc_normal_(std=s) (the official code's) redraws outside [-2, 2] in absolute
                 * value, not two standard deviations: at s = 0.02 it is N(0, s) in practice. Cutting at
                 * 2s instead shrank every Linear's std by 12 % (docs/training.md, "Why a run sat at chance"). */
                do
                    v = p->init_value * upm_rng_normal(&r);
                while (fabs(v) > 2.0);
            w[j] = (float)v;
        }
        for (size_t j = drawn; j < p->numel; j++) /* the other experts: copies of the first */
            w[j] = w[j % drawn];
    }
}

void upm_layout_decay_mask(const upm_layout *L, uint8_t *mask)
{
    memset(mask, 0, L->total);
    for (int i = 0; i < L->n; i++)
        if (L->p[i].decay)
            memset(mask + L->p[i].offset, 1, L->p[i].numel);
}

size_t upm_layout_count(const upm_layout *L)
{
    size_t n = 0;
    for (int i = 0; i < L->n; i++)
        n += L->p[i].numel;
    return n;
}
