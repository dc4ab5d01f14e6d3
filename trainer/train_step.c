/* One training (or evaluation) step on a batch already loaded (trainer_state.h, upm_trainer_batch_step):
 * the passes of both sides with their gate noise and drop-path tables, the loss of the task's formulation,
 * the backward passes (the last one reducing gradients bucket by bucket with several ranks), AdamW, and the
 * step's one wait for its statistics; then the metrics row. The loop, checkpoints and set-up: train.c. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batchdump.h"
#include "formulation.h"
#include "gradsync.h"
#include "inputs.h"
#include "loss.h"
#include "model.h"
#include "retrieval.h"
#include "rng.h"
#include "trainer_state.h"
#include "vocab.h"

/* Per-step random streams of the rank: rank 0 keeps the single-process keys. */
static uint64_t step_key(const trainer *t)
{
    return (uint64_t)t->step + ((uint64_t)t->rank << 40);
}

/* ---- per-step randomness: gate noise rows for the attribute bytes present, drop-path factors ---- */

/* Token routing's noise: one row per (layer, gate, sequence, position), each sequence its own stream. */
static int fill_token_noise(trainer *t, int pass, int nseq, int S)
{
    const upm_model_config *c = &t->cfg;
    float std = upm_gate_noise_std(c);
    size_t per = (size_t)nseq * S * c->experts, nn = (size_t)c->layers * UPM_NGATES * per;
    if (!upm_moe_token_routed(c->moe) || !(std > 0))
        return 0;
    if (nn > t->cap_noise[pass]) {
        float *n = realloc(t->noise[pass], nn * sizeof(float));
        if (!n)
            return UPM_ENOMEM;
        t->noise[pass] = n, t->cap_noise[pass] = nn;
    }
    for (int l = 0; l < c->layers; l++)
        for (int g = 0; g < UPM_NGATES; g++)
            for (int b = 0; b < nseq; b++) {
                upm_rng r = upm_rng_stream(t->o->seed, UPM_RNG_GATE_NOISE, step_key(t),
                                           (uint64_t)(pass * 4096 + l * UPM_NGATES + g), ((uint64_t)1 << 32) + (uint64_t)b);
                float *row = t->noise[pass] + ((size_t)l * UPM_NGATES + g) * per + (size_t)b * S * c->experts;
                for (size_t i = 0; i < (size_t)S * c->experts; i++)
                    row[i] = (float)(std * upm_rng_normal(&r));
            }
    return 0;
}

static int fill_tables(trainer *t, int pass, const upm_seq_input *in)
{
    const upm_model_config *c = &t->cfg;
    float std = upm_gate_noise_std(c);
    size_t nn = (size_t)c->layers * UPM_NGATES * 256 * c->experts, nk = (size_t)c->layers * 2 * in->nseq;
    if (upm_moe_token_routed(c->moe) && fill_token_noise(t, pass, in->nseq, upm_seq_positions(in)))
        return UPM_ENOMEM;
    if (upm_moe_gated(c->moe) && std > 0) {
        if (!t->noise[pass] && !(t->noise[pass] = calloc(nn, sizeof(float))))
            return UPM_ENOMEM;
        uint8_t seen[256] = {0};
        seen[in->spe_attr] = 1;
        for (int s = 0; s < in->nseg; s++)
            for (size_t i = 0; i < (size_t)in->nseq * upm_seq_segment_tokens(&in->seg[s]); i++)
                seen[in->seg[s].attrs[i]] = 1;
        for (int l = 0; l < c->layers; l++)
            for (int g = 0; g < UPM_NGATES; g++)
                for (int a = 0; a < 256; a++) {
                    if (!seen[a])
                        continue;
                    upm_rng r = upm_rng_stream(t->o->seed, UPM_RNG_GATE_NOISE, step_key(t),
                                               (uint64_t)(pass * 4096 + l * UPM_NGATES + g), (uint64_t)a);
                    float *row = t->noise[pass] + (((size_t)l * UPM_NGATES + g) * 256 + a) * c->experts;
                    for (int e = 0; e < c->experts; e++)
                        row[e] = (float)(std * upm_rng_normal(&r));
                }
    }
    if (c->drop_path > 0) {
        if (nk > t->cap_keep[pass]) {
            float *k = realloc(t->keep[pass], nk * sizeof(float));
            if (!k)
                return UPM_ENOMEM;
            t->keep[pass] = k, t->cap_keep[pass] = nk;
        }
        upm_rng r = upm_rng_stream(t->o->seed, UPM_RNG_DROP_PATH, step_key(t), (uint64_t)pass, 0);
        upm_drop_path_keep(t->keep[pass], nk, c->drop_path, &r);
    }
    return 0;
}

