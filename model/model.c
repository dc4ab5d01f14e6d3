/* The model object and encoder passes: arena layout, uploads of the plan, embeddings, the blocks in
 * order, the feature head (LayerNorm, projection, L2 normalisation), and the backward in reverse. */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pass_internal.h"
#include "route_choice.h"

#define WEIGHTS(i) upm_model_w(m, (i)) /* parameter i's values, backend memory */
#define GRADS(i) upm_model_g(m, (i))   /* its gradient */

int upm_model_new(const upm_model_config *cfg, upm_backend *be, uint64_t seed, upm_model **out, upm_err *err)
{
    *out = NULL;
    upm_model *m = calloc(1, sizeof *m);
    if (!m)
        return upm_errf(err, UPM_ENOMEM, "model: no memory");
    m->cfg = *cfg;
    m->be = be;
    int rc = upm_layout_build(cfg, &m->L, err);
    if (rc) {
        free(m);
        return rc;
    }
    size_t bytes = m->L.total * sizeof(float);
    float *host = malloc(bytes);
    m->w = be->alloc(be, bytes);
    m->g = be->alloc(be, bytes);
    m->stats = be->alloc(be, sizeof(float) * UPM_NSTATS);
    if (!host || !m->w || !m->g || !m->stats) {
        size_t total = m->L.total;
        free(host);
        upm_model_free(m);
        return upm_errf(err, UPM_ENOMEM, "model: no memory for %zu parameters", total);
    }
    be->zero(be, m->stats, sizeof(float) * UPM_NSTATS);
    upm_layout_init(&m->L, seed, host);
    be->upload(be, m->w, host, bytes);
    free(host);
    if (upm_moe_has_experts(cfg->moe)) {
        size_t n = (size_t)cfg->layers * UPM_NGATES * (size_t)cfg->experts;
        m->expert_used = calloc(n, 1);
        m->expert_used_dev = be->alloc(be, n);
        if (!m->expert_used || !m->expert_used_dev) {
            upm_model_free(m);
            return upm_errf(err, UPM_ENOMEM, "model: no memory");
        }
    }
    *out = m;
    return 0;
}

void upm_model_free(upm_model *m)
{
    if (!m)
        return;
    if (m->w)
        m->be->free(m->be, m->w);
    if (m->g)
        m->be->free(m->be, m->g);
    if (m->stats)
        m->be->free(m->be, m->stats);
    if (m->scratch)
        m->be->free(m->be, m->scratch);
    if (m->iota)
        m->be->free(m->be, m->iota);
    for (int i = 0; i < m->nsincos; i++)
        m->be->free(m->be, m->sincos[i].t);
    upm_layout_free(&m->L);
    free(m->expert_used);
    if (m->expert_used_dev)
        m->be->free(m->be, m->expert_used_dev);
    free(m);
}

float *upm_model_w(const upm_model *m, int i) { return m->w + m->L.p[i].offset; }
float *upm_model_g(const upm_model *m, int i) { return m->g + m->L.p[i].offset; }

void upm_model_zero_grad(upm_model *m)
{
    m->be->zero(m->be, m->g, m->L.total * sizeof(float));
    m->be->zero(m->be, m->stats + UPM_STAT_DROPPED, sizeof(float) * 2);
    m->route_evals = 0, m->route_assignments = 0;
    if (m->expert_used_dev)
        m->be->zero(m->be, m->expert_used_dev, (size_t)m->cfg.layers * UPM_NGATES * (size_t)m->cfg.experts);
}

const uint8_t *upm_model_experts_used(upm_model *m)
{
    if (m->expert_used_dev)
        m->be->download(m->be, m->expert_used, m->expert_used_dev,
                        (size_t)m->cfg.layers * UPM_NGATES * (size_t)m->cfg.experts);
    return m->expert_used_dev ? m->expert_used : NULL;
}

void upm_model_stats_read(upm_model *m, float host[UPM_NSTATS])
{
    m->be->download(m->be, host, m->stats, sizeof(float) * UPM_NSTATS);
}

