/* Evaluation: the sampled quick look over a mixture (upm_evaluate) and the paper's protocol, one full
 * deterministic pass over each dataset with the metrics of its formulation (upm_evaluate_full). See
 * train.h and docs/evaluation.md. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "clock.h"
#include "evalset.h"
#include "formulation.h"
#include "label_metrics.h"
#include "loss.h"
#include "results.h"
#include "retrieval.h"
#include "evaluate_pass.h"
#include "trainer_state.h"

int upm_evaluate(const upm_train_opts *o, const char *checkpoint, int64_t steps, upm_eval_row **rows, int *nrows,
                 upm_err *err)
{
    trainer t;
    *rows = NULL, *nrows = 0;
    upm_blind_baseline *blind = NULL; /* one per row */
    int rc = upm_trainer_open(&t, o, checkpoint, err);
    for (int64_t s = 0; !rc && s < steps; s++, t.step++) {
        upm_metric_row r;
        if ((rc = upm_loader_next(t.loader, &t.batch, err)))
            break;
        int i = 0;
        while (i < *nrows && strcmp((*rows)[i].dataset, t.batch.dataset))
            i++;
        if (i == *nrows) {
            upm_eval_row *g = realloc(*rows, sizeof *g * (size_t)(*nrows + 1));
            if (g)
                *rows = g;
            upm_blind_baseline *bb = g ? realloc(blind, sizeof *bb * (size_t)(*nrows + 1)) : NULL;
            if (!bb) {
                rc = upm_errf(err, UPM_ENOMEM, "no memory");
                break;
            }
            blind = bb;
            memset(&g[i], 0, sizeof g[i]);
            memset(&blind[i], 0, sizeof blind[i]);
            snprintf(g[i].dataset, sizeof g[i].dataset, "%s", t.batch.dataset);
            snprintf(g[i].task, sizeof g[i].task, "%s", t.batch.task);
            (*nrows)++;
        }
        t.blind = &blind[i];
        if ((rc = upm_trainer_batch_step(&t, &r, err)))
            break;
        upm_eval_row *e = &(*rows)[i];
        e->batches++;
        e->samples += r.samples;
        e->scored += r.scored;
        e->loss += (r.loss - e->loss) / (double)e->batches; /* running mean over batches */
        if (r.accuracy >= 0)
            e->accuracy += (r.accuracy - e->accuracy) / (double)e->batches;
        else
            e->accuracy = -1;
        e->chance += (r.chance - e->chance) / (double)e->batches;
        if (r.accuracy_t2i >= 0)
            e->accuracy_t2i += (r.accuracy_t2i - e->accuracy_t2i) / (double)e->batches;
        else
            e->accuracy_t2i = -1;
    }
    for (int i = 0; i < *nrows; i++) {
        (*rows)[i].blind = upm_blind_baseline_accuracy(&blind[i]); /* -1 where no vocab step counted */
        upm_blind_baseline_free(&blind[i]);
    }
    free(blind);
    t.blind = NULL;
    upm_trainer_close(&t);
    if (rc) { /* nothing half-counted goes back (a row is made before its first batch runs) */
        free(*rows);
        *rows = NULL, *nrows = 0;
    }
    return rc;
}

/* ---- the full pass ---- */

void upm_eval_add_metric(upm_eval_result *r, const char *name, double value, double chance)
{
    if (r->nmetrics == UPM_EVAL_MAX_METRICS)
        return;
    upm_eval_metric *m = &r->metrics[r->nmetrics++];
    snprintf(m->name, sizeof m->name, "%s", name);
    m->value = value, m->chance = chance;
}

void upm_eval_score_rows(const float *logits, int B, int C, const int32_t *labels, int64_t *top1, int64_t *top5,
                         int64_t *n, double *ce, int32_t *pred)
{
    for (int i = 0; i < B; i++) {
        int y = labels[i];
        if (pred)
            pred[i] = -1;
        if (y < 0 || y >= C)
            continue;
        const float *s = logits + (size_t)i * C;
        double mx = s[0], sum = 0;
        int best = 0;
        for (int c = 1; c < C; c++)
            if (s[c] > s[best])
                best = c;
        mx = s[best];
        int rank = 0;
        for (int c = 0; c < C; c++) {
            sum += exp((double)s[c] - mx);
            rank += s[c] > s[y] || (s[c] == s[y] && c < y);
        }
        *ce += mx + log(sum) - s[y];
        *top1 += rank < 1, *top5 += rank < 5, (*n)++;
        if (pred)
            pred[i] = best;
    }
}