/* ---- device buffers that grow with the batch ---- */

int upm_trainer_ensure(upm_backend *be, void **p, size_t *cap, size_t bytes)
{
    if (bytes <= *cap)
        return 0;
    if (*p)
        be->free(be, *p);
    *cap = 0;
    if (!(*p = be->alloc(be, bytes)))
        return UPM_ENOMEM;
    *cap = bytes;
    return 0;
}

int upm_trainer_prompt_readouts(trainer *t, upm_seq_input *in)
{
    size_t need = (size_t)in->nseq * 2;
    if (need > t->cap_readout) {
        int32_t *r = realloc(t->readout, sizeof(int32_t) * need);
        if (!r)
            return UPM_ENOMEM;
        t->readout = r, t->cap_readout = need;
    }
    upm_prompt_readouts(in, t->readout, t->readout + in->nseq);
    return 0;
}

/* The label texts of b's dataset, with this step's synonym of each class (canonical names in evaluation). */
const upm_label_texts *upm_trainer_labels(trainer *t, const upm_batch *b, upm_err *err)
{
    for (int i = 0; i < t->nlabels; i++)
        if (!strcmp(t->labels[i].dataset, b->dataset)) {
            upm_label_texts_pick(&t->labels[i].lt, t->o->seed, t->eval ? -1 : t->step);
            return &t->labels[i].lt;
        }
    upm_dataset d;
    upm_task task;
    if (upm_dataset_get(t->cat, b->dataset, &d, err) || upm_task_get(t->cat, d.task, &task, err))
        return NULL;
    if (!t->bpe) {
        upm_errf(err, UPM_EUSAGE, "task %s has label texts: give the CLIP merges file (--bpe-vocab or "
                 "UPMOE_BPE_VOCAB; tools/setup installs one next to the programs, where they look by default)",
                 task.name);
        return NULL;
    }
    label_cache *lc = realloc(t->labels, sizeof *lc * (size_t)(t->nlabels + 1));
    if (!lc) {
        upm_errf(err, UPM_ENOMEM, "no memory for label texts");
        return NULL;
    }
    t->labels = lc;
    label_cache *e = &t->labels[t->nlabels];
    snprintf(e->dataset, sizeof e->dataset, "%s", b->dataset);
    if (upm_label_texts_load(t->cat, &task, d.label_set[0] ? d.label_set : task.label_set, t->bpe, &e->lt, err))
        return NULL;
    t->nlabels++;
    upm_label_texts_pick(&e->lt, t->o->seed, t->eval ? -1 : t->step);
    return &e->lt;
}

/* ---- one step ---- */

/* The step's last backward pass: with several ranks, its gradient groups are reduced as it completes
 * them (the earlier passes of the step have added theirs already). */
static int last_backward(trainer *t, upm_pass *p, const float *dU, upm_err *err)
{
    if (!t->gs)
        return upm_pass_backward(t->m, p, dU, err);
    upm_comm_set_phase(t->comm, "step %" PRId64 ": gradient all-reduce", t->step + 1); /* as progress lines count */
    int rc = upm_gradsync_begin(t->gs, err);
    if (!rc)
        rc = upm_pass_backward_cb(t->m, p, dU, t->o->no_overlap ? NULL : upm_gradsync_ready, t->gs, err);
    if (!rc)
        rc = upm_gradsync_finish(t->gs, &t->gst, err);
    return rc;
}

static void fill_row(trainer *t, upm_metric_row *row, const upm_loss_result *res, int candidates, float gnorm,
                     float lr)
{
    const upm_batch *b = &t->batch;
    memset(row, 0, sizeof *row);
    row->step = t->step;
    snprintf(row->task, sizeof row->task, "%s", b->task);
    snprintf(row->dataset, sizeof row->dataset, "%s", b->dataset);
    row->loss = res->loss;
    row->weighted_loss = res->loss * b->loss_weight;
    row->accuracy = res->rows ? res->correct / res->rows : -1;
    row->samples = b->B;
    row->scored = res->rows;
    row->lr = lr;
    row->grad_norm = gnorm;
    row->chance = candidates > 0 ? 1.0 / candidates : -1;
    row->accuracy_t2i = -1;
    row->has_route = t->route_balance >= 0;
    row->balance_loss = t->route_balance, row->dropped = t->route_dropped;
}