int upm_param_group(const upm_model *m, int param)
{
    const char *name = m->L.p[param].name;
    int l;
    if (sscanf(name, "blocks.%d.", &l) == 1)
        return l;
    return strncmp(name, "embed.", 6) ? m->cfg.layers : -1;
}

void upm_sincos_2d(float *out, int gh, int gw, int D)
{
    int Q = D / 4;
    for (int gy = 0; gy < gh; gy++)
        for (int gx = 0; gx < gw; gx++) {
            float *o = out + ((size_t)gy * gw + gx) * D;
            for (int i = 0; i < Q; i++) {
                double w = pow(10000.0, -(double)i / Q);
                o[i] = (float)sin(gx * w), o[Q + i] = (float)cos(gx * w);
                o[2 * Q + i] = (float)sin(gy * w), o[3 * Q + i] = (float)cos(gy * w);
            }
        }
}

upm_pass *upm_pass_new(void) { return calloc(1, sizeof(upm_pass)); }

void upm_pass_free(upm_model *m, upm_pass *p)
{
    if (!p)
        return;
    if (p->arena)
        m->be->free(m->be, p->arena);
    upm_seq_plan_free(&p->plan);
    free(p->layers);
    free(p);
}

/* ---- arena: the same walk measures (base NULL) and carves (base = the arena) ---- */

typedef struct carver {
    char *base;
    size_t off;
} carver;

static void *carve(carver *c, size_t bytes)
{
    size_t at = (c->off + 63) / 64 * 64;
    c->off = at + bytes;
    return c->base ? c->base + at : NULL;
}

#define CARVE_F(c, n) ((float *)carve((c), sizeof(float) * (size_t)(n)))
#define CARVE_I(c, n) ((int32_t *)carve((c), sizeof(int32_t) * (size_t)(n)))

static void carve_layer(upm_model *m, upm_pass *p, carver *c, int l, int want_keep)
{
    const upm_model_config *cfg = &m->cfg;
    const upm_block_idx *k = &m->L.blocks[l];
    upm_layer_act *la = &p->layers[l];
    size_t N = (size_t)p->plan.N, D = (size_t)cfg->dim, F = (size_t)cfg->mlp, P = (size_t)p->plan.npat;
    size_t E = (size_t)cfg->experts, nseq = (size_t)p->plan.nseq, S = (size_t)p->plan.S;
    la->x_out = CARVE_F(c, N * D), la->mean1 = CARVE_F(c, N), la->rstd1 = CARVE_F(c, N), la->h = CARVE_F(c, N * D);
    la->qkv = CARVE_F(c, N * 3 * D), la->probs = CARVE_F(c, nseq * cfg->heads * S * S), la->a = CARVE_F(c, N * D);
    la->o = CARVE_F(c, N * D), la->x_mid = CARVE_F(c, N * D), la->mean2 = CARVE_F(c, N), la->rstd2 = CARVE_F(c, N);
    la->h2 = CARVE_F(c, N * D), la->f = CARVE_F(c, N * F), la->gl = CARVE_F(c, N * F), la->o2 = CARVE_F(c, N * D);
    la->keep1 = want_keep ? CARVE_F(c, nseq) : NULL, la->keep2 = want_keep ? CARVE_F(c, nseq) : NULL;
    int token = upm_moe_token_routed(cfg->moe);
    size_t EC = E * (size_t)p->cap;
    for (int gi = 0; gi < UPM_NGATES; gi++) {
        upm_gate_act *g = &la->gate[gi];
        if (!k->has_gate[gi]) {
            memset(g, 0, sizeof *g);
            g->G = upm_block_routes(k, gi) ? p->G_fixed : NULL; /* task-specific: the pass's one-hot */
            continue;
        }
        if (token) { /* a gate per row; each expert's dispatched rows */
            memset(g, 0, sizeof *g);
            g->Z = CARVE_F(c, N * E), g->probs = CARVE_F(c, N * E), g->G = CARVE_F(c, N * E);
            g->dG = CARVE_F(c, N * E), g->dZ = CARVE_F(c, N * E);
            g->noise = la->has_noise ? CARVE_F(c, N * E) : NULL;
            g->idx = CARVE_I(c, EC), g->w = CARVE_F(c, EC);
            if (upm_moe_context(cfg->moe))
                g->cqkv = CARVE_F(c, N * 3 * E), g->cprobs = CARVE_F(c, nseq * S * S);
            continue;
        }
        g->Hg = CARVE_F(c, P * D), g->mean = CARVE_F(c, P), g->rstd = CARVE_F(c, P), g->Rn = CARVE_F(c, P * D), g->Z = CARVE_F(c, P * E);
        g->probs = CARVE_F(c, P * E), g->G = CARVE_F(c, P * E), g->noise = la->has_noise ? CARVE_F(c, P * E) : NULL;
        g->dG = CARVE_F(c, P * E), g->dZ = CARVE_F(c, P * E), g->dRn = CARVE_F(c, P * D), g->dHg = CARVE_F(c, P * D);
    }
    const upm_linear_idx *lins[UPM_NLIN] = {&k->qkv, &k->proj, &k->fc1, &k->fc2};
    for (int i = 0; i < UPM_NLIN; i++) {
        upm_linear_act *a = &la->lin[i];
        memset(a, 0, sizeof *a);
        if (lins[i]->gate < 0 || cfg->moe == UPM_MOE_MERGED)
            continue;
        if (token) {
            a->Ye = CARVE_F(c, EC * (size_t)lins[i]->out);
            continue;
        }
        size_t wn = (size_t)lins[i]->out * lins[i]->in, out = (size_t)lins[i]->out;
        a->Wm = CARVE_F(c, P * wn), a->bm = CARVE_F(c, P * out), a->dWm = CARVE_F(c, P * wn), a->dbm = CARVE_F(c, P * out);
    }
}

