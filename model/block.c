/* One encoder block, forward and backward (docs/model.md, "Encoder"), with its linears dense or
 * Conditional-MoE routed by a data-independent gate (attribute, modality or task; or task-specific's fixed
 * choice): gate values per attribute pattern present, experts merged into one weight per pattern
 * (expert_mix), then one matmul per pattern's contiguous rows; or by a gate per token (token and context
 * routing): each expert's matmul on the rows dispatched to it. */
#include <math.h>

#include "pass_internal.h"
#include "progress.h"

#define WEIGHTS(i) upm_model_w(m, (i)) /* parameter i's values, backend memory */
#define GRADS(i) upm_model_g(m, (i))   /* its gradient */

void upm_gate_eval(const upm_model *m, const upm_gate_idx *k, const float *bits, int P, float *Hg, float *mean,
                   float *rstd, float *Rn, float *Z, float *probs, float *G, const float *noise)
{
    upm_backend *be = m->be;
    int D = m->cfg.dim, E = m->cfg.experts, gin = upm_gate_inputs(&m->cfg);
    for (int q = 0; q < P; q++) /* one row per call: a BLAS may round a row differently with other rows */
        be->gemm(be, 0, 1, 1, D, gin, 1.0f, bits + (size_t)q * gin, gin, upm_model_w(m, k->attr_w), gin, 0.0f,
                 Hg + (size_t)q * D, D);
    be->add_bias(be, Hg, upm_model_w(m, k->attr_b), P, D);
    be->layernorm_fwd(be, Rn, mean, rstd, Hg, upm_model_w(m, k->norm_w), upm_model_w(m, k->norm_b), P, D,
                      m->cfg.ln_eps);
    for (int q = 0; q < P; q++)
        be->gemm(be, 0, 1, 1, E, D, 1.0f, Rn + (size_t)q * D, D, upm_model_w(m, k->proj_w), D, 0.0f, Z + (size_t)q * E, E);
    be->topk_softmax_fwd(be, G, probs, Z, noise, P, E, m->cfg.topk, m->cfg.gate_renorm);
}

static void gate_forward(upm_model *m, upm_pass *p, const upm_gate_idx *k, upm_gate_act *g)
{
    upm_gate_eval(m, k, p->bits, p->plan.npat, g->Hg, g->mean, g->rstd, g->Rn, g->Z, g->probs, g->G, g->noise);
}

/* Marks the experts this gate chose for some pattern (token routing: for some token; training passes only;
 * see upm_model). */
static void mark_experts(upm_model *m, upm_pass *p, int l, int gi, const upm_gate_act *g)
{
    int E = m->cfg.experts, rows = upm_moe_token_routed(m->cfg.moe) ? p->plan.N : p->plan.npat;
    m->be->mark_nonzero_cols(m->be, m->expert_used_dev + ((size_t)l * UPM_NGATES + (size_t)gi) * (size_t)E, g->G,
                             rows, E);
}

static void gate_backward(upm_model *m, upm_pass *p, const upm_gate_idx *k, upm_gate_act *g)
{
    upm_backend *be = m->be;
    int P = p->plan.npat, D = m->cfg.dim, E = m->cfg.experts, gin = upm_gate_inputs(&m->cfg);
    be->zero(be, g->dZ, sizeof(float) * (size_t)P * E);
    be->topk_softmax_bwd(be, g->dZ, g->dG, g->G, g->probs, P, E, m->cfg.gate_renorm);
    be->gemm(be, 1, 0, E, D, P, 1.0f, g->dZ, E, g->Rn, D, 1.0f, GRADS(k->proj_w), D);
    be->gemm(be, 0, 0, P, D, E, 1.0f, g->dZ, E, WEIGHTS(k->proj_w), D, 0.0f, g->dRn, D);
    be->zero(be, g->dHg, sizeof(float) * (size_t)P * D);
    be->layernorm_bwd(be, g->dHg, GRADS(k->norm_w), GRADS(k->norm_b), g->dRn, g->Hg, g->mean, g->rstd, WEIGHTS(k->norm_w), P, D);
    be->gemm(be, 1, 0, D, gin, P, 1.0f, g->dHg, D, p->bits, gin, 1.0f, GRADS(k->attr_w), gin);
    be->bias_grad(be, GRADS(k->attr_b), g->dHg, P, D);
}