void upm_eval_tick(const pass_ctx *p)
{
    if (p->eo->progress)
        p->eo->progress(p->eo->progress_ctx, upm_evalset_dataset(p->es)->name, (int64_t)upm_evalset_done(p->es),
                        p->total);
}



/* F1 of class 1 and Matthews' correlation of a two-class confusion matrix (0 where undefined, as
 * scikit-learn returns them). */
static void binary_scores(int64_t tp, int64_t fp, int64_t fn, int64_t tn, double *f1, double *mcc)
{
    *f1 = 2 * tp + fp + fn ? 2.0 * (double)tp / (double)(2 * tp + fp + fn) : 0.0;
    double d = ((double)tp + fp) * ((double)tp + fn) * ((double)tn + fp) * ((double)tn + fn);
    *mcc = d > 0 ? ((double)tp * tn - (double)fp * fn) / sqrt(d) : 0.0;
}




/* label: the label texts encoded once; every batch's inputs scored against them. */
static int eval_label(pass_ctx *p, upm_eval_result *r, upm_err *err)
{
    trainer *t = p->t;
    upm_backend *be = t->be;
    int D = t->cfg.dim, C = 0, rc, have_targets = 0;
    int64_t top1 = 0, top5 = 0, n = 0, npred = 0;
    double ce = 0;
    float *host = NULL;
    int32_t *preds = NULL, *labs = NULL;
    while ((rc = upm_evalset_next(p->es, &t->batch, err)) == 1) {
        upm_batch *b = &t->batch;
        upm_seq_input in, tg;
        if (!have_targets) {
            const upm_label_texts *lt = upm_trainer_labels(t, b, err);
            if (!lt)
                return err->code ? err->code : UPM_EINVAL;
            upm_label_texts_input(lt, &tg);
            if ((rc = upm_trainer_task_id(t, b->task, &tg.task, err)))
                return rc;
            if ((rc = upm_pass_forward(t->m, t->pass_tg, &tg, &no_noise, err)))
                return rc;
            C = tg.nseq, have_targets = 1;
        }
        int B = b->B;
        if ((rc = upm_trainer_side_input(t, b, UPM_SIDE_INPUT, &in, err)))
            break;
        if (upm_trainer_prompt_readouts(t, &in)) {
            rc = upm_errf(err, UPM_ENOMEM, "no memory for a batch of %d", B);
            break;
        }
        if ((rc = upm_pass_forward(t->m, t->pass_in, &in, &no_noise, err)))
            break;
        if (upm_trainer_ensure(be, (void **)&t->logits, &t->cap_l, sizeof(float) * (size_t)B * C)) {
            rc = upm_errf(err, UPM_ENOMEM, "no memory for %d x %d scores", B, C);
            break;
        }
        float *h = realloc(host, sizeof(float) * (size_t)B * C);
        if (!h) {
            rc = upm_errf(err, UPM_ENOMEM, "no memory for %d x %d scores", B, C);
            break;
        }
        host = h;
        be->gemm(be, 0, 1, B, C, D, upm_logit_scale(t->m, NULL), upm_pass_features(t->pass_in), D,
                 upm_pass_features(t->pass_tg), D, 0.0f, t->logits, C);
        be->download(be, host, t->logits, sizeof(float) * (size_t)B * C);
        int32_t *pr = realloc(preds, sizeof(int32_t) * ((size_t)npred + (size_t)B));
        if (pr)
            preds = pr;
        int32_t *lb = pr ? realloc(labs, sizeof(int32_t) * ((size_t)npred + (size_t)B)) : NULL;
        if (lb)
            labs = lb;
        if (!pr || !lb) {
            rc = upm_errf(err, UPM_ENOMEM, "no memory for predictions");
            break;
        }
        int64_t base = npred;
        int V = upm_evalset_views(p->es), ns = B / V;
        if (upm_label_average_views(host, b->labels, ns, V, C)) {
            rc = upm_errf(err, UPM_ENOMEM, "no memory for %d scores", C);
            break;
        }
        upm_eval_score_rows(host, ns, C, b->labels, &top1, &top5, &n, &ce, preds + base);
        for (int i = 0; i < ns; i++)
            if (preds[base + i] >= 0) { /* keep the scored rows, in pass order (npred <= base + i) */
                labs[npred] = b->labels[i], preds[npred] = preds[base + i];
                npred++;
            }
        upm_eval_tick(p);
    }
    free(host);
    if (rc < 0) {
        free(preds), free(labs);
        return rc;
    }
    r->scored = n;
    r->loss = n ? ce / (double)n : -1;
    upm_eval_add_metric(r, "top1", n ? (double)top1 / (double)n : 0, C ? 1.0 / C : -1);
    upm_eval_add_metric(r, "top5", n ? (double)top5 / (double)n : 0, C ? (C < 5 ? 1.0 : 5.0 / C) : -1);
    if (C == 2 && npred > 0) { /* GLUE's binary metrics: F1 of class 1, Matthews' correlation */
        int64_t tp = 0, fp = 0, fn = 0, tn = 0;
        for (int64_t i = 0; i < npred; i++) {
            tp += labs[i] == 1 && preds[i] == 1, fp += labs[i] == 0 && preds[i] == 1;
            fn += labs[i] == 1 && preds[i] == 0, tn += labs[i] == 0 && preds[i] == 0;
        }
        double f1, mcc, pi = (double)(tp + fn) / (double)npred;
        binary_scores(tp, fp, fn, tn, &f1, &mcc);
        upm_eval_add_metric(r, "f1", f1, pi > 0 ? pi / (pi + 0.5) : 0); /* a fair coin: precision pi, recall 1/2 */
        upm_eval_add_metric(r, "mcc", mcc, 0);
    }
    if (p->eo->predictions)
        r->labels = labs, r->predicted = preds, r->npredicted = npred;
    else
        free(preds), free(labs);
    return 0;
}