/* The step's one wait: its statistics (losses, the gradient norm) downloaded together, after the update
 * has been queued (model.h, UPM_STAT_*). */
static int step_stats(trainer *t, int pair, int rows, upm_loss_result *res, float *gnorm, upm_err *err)
{
    float st[UPM_NSTATS];
    int rc = upm_gradsync_settle(t->gs, err); /* device sums: bounded by the patience, not left to hang */
    if (rc)
        return rc;
    upm_model_stats_read(t->m, st);
    *res = upm_loss_result_of(st, pair, rows);
    const upm_model *m = t->m; /* token routing: the means over the step's gate evaluations */
    t->route_balance = m->route_evals > 0 ? st[UPM_STAT_BALANCE] / (double)m->route_evals : -1;
    t->route_dropped = m->route_assignments > 0 ? st[UPM_STAT_DROPPED] / m->route_assignments : -1;
    *gnorm = t->eval ? 0.0f : sqrtf(st[UPM_STAT_SUMSQ]);
    return t->be->status(t->be, err);
}

/* Evaluation of a pair batch: R@1 both ways over the batch as gallery, from the logits (images x texts). */
static int retrieval_row(trainer *t, const upm_seq_input *tg, upm_metric_row *row, upm_err *err)
{
    int B = t->batch.B;
    float *s = malloc(sizeof(float) * (size_t)B * B);
    if (!s)
        return upm_errf(err, UPM_ENOMEM, "no memory for %d x %d retrieval scores", B, B);
    t->be->download(t->be, s, t->logits, sizeof(float) * (size_t)B * B);
    const upm_seq_segment *g = &tg->seg[0];
    upm_retrieval_r1 r = upm_retrieval_r1_score(s, B, g->ids, g->L, g->lengths);
    free(s);
    row->accuracy = (double)r.hits_i2t / B;
    row->accuracy_t2i = (double)r.hits_t2i / B;
    row->chance = r.chance;
    return 0;
}

/* --dump-batches: the step just trained, as a step file (batchdump.h). */
static int dump_step(trainer *t, const upm_seq_input *in, const upm_seq_input *tg, const upm_vocab_batch *vb,
                     const upm_loss_result *res, float gnorm, float lr, upm_err *err)
{
    if (!t->o->dump_dir || (t->eval && !t->grads))
        return 0;
    int noisy = !t->eval && upm_moe_noisy(t->cfg.moe) && upm_gate_noise_std(&t->cfg) > 0; /* as the passes' */
    upm_batchdump_step s = {t->step, &t->batch, in, tg, vb, t->batch.spe_attr[UPM_SIDE_TARGET],
                            {noisy ? t->noise[0] : NULL, noisy ? t->noise[1] : NULL}, res->loss, lr, gnorm};
    return upm_batchdump_step_write(t->o->dump_dir, t->m, &s, err);
}

/* vocab-mlm / vocab-caption: read out the masked (or query) positions, score them against the encoded
 * candidate tokens (vocab.h), back-propagate through both. */