/* ---- token and context routing (docs/model.md, "Token routing"): a gate per row, each expert on its
 * dispatched rows ---- */

/* The attention a pool of the pass runs: the pass's own (its mask: what each token sees), or in a generation
 * step the one over its caches. */
static void pool_attention(upm_model *m, upm_pass *p, int l, int gi, upm_gate_act *g)
{
    upm_backend *be = m->be;
    if (p->kv) {
        upm_attn_kv_desc d = p->kv[(size_t)l * UPM_KV_STREAMS + 1 + gi];
        d.nseq = p->plan.nseq, d.n_new = p->plan.S, d.row_of = p->row_of;
        be->attention_kv_fwd(be, g->Z, g->cqkv, &d);
    } else
        be->attention_fwd(be, g->Z, g->cprobs, g->cqkv, &p->cattn);
}

/* Context routing's logits (Eq. 6), Z = W_g concat(x, attnpool(X)) = W_tok x + sum_j a_j W_ctx x_j with
 * W_g = [W_tok | W_ctx] ([E, 2 in]) and a = the softmax of q.x_j / sqrt(in) over the tokens x sees (the
 * attention mask): W_ctx goes inside the pool, so the pool is one attention head of width E whose query is
 * constant and whose keys carry the scores (docs/model.md, "Context routing"). */
static void context_logits(upm_model *m, upm_pass *p, int l, int gi, const upm_gate_idx *k, upm_gate_act *g,
                           const float *X)
{
    upm_backend *be = m->be;
    int N = p->plan.N, E = m->cfg.experts, in = k->in, E3 = 3 * E;
    float alpha = sqrtf((float)E / (float)in); /* the head's 1/sqrt(E) then leaves 1/sqrt(in) */
    const float *W = WEIGHTS(k->proj_w);
    be->zero(be, g->cqkv, sizeof(float) * (size_t)N * E3);
    be->gemm(be, 0, 1, N, 1, in, alpha, X, in, WEIGHTS(k->query), in, 0.0f, g->cqkv + E, E3);
    be->gemm(be, 0, 1, N, E, in, 1.0f, X, in, W + in, 2 * in, 0.0f, g->cqkv + 2 * E, E3);
    be->add_bias(be, g->cqkv, p->cone, N, E3);
    pool_attention(m, p, l, gi, g);
    be->gemm(be, 0, 1, N, E, in, 1.0f, X, in, W, 2 * in, 1.0f, g->Z, E);
}

/* The gradients of context_logits from dZ: W_tok's and dX's directly, then through the pool's attention to
 * the scores (the query, dX) and the values (W_ctx, dX). */
static void context_backward(upm_model *m, upm_pass *p, const upm_gate_idx *k, upm_gate_act *g, const float *X,
                             float *dX)
{
    upm_backend *be = m->be;
    int N = p->plan.N, E = m->cfg.experts, in = k->in, E3 = 3 * E;
    float alpha = sqrtf((float)E / (float)in);
    const float *W = WEIGHTS(k->proj_w);
    float *dW = GRADS(k->proj_w), *dk = p->dcqkv + E, *dv = p->dcqkv + 2 * E;
    be->gemm(be, 1, 0, E, in, N, 1.0f, g->dZ, E, X, in, 1.0f, dW, 2 * in);
    be->gemm(be, 0, 0, N, in, E, 1.0f, g->dZ, E, W, 2 * in, 1.0f, dX, in);
    be->zero(be, p->dcqkv, sizeof(float) * (size_t)N * E3);
    be->attention_bwd(be, p->dcqkv, g->dZ, g->cprobs, g->cqkv, &p->cattn);
    be->gemm(be, 1, 0, 1, in, N, alpha, dk, E3, X, in, 1.0f, GRADS(k->query), in);
    be->gemm(be, 0, 0, N, in, 1, alpha, dk, E3, WEIGHTS(k->query), in, 1.0f, dX, in);
    be->gemm(be, 1, 0, E, in, N, 1.0f, dv, E3, X, in, 1.0f, dW + in, 2 * in);
    be->gemm(be, 0, 0, N, in, E, 1.0f, dv, E3, W + in, 2 * in, 1.0f, dX, in);
}