/* Appends n rows of w floats (or ints) to a growing host array. */
static int append(void **arr, size_t *len, size_t *cap, const void *src, size_t bytes)
{
    if (*len + bytes > *cap) {
        size_t c = *cap ? *cap : 1 << 16;
        while (c < *len + bytes)
            c *= 2;
        void *a = realloc(*arr, c);
        if (!a)
            return UPM_ENOMEM;
        *arr = a, *cap = c;
    }
    memcpy((char *)*arr + *len, src, bytes);
    *len += bytes;
    return 0;
}

/* The single text segment of one side (the identity of its captions), or NULL. */
static const upm_segment *side_text(const upm_batch *b, upm_side side)
{
    const upm_segment *found = NULL;
    int n = 0;
    for (int i = 0; i < b->nseg; i++)
        if (b->seg[i].side == side)
            n++, found = b->seg[i].modality == UPM_MOD_TEXT ? &b->seg[i] : NULL;
    return n == 1 ? found : NULL;
}

/* The growing host arrays of a pair evaluation: image features, caption features, caption token ids,
 * lengths and owners. */
typedef struct gallery {
    void *U, *V, *ids, *lens, *owner;
    size_t nu, cu, nv, cv, ni, ci, nl, cl, no, co;
    int64_t N, T; /* images, captions */
    int L;
} gallery;

static int add_caption(gallery *g, const int32_t *ids, int32_t len, int32_t owner)
{
    return append(&g->ids, &g->ni, &g->ci, ids, sizeof(int32_t) * (size_t)g->L) ||
           append(&g->lens, &g->nl, &g->cl, &len, sizeof len) || append(&g->owner, &g->no, &g->co, &owner, sizeof owner);
}

/* The batch's captions when the evaluation pass kept the rows' whole target fields: every line a caption
 * (COCO's five), encoded as the target segment is (same length, attribute, end token), into *tg. */