static int vocab_step(trainer *t, const upm_formulation_desc *fd, upm_metric_row *row, upm_err *err)
{
    upm_backend *be = t->be;
    upm_model *m = t->m;
    const upm_batch *b = &t->batch;
    upm_seq_input in;
    upm_vocab_batch vb = {0};
    int rc = upm_trainer_side_input(t, b, UPM_SIDE_INPUT, &in, err);
    if (!rc)
        rc = upm_vocab_readouts(b, &in, fd->readout, &vb, err);
    if (!rc)
        rc = upm_vocab_candidates(&vb, t->cfg.vocab, t->o->vocab_sampled, t->o->seed, (int64_t)step_key(t), err);
    if (rc) {
        upm_vocab_batch_free(&vb);
        return rc;
    }
    in.nread = vb.M, in.read_seq = vb.read_seq, in.read_pos = vb.read_pos;
    int M = vb.M, C = vb.C, D = t->cfg.dim;
    upm_seq_input dummy = {.nseq = 1, .spe_attr = b->spe_attr[UPM_SIDE_TARGET], .task = in.task};
    if (fill_tables(t, 0, &in) || fill_tables(t, 1, &dummy) || fill_token_noise(t, 1, C, 2))
        rc = upm_errf(err, UPM_ENOMEM, "no memory for gate noise");
    if (!rc && (upm_trainer_ensure(be, (void **)&t->dU, &t->cap_u, sizeof(float) * (size_t)M * D) ||
                upm_trainer_ensure(be, (void **)&t->dV, &t->cap_v, sizeof(float) * (size_t)C * D) ||
                upm_trainer_ensure(be, (void **)&t->V, &t->cap_V, sizeof(float) * (size_t)C * D) ||
                upm_trainer_ensure(be, (void **)&t->logq, &t->cap_logq, sizeof(float) * (size_t)C) ||
                upm_trainer_ensure(be, (void **)&t->logits, &t->cap_l, sizeof(float) * (size_t)M * C) ||
                upm_trainer_ensure(be, (void **)&t->dlabels, &t->cap_lab, sizeof(int32_t) * (size_t)M)))
        rc = upm_errf(err, UPM_ENOMEM, "no memory for %d read-outs against %d candidates", M, C);
    if (rc) {
        upm_vocab_batch_free(&vb);
        return rc;
    }
    int noisy = upm_moe_noisy(t->cfg.moe) && upm_gate_noise_std(&t->cfg) > 0, drop = t->cfg.drop_path > 0;
    if (t->eval)
        noisy = drop = 0;
    upm_pass_opts oi = {!t->eval || t->grads, noisy ? t->noise[0] : NULL, drop ? t->keep[0] : NULL, 0, 0};
    uint8_t text_attr = b->spe_attr[UPM_SIDE_TARGET]; /* vocabulary tokens are target-side text */
    upm_vocab_encode_opts vo = {b->spe_attr[UPM_SIDE_TARGET], text_attr, t->o->vocab_chunk, noisy ? t->noise[1] : NULL,
                                drop ? t->cfg.drop_path : 0.0f, t->o->seed, (int64_t)step_key(t), in.task,
                                t->eval && !t->grads};
    upm_model_zero_grad(m);
    be->zero(be, t->dU, sizeof(float) * (size_t)M * D);
    be->zero(be, t->dV, sizeof(float) * (size_t)C * D);
    be->upload(be, t->dlabels, vb.target_idx, sizeof(int32_t) * (size_t)M);
    if (vb.logq)
        be->upload(be, t->logq, vb.logq, sizeof(float) * (size_t)C);
    upm_loss_result res;
    if (!(rc = upm_pass_forward(m, t->pass_in, &in, &oi, err)) &&
        !(rc = upm_vocab_encode(m, t->pass_voc, vb.cand, C, &vo, t->V, NULL, err)) &&
        !(rc = upm_loss_label(m, upm_pass_features(t->pass_in), M, t->V, C, t->dlabels, vb.logq ? t->logq : NULL,
                              b->loss_weight, t->dU, t->dV, t->logits, err)) &&
        (!t->eval || t->grads) && !(rc = upm_vocab_encode(m, t->pass_voc, vb.cand, C, &vo, t->V, t->dV, err)))
        rc = last_backward(t, t->pass_in, t->dU, err);
    float gnorm = 0, lr = 0;
    if (!rc && !t->eval)
        rc = upm_optim_step(&t->opt, m, NULL, &lr, err);
    if (!rc)
        rc = step_stats(t, 0, M, &res, &gnorm, err);
    if (!rc)
        rc = dump_step(t, &in, NULL, &vb, &res, gnorm, lr, err);
    if (!rc)
        rc = upm_vocab_blind_add(t->blind, &vb, fd->readout, err);
    upm_vocab_batch_free(&vb);
    if (rc)
        return rc;
    fill_row(t, row, &res, C, gnorm, lr);
    return 0;
}