/* The gate of rows X [N, in]: logits W_g x (Eq. 5; context routing: Eq. 6), top-k of their softmax, the
 * dispatch with this pass's capacity; in training the balance loss's value and the experts used. */
static void token_gate_forward(upm_model *m, upm_pass *p, int l, int gi, const upm_gate_idx *k, upm_gate_act *g,
                               const float *X)
{
    upm_backend *be = m->be;
    int N = p->plan.N, E = m->cfg.experts, K = m->cfg.topk;
    if (upm_moe_context(m->cfg.moe))
        context_logits(m, p, l, gi, k, g, X);
    else
        be->gemm(be, 0, 1, N, E, k->in, 1.0f, X, k->in, WEIGHTS(k->proj_w), k->in, 0.0f, g->Z, E);
    be->topk_softmax_fwd(be, g->G, g->probs, g->Z, g->noise, N, E, K, m->cfg.gate_renorm);
    be->moe_dispatch(be, g->idx, g->w, m->stats + UPM_STAT_DROPPED, g->G, p->order, p->nvalid, E, K, p->cap);
    m->route_assignments += (double)p->nvalid * K;
    if (!p->train)
        return;
    be->moe_balance(be, m->stats + UPM_STAT_BALANCE, NULL, g->probs, g->G, p->order, p->nvalid, E, 0.0f);
    m->route_evals++;
    if (m->expert_used_dev)
        mark_experts(m, p, l, gi, g);
}

/* dlogits through the top-k softmax (and, in training, the balance loss); gradients of W_g, and dX += the
 * gate input's gradient. */
static void token_gate_backward(upm_model *m, upm_pass *p, const upm_gate_idx *k, upm_gate_act *g, const float *X,
                                float *dX)
{
    upm_backend *be = m->be;
    int N = p->plan.N, E = m->cfg.experts;
    be->zero(be, g->dZ, sizeof(float) * (size_t)N * E);
    be->topk_softmax_bwd(be, g->dZ, g->dG, g->G, g->probs, N, E, m->cfg.gate_renorm);
    if (p->train && m->cfg.balance > 0)
        be->moe_balance(be, NULL, g->dZ, g->probs, g->G, p->order, p->nvalid, E, m->cfg.balance);
    if (upm_moe_context(m->cfg.moe)) {
        context_backward(m, p, k, g, X, dX);
        return;
    }
    be->gemm(be, 1, 0, E, k->in, N, 1.0f, g->dZ, E, X, k->in, 1.0f, GRADS(k->proj_w), k->in);
    be->gemm(be, 0, 0, N, k->in, E, 1.0f, g->dZ, E, WEIGHTS(k->proj_w), k->in, 1.0f, dX, k->in);
}

/* The rows expert e works on: its filled slots where the host can read the dispatch (the CPU backend: the
 * ops have run when they return, so reading costs no wait), else all C (a GPU's shapes stay known without
 * waiting; the free slots then add exact zeros). Dispatch fills each expert's slots from the first. */