static void carve_pass(upm_model *m, upm_pass *p, carver *c, int want_keep)
{
    const upm_seq_plan *pl = &p->plan;
    const upm_seq_input *in = &p->in;
    size_t N = (size_t)pl->N, D = (size_t)m->cfg.dim, F = (size_t)m->cfg.mlp, R = (size_t)pl->nread;
    size_t nseq = (size_t)pl->nseq, S = (size_t)pl->S;
    p->perm = CARVE_I(c, N), p->row_of = CARVE_I(c, nseq * S), p->seq_of = CARVE_I(c, N), p->read_rows = CARVE_I(c, R);
    p->spe_idx = CARVE_I(c, nseq);
    p->mask = carve(c, nseq * S * S);
    for (int s = 0; s < in->nseg; s++) {
        const upm_seq_segment *g = &in->seg[s];
        size_t tok = (size_t)upm_seq_segment_tokens(g);
        p->pos_idx[s] = CARVE_I(c, nseq * tok), p->frame_idx[s] = CARVE_I(c, nseq * tok);
        p->ids[s] = g->kind == UPM_SEG_TEXT ? CARVE_I(c, nseq * tok) : NULL;
        if (g->kind != UPM_SEG_TEXT) {
            p->pixels[s] = CARVE_F(c, nseq * g->T * 3 * g->H * g->W);
            p->patches[s] = CARVE_F(c, nseq * tok * UPM_PATCH_DIM);
            p->sincos[s] = NULL; /* the model's table for this grid (sincos_table) */
        } else
            p->pixels[s] = p->patches[s] = p->sincos[s] = NULL;
    }
    p->E = CARVE_F(c, N * D), p->x0 = CARVE_F(c, N * D), p->bits = CARVE_F(c, (size_t)pl->npat * upm_gate_inputs(&m->cfg));
    p->G_fixed = m->cfg.moe == UPM_MOE_TASK_SPECIFIC ? CARVE_F(c, (size_t)pl->npat * m->cfg.experts) : NULL;
    if (upm_moe_token_routed(m->cfg.moe)) {
        size_t F3 = F > 3 * D ? F : 3 * D, FD = F > D ? F : D;
        p->order = CARVE_I(c, N), p->Xs = CARVE_F(c, (size_t)p->cap * FD), p->Ys = CARVE_F(c, (size_t)p->cap * F3);
    } else
        p->order = NULL, p->Xs = p->Ys = NULL;
    size_t E3 = 3 * (size_t)m->cfg.experts;
    p->cone = upm_moe_context(m->cfg.moe) ? CARVE_F(c, E3) : NULL;
    p->dcqkv = upm_moe_context(m->cfg.moe) ? CARVE_F(c, N * E3) : NULL;
    for (int l = 0; l < m->cfg.layers; l++)
        carve_layer(m, p, c, l, want_keep);
    p->zsel = CARVE_F(c, R * D), p->zmean = CARVE_F(c, R), p->zrstd = CARVE_F(c, R), p->zn = CARVE_F(c, R * D), p->feat = CARVE_F(c, R * D);
    p->fnorm = CARVE_F(c, R), p->U = CARVE_F(c, R * D);
    p->dxa = CARVE_F(c, N * D), p->dxb = CARVE_F(c, N * D), p->dx_mid = CARVE_F(c, N * D), p->dh = CARVE_F(c, N * D);
    p->dqkv = CARVE_F(c, N * 3 * D), p->da = CARVE_F(c, N * D), p->do_ = CARVE_F(c, N * D), p->dh2 = CARVE_F(c, N * D);
    p->df = CARVE_F(c, N * F), p->dgl = CARVE_F(c, N * F), p->do2 = CARVE_F(c, N * D), p->dE = CARVE_F(c, N * D);
    p->dfeat = CARVE_F(c, R * D), p->dzn = CARVE_F(c, R * D), p->dzsel = CARVE_F(c, R * D);
}