int upm_trainer_batch_step(trainer *t, upm_metric_row *row, upm_err *err)
{
    upm_backend *be = t->be;
    upm_model *m = t->m;
    upm_batch *b = &t->batch;
    int rc;
    const upm_formulation_desc *fd = upm_formulation_desc_get(b->formulation);
    if (!fd)
        return upm_errf(err, UPM_EINVAL, "batch of task %s: unknown formulation %d", b->task, (int)b->formulation);
    if (fd->targets == UPM_TARGETS_VOCABULARY)
        return vocab_step(t, fd, row, err);
    upm_seq_input in, tg;
    const upm_label_texts *lt = NULL;
    if ((rc = upm_trainer_side_input(t, b, UPM_SIDE_INPUT, &in, err)))
        return rc;
    if (upm_trainer_prompt_readouts(t, &in))
        return upm_errf(err, UPM_ENOMEM, "no memory for a batch of %d", b->B);
    if (fd->targets == UPM_TARGETS_LABEL_TEXTS) {
        if (!(lt = upm_trainer_labels(t, b, err)))
            return err->code ? err->code : UPM_EINVAL;
        upm_label_texts_input(lt, &tg);
        tg.task = in.task;
    } else if ((rc = upm_trainer_side_input(t, b, UPM_SIDE_TARGET, &tg, err)))
        return rc;
    if (fill_tables(t, 0, &in) || fill_tables(t, 1, &tg))
        return upm_errf(err, UPM_ENOMEM, "no memory for gate noise");
    int noisy = !t->eval && upm_moe_noisy(t->cfg.moe) && upm_gate_noise_std(&t->cfg) > 0;
    int drop = !t->eval && t->cfg.drop_path > 0;
    upm_pass_opts oi = {!t->eval || t->grads, noisy ? t->noise[0] : NULL, drop ? t->keep[0] : NULL, 0, 0};
    upm_pass_opts ot = {!t->eval || t->grads, noisy ? t->noise[1] : NULL, drop ? t->keep[1] : NULL, 0, 0};
    int B = b->B, C = tg.nseq, D = t->cfg.dim;
    if (upm_trainer_ensure(be, (void **)&t->dU, &t->cap_u, sizeof(float) * (size_t)B * D) ||
        upm_trainer_ensure(be, (void **)&t->dV, &t->cap_v, sizeof(float) * (size_t)C * D) ||
        upm_trainer_ensure(be, (void **)&t->logits, &t->cap_l, sizeof(float) * (size_t)B * C) ||
        upm_trainer_ensure(be, (void **)&t->dlabels, &t->cap_lab, sizeof(int32_t) * (size_t)B))
        return upm_errf(err, UPM_ENOMEM, "no memory for a batch of %d", B);
    upm_model_zero_grad(m); /* also starts the step's record of the experts used (model.h) */
    if ((rc = upm_pass_forward(m, t->pass_in, &in, &oi, err)) || (rc = upm_pass_forward(m, t->pass_tg, &tg, &ot, err)))
        return rc;
    be->zero(be, t->dU, sizeof(float) * (size_t)B * D);
    be->zero(be, t->dV, sizeof(float) * (size_t)C * D);
    int pair = fd->loss != UPM_LOSS_TARGET_CE;
    if (!pair) { /* label: each row's class among the label texts */
        be->upload(be, t->dlabels, b->labels, sizeof(int32_t) * (size_t)B);
        rc = upm_loss_label(m, upm_pass_features(t->pass_in), B, upm_pass_features(t->pass_tg), C, t->dlabels, NULL, b->loss_weight,
                            t->dU, t->dV, t->logits, err);
    } else
        rc = upm_loss_pair(m, upm_pass_features(t->pass_in), upm_pass_features(t->pass_tg), B, b->loss_weight, t->dU, t->dV,
                           t->logits, err);
    if (rc || ((!t->eval || t->grads) && ((rc = upm_pass_backward(m, t->pass_tg, t->dV, err)) ||
                            (rc = last_backward(t, t->pass_in, t->dU, err)))))
        return rc;
    float gnorm = 0, lr = 0;
    upm_loss_result res;
    if ((!t->eval && (rc = upm_optim_step(&t->opt, m, NULL, &lr, err))) ||
        (rc = step_stats(t, pair, B, &res, &gnorm, err)))
        return rc;
    if ((rc = dump_step(t, &in, &tg, NULL, &res, gnorm, lr, err)))
        return rc;
    fill_row(t, row, &res, C, gnorm, lr); /* label: the classes; pair: the batch (C = B) */
    if (t->eval && fd->metric == UPM_METRIC_RETRIEVAL_R1 && tg.nseg == 1 && tg.seg[0].kind == UPM_SEG_TEXT)
        return retrieval_row(t, &tg, row, err);
    return 0;
}