static int expert_rows(upm_model *m, const upm_gate_act *g, int e, int C)
{
    const int32_t *idx = m->be->host_ptr ? m->be->host_ptr(m->be, (void *)(g->idx + (size_t)e * C)) : NULL;
    if (!idx)
        return C;
    int lo = 0, hi = C; /* the first free slot: filled slots come first */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (idx[mid] >= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Y = sum over the experts e of w_e * (X_e W_e^T + b_e) scattered back to the dispatched rows (Eq. 4); rows
 * no expert took (dropped, padding) get 0, so the residual carries them. Ye keeps each expert's output for
 * the gate's gradient. */
static void token_linear_forward(upm_model *m, upm_pass *p, upm_layer_act *la, int lin, const upm_linear_idx *k,
                                 const float *X, float *Y)
{
    upm_backend *be = m->be;
    const upm_gate_act *g = &la->gate[k->gate];
    int N = p->plan.N, E = m->cfg.experts, C = p->cap, in = k->in, out = k->out;
    size_t wn = (size_t)out * in;
    be->zero(be, Y, sizeof(float) * (size_t)N * out);
    for (int e = 0; e < E && C > 0; e++) {
        const int32_t *idx = g->idx + (size_t)e * C;
        float *Ye = la->lin[lin].Ye + (size_t)e * C * out;
        int n = expert_rows(m, g, e, C);
        if (n == 0)
            continue;
        be->gather_rows(be, p->Xs, X, idx, n, in);
        be->gemm_ct(be, m->compute, 0, 1, n, out, in, 1.0f, p->Xs, in, WEIGHTS(k->w) + (size_t)e * wn, in, 0.0f, Ye, out);
        be->add_bias(be, Ye, WEIGHTS(k->b) + (size_t)e * out, n, out);
        be->copy(be, p->Ys, Ye, sizeof(float) * (size_t)n * out);
        be->scale_rows(be, p->Ys, g->w + (size_t)e * C, n, out);
        be->scatter_rows_add(be, Y, p->Ys, idx, n, out);
    }
}

/* Per expert: dG[row, e] += <dY_row, Ye_row>; then with dY_e = w_e dY on its rows, dW_e += dY_e^T X_e,
 * db_e += colsum dY_e, dX[rows] += dY_e W_e. */
static void token_linear_backward(upm_model *m, upm_pass *p, upm_layer_act *la, int lin, const upm_linear_idx *k,
                                  const float *X, const float *dY, float *dX)
{
    upm_backend *be = m->be;
    upm_gate_act *g = &la->gate[k->gate];
    int E = m->cfg.experts, C = p->cap, in = k->in, out = k->out;
    size_t wn = (size_t)out * in;
    for (int e = 0; e < E && C > 0; e++) {
        const int32_t *idx = g->idx + (size_t)e * C;
        const float *Ye = la->lin[lin].Ye + (size_t)e * C * out;
        int n = expert_rows(m, g, e, C);
        if (n == 0)
            continue;
        be->gather_rows(be, p->Ys, dY, idx, n, out);
        be->row_dot_scatter(be, g->dG, p->Ys, Ye, idx, n, out, E, e);
        be->scale_rows(be, p->Ys, g->w + (size_t)e * C, n, out);
        be->gather_rows(be, p->Xs, X, idx, n, in);
        be->gemm_ct(be, m->compute, 1, 0, out, in, n, 1.0f, p->Ys, out, p->Xs, in, 1.0f, GRADS(k->w) + (size_t)e * wn, in);
        be->bias_grad(be, GRADS(k->b) + (size_t)e * out, p->Ys, n, out);
        be->gemm_ct(be, m->compute, 0, 0, n, in, out, 1.0f, p->Ys, out, WEIGHTS(k->w) + (size_t)e * wn, in, 0.0f, p->Xs, in);
        be->scatter_rows_add(be, dX, p->Xs, idx, n, in);
    }
}

/* Y = X W^T + b over all rows (dense) or per pattern with its merged weight (MoE). */
static void linear_forward(upm_model *m, upm_pass *p, upm_layer_act *la, int lin, const upm_linear_idx *k,
                           const float *X, float *Y)
{
    upm_backend *be = m->be;
    int N = p->plan.N, in = k->in, out = k->out;
    if (k->gate < 0) {
        be->gemm_ct(be, m->compute, 0, 1, N, out, in, 1.0f, X, in, WEIGHTS(k->w), in, 0.0f, Y, out);
        be->add_bias(be, Y, WEIGHTS(k->b), N, out);
        return;
    }
    if (upm_moe_token_routed(m->cfg.moe)) {
        token_linear_forward(m, p, la, lin, k, X, Y);
        return;
    }
    int P = p->plan.npat, E = m->cfg.experts, wn = out * in;
    if (m->cfg.moe == UPM_MOE_MERGED) { /* deployment: the pattern's own dense weight */
        for (int q = 0; q < P; q++) {
            int r0 = p->plan.pat_start[q], n = p->plan.pat_start[q + 1] - r0;
            be->gemm_ct(be, m->compute, 0, 1, n, out, in, 1.0f, X + (size_t)r0 * in, in, WEIGHTS(k->w) + (size_t)p->slot[q] * wn, in, 0.0f,
                     Y + (size_t)r0 * out, out);
            be->add_bias(be, Y + (size_t)r0 * out, WEIGHTS(k->b) + (size_t)p->slot[q] * out, n, out);
        }
        return;
    }
    upm_gate_act *g = &la->gate[k->gate];
    upm_linear_act *a = &la->lin[lin];
    be->expert_mix(be, a->Wm, g->G, WEIGHTS(k->w), P, E, (size_t)wn);
    be->expert_mix(be, a->bm, g->G, WEIGHTS(k->b), P, E, (size_t)out);
    for (int q = 0; q < P; q++) {
        int r0 = p->plan.pat_start[q], n = p->plan.pat_start[q + 1] - r0;
        be->gemm_ct(be, m->compute, 0, 1, n, out, in, 1.0f, X + (size_t)r0 * in, in, a->Wm + (size_t)q * wn, in, 0.0f,
                 Y + (size_t)r0 * out, out);
        be->add_bias(be, Y + (size_t)r0 * out, a->bm + (size_t)q * out, n, out);
    }
}

/* dX += dY W; weight and bias gradients into m->g (MoE: through the merged weights to the experts and
 * the gate values, dG += <W_e, dW_p> + <b_e, db_p>). */
static void linear_backward(upm_model *m, upm_pass *p, upm_layer_act *la, int lin, const upm_linear_idx *k,
                            const float *X, const float *dY, float *dX)
{
    upm_backend *be = m->be;
    int N = p->plan.N, in = k->in, out = k->out;
    if (k->gate < 0) {
        be->gemm_ct(be, m->compute, 0, 0, N, in, out, 1.0f, dY, out, WEIGHTS(k->w), in, 1.0f, dX, in);
        be->gemm_ct(be, m->compute, 1, 0, out, in, N, 1.0f, dY, out, X, in, 1.0f, GRADS(k->w), in);
        be->bias_grad(be, GRADS(k->b), dY, N, out);
        return;
    }
    if (upm_moe_token_routed(m->cfg.moe)) {
        token_linear_backward(m, p, la, lin, k, X, dY, dX);
        return;
    }
    int P = p->plan.npat, E = m->cfg.experts, wn = out * in;
    if (m->cfg.moe == UPM_MOE_MERGED) { /* each pattern's dense weight, like a dense linear on its rows */
        for (int q = 0; q < P; q++) {
            int r0 = p->plan.pat_start[q], n = p->plan.pat_start[q + 1] - r0, s = p->slot[q];
            const float *dYq = dY + (size_t)r0 * out, *Xq = X + (size_t)r0 * in;
            be->gemm_ct(be, m->compute, 0, 0, n, in, out, 1.0f, dYq, out, WEIGHTS(k->w) + (size_t)s * wn, in, 1.0f, dX + (size_t)r0 * in, in);
            be->gemm_ct(be, m->compute, 1, 0, out, in, n, 1.0f, dYq, out, Xq, in, 1.0f, GRADS(k->w) + (size_t)s * wn, in);
            be->bias_grad(be, GRADS(k->b) + (size_t)s * out, dYq, n, out);
        }
        return;
    }
    upm_gate_act *g = &la->gate[k->gate];
    upm_linear_act *a = &la->lin[lin];
    be->zero(be, a->dbm, sizeof(float) * (size_t)P * out);
    for (int q = 0; q < P; q++) {
        int r0 = p->plan.pat_start[q], n = p->plan.pat_start[q + 1] - r0;
        const float *dYq = dY + (size_t)r0 * out, *Xq = X + (size_t)r0 * in;
        be->gemm_ct(be, m->compute, 0, 0, n, in, out, 1.0f, dYq, out, a->Wm + (size_t)q * wn, in, 1.0f, dX + (size_t)r0 * in, in);
        be->gemm_ct(be, m->compute, 1, 0, out, in, n, 1.0f, dYq, out, Xq, in, 0.0f, a->dWm + (size_t)q * wn, in);
        be->bias_grad(be, a->dbm + (size_t)q * out, dYq, n, out);
    }
    be->gemm(be, 1, 0, E, wn, P, 1.0f, g->G, E, a->dWm, wn, 1.0f, GRADS(k->w), wn);
    be->gemm(be, 1, 0, E, out, P, 1.0f, g->G, E, a->dbm, out, 1.0f, GRADS(k->b), out);
    if (!g->dG) /* task-specific weights: a fixed choice, nothing to learn in it */
        return;
    be->gemm(be, 0, 1, P, E, wn, 1.0f, a->dWm, wn, WEIGHTS(k->w), wn, 1.0f, g->dG, E);
    be->gemm(be, 0, 1, P, E, out, 1.0f, a->dbm, out, WEIGHTS(k->b), out, 1.0f, g->dG, E);
}

void upm_block_forward(upm_model *m, upm_pass *p, int l, const float *x_in)
{
    upm_backend *be = m->be;
    const upm_block_idx *k = &m->L.blocks[l];
    upm_layer_act *la = &p->layers[l];
    int N = p->plan.N, D = m->cfg.dim, F = m->cfg.mlp;
    float eps = m->cfg.ln_eps;
    int token = upm_moe_token_routed(m->cfg.moe);
    upm_progress_tick();
    for (int gi = 0; gi < UPM_NGATES && !token; gi++) {
        if (k->has_gate[gi])
            gate_forward(m, p, &k->gate[gi], &la->gate[gi]);
        if (la->gate[gi].G && p->train && m->expert_used_dev) /* gated, or task-specific's fixed choice */
            mark_experts(m, p, l, gi, &la->gate[gi]);
    }
    be->layernorm_fwd(be, la->h, la->mean1, la->rstd1, x_in, WEIGHTS(k->ln1_w), WEIGHTS(k->ln1_b), N, D, eps);
    if (token && k->has_gate[UPM_GATE_ATTN]) /* qkv and the projection follow the gate on qkv's input */
        token_gate_forward(m, p, l, UPM_GATE_ATTN, &k->gate[UPM_GATE_ATTN], &la->gate[UPM_GATE_ATTN], la->h);
    linear_forward(m, p, la, UPM_LIN_QKV, &k->qkv, la->h, la->qkv);
    if (p->kv) { /* a generation step: the new tokens attend to the cache */
        upm_attn_kv_desc d = p->kv[(size_t)l * UPM_KV_STREAMS];
        d.nseq = p->plan.nseq, d.n_new = p->plan.S, d.row_of = p->row_of;
        be->attention_kv_fwd(be, la->a, la->qkv, &d);
    } else
        be->attention_fwd(be, la->a, la->probs, la->qkv, &p->attn);
    linear_forward(m, p, la, UPM_LIN_PROJ, &k->proj, la->a, la->o);
    be->residual_fwd(be, la->x_mid, x_in, la->o, WEIGHTS(k->ls1), la->keep1, p->seq_of, N, D);
    be->layernorm_fwd(be, la->h2, la->mean2, la->rstd2, la->x_mid, WEIGHTS(k->ln2_w), WEIGHTS(k->ln2_b), N, D, eps);
    if (token && k->has_gate[UPM_GATE_FC1])
        token_gate_forward(m, p, l, UPM_GATE_FC1, &k->gate[UPM_GATE_FC1], &la->gate[UPM_GATE_FC1], la->h2);
    linear_forward(m, p, la, UPM_LIN_FC1, &k->fc1, la->h2, la->f);
    be->gelu_fwd(be, la->gl, la->f, (size_t)N * F);
    if (token && k->has_gate[UPM_GATE_FC2])
        token_gate_forward(m, p, l, UPM_GATE_FC2, &k->gate[UPM_GATE_FC2], &la->gate[UPM_GATE_FC2], la->gl);
    linear_forward(m, p, la, UPM_LIN_FC2, &k->fc2, la->gl, la->o2);
    be->residual_fwd(be, la->x_out, la->x_mid, la->o2, WEIGHTS(k->ls2), la->keep2, p->seq_of, N, D);
}

void upm_block_backward(upm_model *m, upm_pass *p, int l, const float *x_in, const float *dx_out, float *dx_in)
{
    upm_backend *be = m->be;
    const upm_block_idx *k = &m->L.blocks[l];
    upm_layer_act *la = &p->layers[l];
    int N = p->plan.N, D = m->cfg.dim, F = m->cfg.mlp, P = p->plan.npat, E = m->cfg.experts;
    int token = upm_moe_token_routed(m->cfg.moe), G_rows = token ? N : P;
    size_t nd = sizeof(float) * (size_t)N * D, nf = sizeof(float) * (size_t)N * F;
    upm_progress_tick();
    for (int gi = 0; gi < UPM_NGATES; gi++)
        if (k->has_gate[gi])
            be->zero(be, la->gate[gi].dG, sizeof(float) * (size_t)G_rows * E);
    /* x_out = x_mid + keep2 * ls2 * fc2(gelu(fc1(ln2(x_mid)))) */
    be->zero(be, p->dx_mid, nd);
    be->zero(be, p->do2, nd);
    be->residual_bwd(be, p->dx_mid, p->do2, GRADS(k->ls2), dx_out, la->o2, WEIGHTS(k->ls2), la->keep2, p->seq_of, N, D);
    be->zero(be, p->dgl, nf);
    linear_backward(m, p, la, UPM_LIN_FC2, &k->fc2, la->gl, p->do2, p->dgl);
    if (token && k->has_gate[UPM_GATE_FC2]) /* token gates: their input's gradient before it is consumed */
        token_gate_backward(m, p, &k->gate[UPM_GATE_FC2], &la->gate[UPM_GATE_FC2], la->gl, p->dgl);
    be->zero(be, p->df, nf);
    be->gelu_bwd(be, p->df, p->dgl, la->f, (size_t)N * F);
    be->zero(be, p->dh2, nd);
    linear_backward(m, p, la, UPM_LIN_FC1, &k->fc1, la->h2, p->df, p->dh2);
    if (token && k->has_gate[UPM_GATE_FC1])
        token_gate_backward(m, p, &k->gate[UPM_GATE_FC1], &la->gate[UPM_GATE_FC1], la->h2, p->dh2);
    be->layernorm_bwd(be, p->dx_mid, GRADS(k->ln2_w), GRADS(k->ln2_b), p->dh2, la->x_mid, la->mean2, la->rstd2, WEIGHTS(k->ln2_w),
                      N, D);
    /* x_mid = x_in + keep1 * ls1 * proj(attn(qkv(ln1(x_in)))) */
    be->zero(be, dx_in, nd);
    be->zero(be, p->do_, nd);
    be->residual_bwd(be, dx_in, p->do_, GRADS(k->ls1), p->dx_mid, la->o, WEIGHTS(k->ls1), la->keep1, p->seq_of, N, D);
    be->zero(be, p->da, nd);
    linear_backward(m, p, la, UPM_LIN_PROJ, &k->proj, la->a, p->do_, p->da);
    be->zero(be, p->dqkv, 3 * nd);
    be->attention_bwd(be, p->dqkv, p->da, la->probs, la->qkv, &p->attn);
    be->zero(be, p->dh, nd);
    linear_backward(m, p, la, UPM_LIN_QKV, &k->qkv, la->h, p->dqkv, p->dh);
    if (token && k->has_gate[UPM_GATE_ATTN])
        token_gate_backward(m, p, &k->gate[UPM_GATE_ATTN], &la->gate[UPM_GATE_ATTN], la->h, p->dh);
    be->layernorm_bwd(be, dx_in, GRADS(k->ln1_w), GRADS(k->ln1_b), p->dh, x_in, la->mean1, la->rstd1, WEIGHTS(k->ln1_w), N, D);
    for (int gi = 0; gi < UPM_NGATES && !token; gi++)
        if (k->has_gate[gi])
            gate_backward(m, p, &k->gate[gi], &la->gate[gi]);
}