/* The position table of a gh x gw patch grid: the model's copy, made and uploaded the first time the grid
 * is seen (NULL with err set when memory runs out). */
static float *sincos_table(upm_model *m, int gh, int gw, upm_err *err)
{
    int n = m->nsincos, cap = (int)(sizeof m->sincos / sizeof m->sincos[0]);
    for (int i = 0; i < n; i++)
        if (m->sincos[i].gh == gh && m->sincos[i].gw == gw)
            return m->sincos[i].t;
    size_t bytes = sizeof(float) * (size_t)gh * gw * m->cfg.dim;
    if (n == cap) { /* many grid sizes (not a use of this model we know of): the oldest table goes */
        m->be->free(m->be, m->sincos[0].t);
        memmove(m->sincos, m->sincos + 1, sizeof m->sincos[0] * (size_t)(cap - 1));
        n = m->nsincos = cap - 1;
    }
    float *h = malloc(bytes), *t = m->be->alloc(m->be, bytes);
    if (!h || !t) {
        free(h);
        if (t)
            m->be->free(m->be, t);
        upm_errf(err, UPM_ENOMEM, "model: no memory for the positions of a %d x %d grid", gh, gw);
        return NULL;
    }
    upm_sincos_2d(h, gh, gw, m->cfg.dim);
    m->be->upload(m->be, t, h, bytes);
    free(h);
    m->sincos[n].gh = gh, m->sincos[n].gw = gw, m->sincos[n].t = t;
    m->nsincos = n + 1;
    return t;
}