static int batch_captions(pass_ctx *p, const upm_segment *txt, gallery *g, upm_seq_input *tg, int32_t **ids,
                          int32_t **lens, uint8_t **attrs, upm_err *err)
{
    const upm_batch *b = &p->t->batch;
    int n = 0, cap = 0, rc = 0;
    for (int r = 0; !rc && r < b->B; r++) {
        const char *text;
        size_t len;
        upm_text_span lines[64];
        upm_evalset_target_text(p->es, r, &text, &len);
        int nl = upm_caption_lines(text, len, lines, 64);
        for (int k = 0; !rc && k < nl; k++) {
            if (n == cap) {
                cap = cap ? 2 * cap : 4 * b->B;
                int32_t *i2 = realloc(*ids, sizeof(int32_t) * (size_t)cap * txt->L);
                if (i2)
                    *ids = i2;
                int32_t *l2 = i2 ? realloc(*lens, sizeof(int32_t) * (size_t)cap) : NULL;
                if (l2)
                    *lens = l2;
                if (!i2 || !l2)
                    return upm_errf(err, UPM_ENOMEM, "no memory for captions");
            }
            memset(*ids + (size_t)n * txt->L, 0, sizeof(int32_t) * (size_t)txt->L); /* padding, as collation */
            int m = upm_bpe_encode(p->t->bpe, lines[k].s, lines[k].n, *ids + (size_t)n * txt->L, txt->L,
                                   UPM_BPE_ADD_EOT | UPM_BPE_TRUNCATE | UPM_BPE_STRICT_UTF8, err);
            if (m < 0)
                return upm_errf(err, UPM_EBADDATA, "dataset %s: a caption: %s", b->dataset, err->msg);
            (*lens)[n] = m;
            rc = add_caption(g, *ids + (size_t)n * txt->L, m, (int32_t)(g->N + r)) ? UPM_ENOMEM : 0;
            n++;
        }
    }
    if (rc)
        return upm_errf(err, UPM_ENOMEM, "no memory for captions");
    uint8_t *a = realloc(*attrs, (size_t)(n > 0 ? n : 1) * txt->L);
    if (!a)
        return upm_errf(err, UPM_ENOMEM, "no memory for captions");
    *attrs = a;
    memset(a, txt->attr, (size_t)n * txt->L);
    memset(tg, 0, sizeof *tg);
    tg->nseq = n, tg->spe_attr = b->spe_attr[UPM_SIDE_TARGET], tg->nseg = 1;
    tg->seg[0] = (upm_seq_segment){.kind = UPM_SEG_TEXT, .attn = (upm_seg_attn)txt->attn, .L = txt->L, .ids = *ids,
                                   .lengths = *lens, .attrs = a};
    g->T += n;
    return 0;
}

/* pair: the features of every image and every caption of the split, then the whole split as one gallery
 * (a sample may carry several captions, one per line of its target field). */