/* Plans the input and makes the arena big enough; uploads the plan's index arrays and the inputs. */
static int prepare(upm_model *m, upm_pass *p, const upm_seq_input *in, const upm_pass_opts *o, upm_err *err)
{
    upm_backend *be = m->be;
    const upm_model_config *cfg = &m->cfg;
    upm_seq_plan_free(&p->plan);
    int rc = upm_seq_plan_build(in, cfg->vocab, cfg->max_text, cfg->max_frames, &p->plan, err);
    if (rc)
        return rc;
    if (upm_moe_needs_task(cfg->moe) && !in->task)
        return upm_errf(err, UPM_EINVAL, "model: this %s model needs the pass's task id", upm_moe_kind_name(cfg->moe));
    if (upm_moe_needs_task(cfg->moe) && (in->task < 1 || in->task > cfg->ntasks))
        return upm_errf(err, UPM_EINVAL, "model: task id %d is beyond this model's trained task table (%d of %d slots "
                        "taken)", in->task, cfg->ntasks, cfg->task_slots);
    p->in = *in;
    for (int q = 0; cfg->moe == UPM_MOE_MERGED && q < p->plan.npat; q++) {
        int s = 0;
        while (s < cfg->npatterns && cfg->patterns[s] != p->plan.pat[q])
            s++;
        if (s == cfg->npatterns)
            return upm_errf(err, UPM_EINVAL, "model: this merged model serves %d attribute patterns, not %u (a "
                            "token kind of another task)", cfg->npatterns, p->plan.pat[q]);
        p->slot[q] = s;
    }
    if (upm_moe_token_routed(cfg->moe) && o && o->train && o->gate_noise &&
        (o->noise_seq0 < 0 || (o->noise_nseq && o->noise_seq0 + in->nseq > o->noise_nseq)))
        return upm_errf(err, UPM_EINVAL, "model: gate noise for sequences %d..%d of a table of %d", o->noise_seq0,
                        o->noise_seq0 + in->nseq - 1, o->noise_nseq);
    int32_t *order = NULL;
    p->nvalid = p->cap = 0;
    if (upm_moe_token_routed(cfg->moe)) { /* the tokens that take part in routing, in priority order */
        const upm_seq_plan *pl = &p->plan;
        if (!(order = malloc(sizeof(int32_t) * (size_t)(pl->N ? pl->N : 1))))
            return upm_errf(err, UPM_ENOMEM, "model: no memory for a pass");
        for (int b = 0; b < pl->nseq; b++)
            for (int i = 0; i < pl->S; i++)
                if (pl->mask[((size_t)b * pl->S + i) * pl->S + i]) /* a token that sees itself: not padding */
                    order[p->nvalid++] = pl->row_of[(size_t)b * pl->S + i];
        p->cap = upm_token_capacity(cfg, p->nvalid, o && o->train);
    }
    upm_layer_act *layers = realloc(p->layers, sizeof *layers * (size_t)cfg->layers);
    if (!layers) {
        free(order);
        return upm_errf(err, UPM_ENOMEM, "model: no memory for a pass");
    }
    p->layers = layers;
    int noise = o && o->train && o->gate_noise, keep = o && o->train && o->keep;
    p->train = o && o->train;
    for (int l = 0; l < cfg->layers; l++)
        p->layers[l].has_noise = noise;
    carver c = {NULL, 0};
    carve_pass(m, p, &c, keep);
    if (c.off > p->arena_bytes) {
        if (p->arena)
            be->free(be, p->arena);
        p->arena_bytes = 0;
        if (!(p->arena = be->alloc(be, c.off))) {
            free(order);
            return upm_errf(err, UPM_ENOMEM, "model: no memory for the activations of %d x %d tokens (%zu MB)",
                            p->plan.nseq, p->plan.S, c.off >> 20);
        }
        p->arena_bytes = c.off;
    }
    c = (carver){p->arena, 0};
    carve_pass(m, p, &c, keep);

    const upm_seq_plan *pl = &p->plan;
    size_t N = (size_t)pl->N, nseq = (size_t)pl->nseq, S = (size_t)pl->S;
    be->upload(be, p->perm, pl->perm, N * 4);
    be->upload(be, p->row_of, pl->row_of, nseq * S * 4);
    be->upload(be, p->seq_of, pl->seq_of, N * 4);
    be->upload(be, p->read_rows, pl->read_rows, (size_t)pl->nread * 4);
    be->upload(be, p->spe_idx, pl->spe_idx, nseq * 4);
    be->upload(be, p->mask, pl->mask, nseq * S * S);
    if (order)
        be->upload(be, p->order, order, sizeof(int32_t) * (size_t)p->nvalid);
    free(order);
    for (int s = 0; s < in->nseg; s++) {
        const upm_seq_segment *g = &in->seg[s];
        size_t tok = (size_t)upm_seq_segment_tokens(g);
        be->upload(be, p->pos_idx[s], pl->pos_idx[s], nseq * tok * 4);
        be->upload(be, p->frame_idx[s], pl->frame_idx[s], nseq * tok * 4);
        if (g->kind == UPM_SEG_TEXT) {
            be->upload(be, p->ids[s], g->ids, nseq * tok * 4);
            continue;
        }
        be->upload(be, p->pixels[s], g->pixels, sizeof(float) * nseq * g->T * 3 * g->H * g->W);
        if (!(p->sincos[s] = sincos_table(m, g->H / 16, g->W / 16, err)))
            return err->code;
    }
    /* each pattern's gate input (its attribute bits, its one-hot modality or task), task-specific weights'
     * one-hot choice, and per-layer noise rows and keep factors */
    int gin = upm_gate_inputs(cfg), video = 0, E = cfg->experts, token = upm_moe_token_routed(cfg->moe);
    for (int s = 0; s < in->nseg; s++)
        video |= in->seg[s].kind == UPM_SEG_VIDEO;
    size_t host_n = (size_t)pl->npat * (size_t)(gin > E ? gin : E);
    size_t noise_rows = token ? (size_t)pl->N : (size_t)pl->npat;
    float *bits = malloc(sizeof(float) * host_n), *rows = noise ? malloc(sizeof(float) * noise_rows * E) : NULL;
    if (!bits || (noise && !rows)) {
        free(bits);
        free(rows);
        return upm_errf(err, UPM_ENOMEM, "model: no memory for gate inputs");
    }
    for (int q = 0; q < pl->npat; q++)
        upm_gate_input_row(cfg, pl->pat[q], video, in->task, bits + (size_t)q * gin);
    be->upload(be, p->bits, bits, sizeof(float) * (size_t)pl->npat * gin);
    if (p->G_fixed) {
        for (int q = 0; q < pl->npat; q++)
            for (int e = 0; e < E; e++)
                bits[(size_t)q * E + e] = (float)(e == in->task - 1);
        be->upload(be, p->G_fixed, bits, sizeof(float) * (size_t)pl->npat * E);
    }
    for (int l = 0; l < cfg->layers; l++) {
        upm_layer_act *la = &p->layers[l];
        for (int gi = 0; noise && gi < UPM_NGATES; gi++) {
            if (!m->L.blocks[l].has_gate[gi])
                continue;
            if (token) { /* by (sequence, position) into row order */
                size_t tn = (size_t)(o->noise_nseq ? o->noise_nseq : pl->nseq) * S;
                const float *tab = o->gate_noise + ((size_t)l * UPM_NGATES + gi) * tn * E + (size_t)o->noise_seq0 * S * E;
                for (size_t bp = 0; bp < nseq * S; bp++)
                    memcpy(rows + (size_t)pl->row_of[bp] * E, tab + bp * E, sizeof(float) * E);
            } else {
                const float *tab = o->gate_noise + ((size_t)l * UPM_NGATES + gi) * 256 * E;
                for (int q = 0; q < pl->npat; q++)
                    memcpy(rows + (size_t)q * E, tab + (size_t)pl->pat[q] * E, sizeof(float) * E);
            }
            be->upload(be, la->gate[gi].noise, rows, sizeof(float) * noise_rows * E);
        }
        if (keep) {
            be->upload(be, la->keep1, o->keep + ((size_t)l * 2) * nseq, sizeof(float) * nseq);
            be->upload(be, la->keep2, o->keep + ((size_t)l * 2 + 1) * nseq, sizeof(float) * nseq);
        }
    }
    free(rows);
    free(bits);
    p->attn = (upm_attn_desc){(int)nseq, (int)S, cfg->heads, cfg->dim / cfg->heads, p->row_of, p->mask};
    p->cattn = (upm_attn_desc){(int)nseq, (int)S, 1, E, p->row_of, p->mask};
    if (p->cone) { /* the pools' query: the first unit vector, against keys that carry the scores */
        float *one = calloc(3 * (size_t)E, sizeof *one);
        if (!one)
            return upm_errf(err, UPM_ENOMEM, "model: no memory for a pass");
        one[0] = 1.0f;
        be->upload(be, p->cone, one, sizeof(float) * 3 * (size_t)E);
        free(one);
    }
    p->have_plan = 1;
    return 0;
}

static void embed_forward(upm_model *m, upm_pass *p)
{
    upm_backend *be = m->be;
    const upm_model_config *cfg = &m->cfg;
    const upm_layout *L = &m->L;
    const upm_seq_plan *pl = &p->plan;
    int D = cfg->dim, n = pl->nseq;
    be->zero(be, p->E, sizeof(float) * (size_t)pl->N * D);
    if (!p->in.no_spe)
        be->gather_add(be, p->E, WEIGHTS(L->spe), p->spe_idx, n, D);
    for (int s = 0; s < p->in.nseg; s++) {
        const upm_seq_segment *g = &p->in.seg[s];
        int rows = n * upm_seq_segment_tokens(g);
        float *Es = p->E + (size_t)pl->seg_e0[s] * D;
        if (g->kind == UPM_SEG_TEXT) {
            be->gather_add(be, Es, WEIGHTS(L->token), p->ids[s], rows, D);
            be->gather_add(be, Es, WEIGHTS(L->text_pos), p->pos_idx[s], rows, D);
            continue;
        }
        be->patchify(be, p->patches[s], p->pixels[s], n, g->T, g->H, g->W);
        be->gemm_ct(be, m->compute, 0, 1, rows, D, UPM_PATCH_DIM, 1.0f, p->patches[s], UPM_PATCH_DIM, WEIGHTS(L->patch_w), UPM_PATCH_DIM,
                 1.0f, Es, D);
        be->add_bias(be, Es, WEIGHTS(L->patch_b), rows, D);
        be->gather_add(be, Es, p->sincos[s], p->pos_idx[s], rows, D);
        if (g->kind == UPM_SEG_VIDEO)
            be->gather_add(be, Es, WEIGHTS(L->temporal), p->frame_idx[s], rows, D);
    }
    be->gather_rows(be, p->x0, p->E, p->perm, pl->N, D);
}