static int eval_pair(pass_ctx *p, upm_eval_result *r, upm_err *err)
{
    trainer *t = p->t;
    upm_backend *be = t->be;
    int D = t->cfg.dim, rc;
    gallery g = {.L = -1};
    float *hf = NULL;
    int32_t *cids = NULL, *clens = NULL;
    uint8_t *cattrs = NULL;
    while ((rc = upm_evalset_next(p->es, &t->batch, err)) == 1) {
        upm_batch *b = &t->batch;
        upm_seq_input in, tg;
        int B = b->B;
        const upm_segment *tt = side_text(b, UPM_SIDE_TARGET), *txt = tt ? tt : side_text(b, UPM_SIDE_INPUT);
        const char *probe;
        size_t plen;
        int multi = tt && upm_evalset_target_text(p->es, 0, &probe, &plen) == 0;
        if (g.L < 0)
            g.L = txt ? txt->L : 1;
        if ((rc = upm_trainer_side_input(t, b, UPM_SIDE_INPUT, &in, err)))
            break;
        if (multi && !(rc = batch_captions(p, tt, &g, &tg, &cids, &clens, &cattrs, err)))
            tg.task = in.task;
        else
            rc = upm_trainer_side_input(t, b, UPM_SIDE_TARGET, &tg, err);
        if (rc)
            break;
        if (upm_trainer_prompt_readouts(t, &in)) {
            rc = upm_errf(err, UPM_ENOMEM, "no memory for a batch of %d", B);
            break;
        }
        if ((rc = upm_pass_forward(t->m, t->pass_in, &in, &no_noise, err)) ||
            (rc = upm_pass_forward(t->m, t->pass_tg, &tg, &no_noise, err)))
            break;
        int C = tg.nseq;
        float *h = realloc(hf, sizeof(float) * (size_t)(B + C) * D);
        if (!h) {
            rc = UPM_ENOMEM;
            break;
        }
        hf = h;
        be->download(be, hf, upm_pass_features(t->pass_in), sizeof(float) * (size_t)B * D);
        be->download(be, hf + (size_t)B * D, upm_pass_features(t->pass_tg), sizeof(float) * (size_t)C * D);
        if (!multi) { /* one caption per sample: identity from the target text, else the input text, else own */
            int32_t own[1];
            for (int i = 0; i < B && !rc; i++) {
                own[0] = (int32_t)(g.N + i);
                rc = add_caption(&g, txt ? txt->ids + (size_t)i * txt->L : own, txt ? txt->lengths[i] : 1,
                                 (int32_t)(g.N + i));
            }
            g.T += B;
        }
        if (rc || append(&g.U, &g.nu, &g.cu, hf, sizeof(float) * (size_t)B * D) ||
            append(&g.V, &g.nv, &g.cv, hf + (size_t)B * D, sizeof(float) * (size_t)C * D)) {
            rc = UPM_ENOMEM;
            break;
        }
        g.N += B;
        upm_eval_tick(p);
    }
    free(hf), free(cids), free(clens), free(cattrs);
    int64_t N = g.N, T = g.T;
    float *dU = NULL, *dV = NULL, *dS = NULL, *S = NULL;
    if (rc == UPM_ENOMEM)
        rc = upm_errf(err, UPM_ENOMEM, "no memory for the features of %lld samples", (long long)N);
    if (rc >= 0 && N > 0 && T > 0) {
        dU = be->alloc(be, sizeof(float) * (size_t)N * D), dV = be->alloc(be, sizeof(float) * (size_t)T * D);
        dS = be->alloc(be, sizeof(float) * (size_t)N * (size_t)T), S = malloc(sizeof(float) * (size_t)N * (size_t)T);
        if (!dU || !dV || !dS || !S)
            rc = upm_errf(err, UPM_ENOMEM, "no memory for a gallery of %lld x %lld scores", (long long)N, (long long)T);
    }
    upm_retrieval_recall_multi rr;
    if (rc >= 0 && N > 0 && T > 0) {
        be->upload(be, dU, g.U, sizeof(float) * (size_t)N * D);
        be->upload(be, dV, g.V, sizeof(float) * (size_t)T * D);
        be->gemm(be, 0, 1, (int)N, (int)T, D, 1.0f, dU, D, dV, D, 0.0f, dS, (int)T);
        be->download(be, S, dS, sizeof(float) * (size_t)N * (size_t)T);
        if (upm_retrieval_recall_multi_score(S, (int)N, (int)T, g.ids, g.L, g.lens, g.owner, &rr))
            rc = upm_errf(err, UPM_ENOMEM, "no memory to rank a gallery of %lld", (long long)N);
    }
    if (dU)
        be->free(be, dU);
    if (dV)
        be->free(be, dV);
    if (dS)
        be->free(be, dS);
    free(S), free(g.U), free(g.V), free(g.ids), free(g.lens), free(g.owner);
    if (rc < 0)
        return rc;
    r->scored = N, r->loss = -1;
    if (N == 0 || T == 0)
        return 0;
    static const char *const names[2][UPM_RECALL_KS] = {{"i2t_r1", "i2t_r5", "i2t_r10"}, {"t2i_r1", "t2i_r5", "t2i_r10"}};
    double sum = 0, chance = 0;
    for (int dir = 0; dir < 2; dir++)
        for (int k = 0; k < UPM_RECALL_KS; k++) {
            double v = dir ? (double)rr.t2i[k] / (double)T : (double)rr.i2t[k] / (double)N;
            double c = dir ? rr.chance_t2i[k] : rr.chance[k];
            upm_eval_add_metric(r, names[dir][k], v, c);
            sum += v, chance += c;
        }
    upm_eval_add_metric(r, "recall_mean", sum / (2 * UPM_RECALL_KS), chance / (2 * UPM_RECALL_KS));
    r->captions = T;
    return 0;
}