static void embed_backward(upm_model *m, upm_pass *p, const float *dx0)
{
    upm_backend *be = m->be;
    const upm_layout *L = &m->L;
    const upm_seq_plan *pl = &p->plan;
    int D = m->cfg.dim, n = pl->nseq;
    be->zero(be, p->dE, sizeof(float) * (size_t)pl->N * D);
    be->scatter_rows_add(be, p->dE, dx0, p->perm, pl->N, D);
    if (!p->in.no_spe)
        be->scatter_add(be, GRADS(L->spe), p->dE, p->spe_idx, n, D);
    for (int s = 0; s < p->in.nseg; s++) {
        const upm_seq_segment *g = &p->in.seg[s];
        int rows = n * upm_seq_segment_tokens(g);
        const float *dEs = p->dE + (size_t)pl->seg_e0[s] * D;
        if (g->kind == UPM_SEG_TEXT) {
            be->scatter_add(be, GRADS(L->token), dEs, p->ids[s], rows, D);
            be->scatter_add(be, GRADS(L->text_pos), dEs, p->pos_idx[s], rows, D);
            continue;
        }
        be->gemm_ct(be, m->compute, 1, 0, D, UPM_PATCH_DIM, rows, 1.0f, dEs, D, p->patches[s], UPM_PATCH_DIM, 1.0f, GRADS(L->patch_w),
                 UPM_PATCH_DIM);
        be->bias_grad(be, GRADS(L->patch_b), dEs, rows, D);
        if (g->kind == UPM_SEG_VIDEO)
            be->scatter_add(be, GRADS(L->temporal), dEs, p->frame_idx[s], rows, D);
    }
}

int upm_pass_forward(upm_model *m, upm_pass *p, const upm_seq_input *in, const upm_pass_opts *o, upm_err *err)
{
    int rc = prepare(m, p, in, o, err);
    if (rc)
        return rc;
    upm_backend *be = m->be;
    const upm_layout *L = &m->L;
    int D = m->cfg.dim, R = p->plan.nread;
    embed_forward(m, p);
    const float *x = p->x0;
    for (int l = 0; l < m->cfg.layers; l++) {
        upm_block_forward(m, p, l, x);
        x = p->layers[l].x_out;
    }
    be->gather_rows(be, p->zsel, x, p->read_rows, R, D);
    be->layernorm_fwd(be, p->zn, p->zmean, p->zrstd, p->zsel, WEIGHTS(L->norm_w), WEIGHTS(L->norm_b), R, D, m->cfg.ln_eps);
    be->gemm_ct(be, m->compute, 0, 1, R, D, D, 1.0f, p->zn, D, WEIGHTS(L->proj_w), D, 0.0f, p->feat, D);
    be->l2norm_fwd(be, p->U, p->fnorm, p->feat, R, D);
    return be->status(be, err);
}

const float *upm_pass_features(const upm_pass *p) { return p->U; }
size_t upm_pass_bytes(const upm_pass *p) { return p->arena_bytes; }

int upm_pass_token_choices(upm_model *m, const upm_pass *p, int l, int gi, double *counts, int64_t *tokens,
                           upm_err *err)
{
    if (!upm_moe_token_routed(m->cfg.moe) || l < 0 || l >= m->cfg.layers || gi < 0 || gi >= UPM_NGATES ||
        !m->L.blocks[l].has_gate[gi] || !p->have_plan || !p->layers)
        return upm_errf(err, UPM_EINVAL, "token choices: block %d gate %d of a token-routed pass that ran", l, gi);
    int N = p->plan.N, E = m->cfg.experts, n = p->nvalid;
    float *G = malloc(sizeof(float) * (size_t)N * E);
    int32_t *order = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
    if (!G || !order) {
        free(G), free(order);
        return upm_errf(err, UPM_ENOMEM, "token choices: no memory");
    }
    m->be->download(m->be, G, p->layers[l].gate[gi].G, sizeof(float) * (size_t)N * E);
    m->be->download(m->be, order, p->order, sizeof(int32_t) * (size_t)n);
    for (int t = 0; t < n; t++) {
        int e = upm_route_choice(G + (size_t)order[t] * E, E, 0);
        if (e >= 0)
            counts[e] += 1;
    }
    *tokens += n;
    free(G), free(order);
    return m->be->status(m->be, err);
}

int upm_pass_backward(upm_model *m, upm_pass *p, const float *dU, upm_err *err)
{
    return upm_pass_backward_cb(m, p, dU, NULL, NULL, err);
}

int upm_pass_backward_cb(upm_model *m, upm_pass *p, const float *dU, void (*done)(void *ctx, int group), void *ctx,
                         upm_err *err)
{
    if (!p->have_plan || p->kv)
        return upm_errf(err, UPM_EINVAL, "model: backward of a pass that has not run forward (or of a generation "
                        "step, which has none)");
    upm_backend *be = m->be;
    const upm_layout *L = &m->L;
    int D = m->cfg.dim, R = p->plan.nread, N = p->plan.N;
    be->zero(be, p->dfeat, sizeof(float) * (size_t)R * D);
    be->l2norm_bwd(be, p->dfeat, dU, p->U, p->fnorm, R, D);
    be->gemm_ct(be, m->compute, 1, 0, D, D, R, 1.0f, p->dfeat, D, p->zn, D, 1.0f, GRADS(L->proj_w), D);
    be->gemm_ct(be, m->compute, 0, 0, R, D, D, 1.0f, p->dfeat, D, WEIGHTS(L->proj_w), D, 0.0f, p->dzn, D);
    be->zero(be, p->dzsel, sizeof(float) * (size_t)R * D);
    be->layernorm_bwd(be, p->dzsel, GRADS(L->norm_w), GRADS(L->norm_b), p->dzn, p->zsel, p->zmean, p->zrstd, WEIGHTS(L->norm_w), R,
                      D);
    if (done)
        done(ctx, m->cfg.layers);
    float *dx = p->dxa, *dnext = p->dxb;
    be->zero(be, dx, sizeof(float) * (size_t)N * D);
    be->scatter_rows_add(be, dx, p->dzsel, p->read_rows, R, D);
    for (int l = m->cfg.layers - 1; l >= 0; l--) {
        const float *x_in = l ? p->layers[l - 1].x_out : p->x0;
        upm_block_backward(m, p, l, x_in, dx, dnext);
        if (done)
            done(ctx, l);
        float *t = dx;
        dx = dnext, dnext = t;
    }
    embed_backward(m, p, dx);
    if (done)
        done(ctx, -1);
    return be->status(be, err);
}

void upm_drop_path_keep(float *keep, size_t n, float p, upm_rng *r)
{
    for (size_t i = 0; i < n; i++)
        keep[i] = upm_rng_uniform(r) < p ? 0.0f : 1.0f / (1.0f - p);
}