/* The full pass over each dataset of eo with trainer t's model (t->eval set by the caller). */
static int evaluate_datasets(trainer *t, const upm_eval_opts *eo, upm_eval_result **out, int *nout, upm_err *err)
{
    const upm_train_opts *o = t->o;
    *out = NULL, *nout = 0;
    upm_eval_result *res = calloc((size_t)(eo->ndatasets > 0 ? eo->ndatasets : 1), sizeof *res);
    int rc = res ? 0 : upm_errf(err, UPM_ENOMEM, "no memory");
    for (int d = 0; !rc && d < eo->ndatasets; d++) {
        upm_evalset_opts so;
        upm_evalset_opts_default(&so);
        so.threads = o->loader_threads > 0 ? o->loader_threads : 1;
        so.limit = eo->limit;
        so.collate.image_size = o->image_size;
        so.collate.augment = UPM_AUGMENT_NONE;
        so.collate.video_crops = eo->video_crops > 0 ? eo->video_crops : 3;
        so.collate.video_clips = eo->video_clips > 0 ? eo->video_clips : 1;
        upm_dataset ds;
        if ((rc = upm_dataset_get(t->cat, eo->datasets[d], &ds, err)))
            break;
        so.batch = o->batch > 0 ? o->batch : ds.batch_size;
        upm_evalset *es = NULL;
        if ((rc = upm_evalset_open(t->cat, eo->datasets[d], &so, t->bpe, &es, err)))
            break;
        const upm_task *task = upm_evalset_task(es);
        const upm_formulation_desc *fd = upm_formulation_desc_get(task->formulation);
        upm_eval_result *r = &res[d];
        snprintf(r->dataset, sizeof r->dataset, "%s", ds.name);
        snprintf(r->task, sizeof r->task, "%s", task->name);
        r->formulation = task->formulation;
        pass_ctx p = {t, es, eo, ds.num_samples >= 0 ? ds.num_samples : -1, so.batch};
        if (eo->limit > 0 && (p.total < 0 || p.total > eo->limit))
            p.total = eo->limit;
        double t0 = upm_monotonic_s();
        if (fd->targets == UPM_TARGETS_LABEL_TEXTS)
            rc = eval_label(&p, r, err);
        else if (fd->targets == UPM_TARGETS_PAIRED)
            rc = eval_pair(&p, r, err);
        else
            rc = upm_eval_vocab(&p, r, err);
        r->seconds = upm_monotonic_s() - t0;
        r->samples = (int64_t)upm_evalset_done(es);
        r->skipped = (int64_t)upm_evalset_skipped(es);
        if (!rc && r->samples == 0)
            rc = upm_errf(err, UPM_EINVAL, "dataset %s: no usable sample to evaluate (empty split?)", ds.name);
        upm_evalset_close(es);
        *nout = d + 1;
    }
    if (rc) {
        upm_eval_results_free(res, *nout);
        *nout = 0;
        return rc;
    }
    *out = res;
    return 0;
}

int upm_evaluate_full(const upm_train_opts *o, const char *checkpoint, const upm_eval_opts *eo, upm_eval_result **out,
                      int *nout, upm_err *err)
{
    *out = NULL, *nout = 0;
    if (eo->ndatasets < 1)
        return upm_errf(err, UPM_EUSAGE, "nothing to evaluate: name a dataset or a mixture");
    upm_train_opts to = *o;
    to.mixture = NULL; /* no training loader: each dataset is read once, in order */
    trainer t;
    int rc = upm_trainer_open(&t, &to, checkpoint, err);
    if (!rc)
        rc = evaluate_datasets(&t, eo, out, nout, err);
    upm_trainer_close(&t);
    return rc;
}

int upm_eval_check_datasets(upm_catalog *cat, const char *const *names, int n, upm_err *err)
{
    char missing[900] = "";
    int rc = 0, nm = 0;
    for (int i = 0; !rc && i < n; i++) {
        upm_dataset d;
        if ((rc = upm_dataset_get(cat, names[i], &d, err)))
            break;
        if (!d.url_pattern[0]) {
            size_t len = strlen(missing);
            if (len + strlen(names[i]) + 8 < sizeof missing)
                snprintf(missing + len, sizeof missing - len, "%s%s", nm ? ", " : "", names[i]);
            else if (!strstr(missing, ", ..."))
                snprintf(missing + len, sizeof missing - len, ", ...");
            nm++;
        }
    }
    if (!rc && nm)
        rc = upm_errf(err, UPM_EINVAL, "%d dataset%s ha%s no shard URL yet: %s (set with 'upmoe-catalog set DATASET "
                      "url=PATTERN')", nm, nm == 1 ? "" : "s", nm == 1 ? "s" : "ve", missing);
    return rc;
}

int upm_eval_results_store(upm_catalog *cat, int64_t run_id, int64_t step, const char *checkpoint,
                           const upm_eval_result *res, int n, int replace, int *stored, upm_err *err)
{
    *stored = 0;
    upm_eval_record *rows = calloc((size_t)n * (UPM_EVAL_MAX_METRICS + 1) + 1, sizeof *rows);
    if (!rows)
        return upm_errf(err, UPM_ENOMEM, "no memory");
    int k = 0;
    for (int i = 0; i < n; i++)
        for (int m = -1; m < res[i].nmetrics; m++) {
            if (m < 0 && res[i].loss < 0)
                continue;
            upm_eval_record *r = &rows[k++];
            r->run_id = run_id, r->step = step, r->samples = res[i].samples;
            snprintf(r->checkpoint, sizeof r->checkpoint, "%s", checkpoint);
            snprintf(r->dataset, sizeof r->dataset, "%s", res[i].dataset);
            snprintf(r->task, sizeof r->task, "%s", res[i].task);
            snprintf(r->formulation, sizeof r->formulation, "%s", upm_formulation_name(res[i].formulation));
            snprintf(r->metric, sizeof r->metric, "%s", m < 0 ? "loss" : res[i].metrics[m].name);
            r->value = m < 0 ? res[i].loss : res[i].metrics[m].value;
            r->chance = m < 0 ? -1 : res[i].metrics[m].chance;
        }
    int rc = upm_results_put(cat, rows, k, replace, err);
    if (!rc)
        *stored = k;
    free(rows);
    return rc;
}

int upm_trainer_eval_step(trainer *t, upm_err *err)
{
    const upm_train_opts *o = t->o;
    upm_eval_opts eo = {o->eval_datasets, o->n_eval_datasets, o->eval_limit, NULL, NULL, 0, 0, 0, 0.0, 0, 0, 0};
    upm_eval_result *res = NULL;
    int n = 0, stored = 0;
    t->eval = 1; /* forward only, no noise, no drop path, no optimizer step; training resumes unchanged */
    upm_err e = {0};
    int rc = evaluate_datasets(t, &eo, &res, &n, &e);
    t->eval = 0;
    if (rc) { /* the datasets were checked at the start: a failure now (a shard gone) must not end the run */
        if (t->rank == 0)
            fprintf(stderr, "upmoe-train: warning: evaluation after step %" PRId64 " failed, training goes on: %s\n",
                    t->step, e.msg);
        return 0;
    }
    char ckpt[4200];
    snprintf(ckpt, sizeof ckpt, "%s/checkpoints/step-%08" PRId64, o->out_dir, t->step);
    struct stat st;
    if (stat(ckpt, &st) != 0) /* evaluated between checkpoints: the run's weights at this step */
        snprintf(ckpt, sizeof ckpt, "%s", o->out_dir);
    if (!rc && t->rank == 0)
        rc = upm_eval_results_store(t->cat, t->run_id, t->step, ckpt, res, n, 1, &stored, err);
    for (int i = 0; !rc && t->rank == 0 && !o->quiet && i < n; i++) {
        printf("eval step %" PRId64 " %s:", t->step, res[i].dataset);
        for (int k = 0; k < res[i].nmetrics; k++)
            printf(" %s %.4f", res[i].metrics[k].name, res[i].metrics[k].value);
        printf(" (%lld samples)\n", (long long)res[i].samples);
    }
    upm_eval_results_free(res, n);
    return rc;
}

void upm_eval_results_free(upm_eval_result *r, int n)
{
    for (int i = 0; r && i < n; i++) {
        free(r[i].labels), free(r[i].predicted);
        for (int64_t k = 0; k < r[i].ngenerated; k++)
            free(r[i].generated[k]), free(r[i].references[k]);
        free(r[i].generated), free(r[i].references);
    }
    free(r);
}
