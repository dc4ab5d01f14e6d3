/* The full evaluation pass for the vocabulary formulations (evaluate_pass.h): teacher-forced token
 * accuracy and perplexity against the vocabulary encoded once per dataset (or sampled candidates), and
 * for vocab-caption a generated caption per sample scored with BLEU-4 and CIDEr-D. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caption_metrics.h"
#include "clock.h"
#include "evaluate_pass.h"
#include "formulation.h"
#include "generate.h"
#include "loss.h"

/* The sampled-candidates variant of the teacher-forced scores: each batch as a training forward (its
 * candidates are the batch's targets plus sampled negatives), token accuracy only. */
static int vocab_sampled_batch(trainer *t, int64_t *n, int64_t *correct, int64_t *C, upm_err *err)
{
    upm_metric_row row;
    int rc = upm_trainer_batch_step(t, &row, err);
    if (rc)
        return rc;
    int M = (int)row.scored;
    *C = row.chance > 0 ? (int64_t)llround(1.0 / row.chance) : 0;
    *correct += (int64_t)llround(row.accuracy * (double)M);
    *n += M;
    return 0;
}

/* The vocabulary's features, once per dataset: every token v as [SPE, v] (target-side attributes). */
static int encode_vocabulary(trainer *t, const upm_batch *b, upm_err *err)
{
    int C = t->cfg.vocab, D = t->cfg.dim;
    int32_t *cand = malloc(sizeof(int32_t) * (size_t)C);
    if (!cand || upm_trainer_ensure(t->be, (void **)&t->V, &t->cap_V, sizeof(float) * (size_t)C * D)) {
        free(cand);
        return upm_errf(err, UPM_ENOMEM, "no memory for the features of %d vocabulary tokens", C);
    }
    for (int v = 0; v < C; v++)
        cand[v] = v;
    upm_vocab_encode_opts vo = {b->spe_attr[UPM_SIDE_TARGET], b->spe_attr[UPM_SIDE_TARGET], t->o->vocab_chunk, NULL,
                                0.0f, t->o->seed, 0, 0, 1};
    int rc = upm_trainer_task_id(t, b->task, &vo.task, err);
    if (!rc)
        rc = upm_vocab_encode(t->m, t->pass_voc, cand, C, &vo, t->V, NULL, err);
    free(cand);
    return rc;
}

/* Teacher-forced scores of one batch against the cached vocabulary features: the read-outs (masked
 * positions, caption queries) ranked among all C tokens; cross-entropy without smoothing. */
static int vocab_full_batch(trainer *t, const upm_formulation_desc *fd, float **host, int64_t *n, int64_t *correct,
                            double *ce, upm_err *err)
{
    upm_backend *be = t->be;
    const upm_batch *b = &t->batch;
    int C = t->cfg.vocab, D = t->cfg.dim;
    upm_seq_input in;
    upm_vocab_batch vb = {0};
    int rc = upm_trainer_side_input(t, b, UPM_SIDE_INPUT, &in, err);
    if (!rc)
        rc = upm_vocab_readouts(b, &in, fd->readout, &vb, err);
    int M = vb.M;
    if (!rc && M > 0) {
        in.nread = M, in.read_seq = vb.read_seq, in.read_pos = vb.read_pos;
        float *h = realloc(*host, sizeof(float) * (size_t)M * C);
        if (h)
            *host = h;
        if (!h || upm_trainer_ensure(be, (void **)&t->logits, &t->cap_l, sizeof(float) * (size_t)M * C))
            rc = upm_errf(err, UPM_ENOMEM, "no memory for %d x %d scores", M, C);
        if (!rc)
            rc = upm_pass_forward(t->m, t->pass_in, &in, &no_noise, err);
        if (!rc) {
            be->gemm(be, 0, 1, M, C, D, upm_logit_scale(t->m, NULL), upm_pass_features(t->pass_in), D, t->V, D, 0.0f,
                     t->logits, C);
            be->download(be, *host, t->logits, sizeof(float) * (size_t)M * C);
            int64_t t5 = 0;
            upm_eval_score_rows(*host, M, C, vb.target_ids, correct, &t5, n, ce, NULL);
        }
    }
    if (!rc && M > 0)
        rc = upm_vocab_blind_add(t->blind, &vb, fd->readout, err);
    upm_vocab_batch_free(&vb);
    return rc;
}

/* Grows the caption lists of a result by one (generated caption, references), both owned. */
static int keep_caption(upm_eval_result *r, char *caption, const char *refs, size_t refs_len)
{
    char **c = realloc(r->generated, sizeof *c * (size_t)(r->ngenerated + 1));
    if (c)
        r->generated = c;
    char **f = c ? realloc(r->references, sizeof *f * (size_t)(r->ngenerated + 1)) : NULL;
    if (f)
        r->references = f;
    char *copy = f ? malloc(refs_len + 1) : NULL;
    if (!copy)
        return UPM_ENOMEM;
    memcpy(copy, refs, refs_len);
    copy[refs_len] = 0;
    r->generated[r->ngenerated] = caption, r->references[r->ngenerated++] = copy;
    return 0;
}

/* Captions generated for one batch (the image or video side encoded once, the vocabulary's features
 * cached), decoded to text and added to the corpus with the sample's reference captions (one per line of
 * the caption field). */
static int generate_batch(pass_ctx *p, upm_generator **gen, upm_caption_corpus *corpus, upm_eval_result *r,
                          upm_err *err)
{
    trainer *t = p->t;
    const upm_batch *b = &t->batch;
    const upm_eval_opts *eo = p->eo;
    upm_seq_input in, prefix;
    int rc = upm_trainer_side_input(t, b, UPM_SIDE_INPUT, &in, err);
    if (rc)
        return rc;
    prefix = in;
    prefix.nseg = 0;
    int L = 0;
    uint8_t attr = 0;
    for (int i = 0; i < in.nseg; i++) /* the caption's text and query segments are generated, not given */
        if (in.seg[i].kind == UPM_SEG_TEXT && in.seg[i].attn != UPM_SEG_FULL)
            L = in.seg[i].L, attr = in.seg[i].attrs[0];
        else
            prefix.seg[prefix.nseg++] = in.seg[i];
    int max_len = eo->max_len > 0 ? eo->max_len : L;
    if (!*gen) {
        upm_generate_opts go = {eo->beams > 0 ? eo->beams : 2, max_len, eo->length_penalty, eo->reencode, UPM_BPE_EOT,
                                UPM_BPE_GEN, attr};
        if ((rc = upm_generator_new(t->m, p->batch, &go, gen, err)))
            return rc;
    }
    int32_t *tokens = malloc(sizeof(int32_t) * (size_t)b->B * max_len);
    int *lens = malloc(sizeof(int) * (size_t)b->B);
    if (!tokens || !lens)
        rc = upm_errf(err, UPM_ENOMEM, "no memory for %d captions", b->B);
    if (!rc)
        rc = upm_generator_run(*gen, &prefix, t->V, t->cfg.vocab, upm_logit_scale(t->m, NULL), tokens, lens, err);
    for (int i = 0; !rc && i < b->B; i++) {
        char *text = NULL;
        size_t tlen = 0;
        const char *refs;
        size_t rlen;
        if ((rc = upm_bpe_decode(t->bpe, tokens + (size_t)i * max_len, lens[i], &text, &tlen, err)))
            break;
        while (tlen > 0 && text[tlen - 1] == ' ') /* CLIP's decoding ends each word with a space */
            text[--tlen] = 0;
        if (upm_evalset_target_text(p->es, i, &refs, &rlen)) {
            free(text);
            rc = upm_errf(err, UPM_EINVAL, "dataset %s: no reference caption for sample %d", b->dataset, i);
            break;
        }
        upm_text_span lines[64];
        const char *rp[64];
        size_t rl[64];
        int nl = upm_caption_lines(refs, rlen, lines, 64);
        for (int k = 0; k < nl; k++)
            rp[k] = lines[k].s, rl[k] = lines[k].n;
        if (nl < 1) { /* an empty caption field is still one (empty) reference */
            rp[0] = refs, rl[0] = 0, nl = 1;
        }
        int bad = upm_caption_corpus_add(corpus, text, tlen, rp, rl, nl);
        if (!bad && eo->predictions && !(bad = keep_caption(r, text, refs, rlen)))
            text = NULL; /* the result owns it */
        free(text);
        if (bad)
            rc = upm_errf(err, UPM_ENOMEM, "no memory for captions");
    }
    free(tokens), free(lens);
    return rc;
}

/* vocab-mlm / vocab-caption. With the full vocabulary (the default) its features are encoded once per
 * dataset and every batch is scored against them, teacher-forced (token accuracy, and the cross-entropy
 * without smoothing behind the perplexity); sampled candidates score each batch as a training forward
 * (token accuracy only). Captioning also generates a caption per sample (beam search, generate.h) and
 * scores the corpus with BLEU-4 and CIDEr-D against the references. */
int upm_eval_vocab(pass_ctx *p, upm_eval_result *r, upm_err *err)
{
    trainer *t = p->t;
    const upm_formulation_desc *fd = upm_formulation_desc_get(upm_evalset_task(p->es)->formulation);
    int rc, full = t->o->vocab_sampled <= 0, caption = fd->readout == UPM_READ_QUERIES, have_V = 0;
    int64_t n = 0, correct = 0, C = full ? t->cfg.vocab : 0;
    double ce = 0;
    float *host = NULL;
    upm_generator *gen = NULL;
    upm_caption_corpus *corpus = caption ? upm_caption_corpus_new() : NULL;
    if (caption && !corpus)
        return upm_errf(err, UPM_ENOMEM, "no memory");
    upm_blind_baseline blind = {0}; /* counted by either kind of batch (vocab_full_batch, the training step) */
    t->blind = &blind;
    while ((rc = upm_evalset_next(p->es, &t->batch, err)) == 1) {
        if ((full || caption) && !have_V) {
            if ((rc = encode_vocabulary(t, &t->batch, err)))
                break;
            have_V = 1;
        }
        rc = full ? vocab_full_batch(t, fd, &host, &n, &correct, &ce, err)
                  : vocab_sampled_batch(t, &n, &correct, &C, err);
        if (!rc && caption) {
            double t0 = upm_monotonic_s();
            rc = generate_batch(p, &gen, corpus, r, err);
            r->generate_seconds += upm_monotonic_s() - t0;
        }
        if (rc)
            break;
        upm_eval_tick(p);
    }
    free(host);
    upm_generator_free(gen);
    t->blind = NULL;
    double blind_acc = upm_blind_baseline_accuracy(&blind);
    upm_blind_baseline_free(&blind);
    if (rc < 0) {
        upm_caption_corpus_free(corpus);
        return rc;
    }
    r->scored = n;
    r->loss = full && n ? ce / (double)n : -1;
    upm_eval_add_metric(r, "token_accuracy", n ? (double)correct / (double)n : 0, C > 0 && full ? 1.0 / (double)C : -1);
    if (full && n)
        upm_eval_add_metric(r, "perplexity", exp(ce / (double)n), -1);
    if (blind_acc >= 0) /* the best predictor that ignores the input, on these targets (tasks/blind_baseline.h) */
        upm_eval_add_metric(r, "input_blind_accuracy", blind_acc, -1);
    if (caption && upm_caption_corpus_size(corpus) > 0) {
        double cider = upm_caption_cider_d(corpus, NULL);
        if (cider < 0)
            rc = upm_errf(err, UPM_ENOMEM, "no memory for CIDEr-D");
        upm_eval_add_metric(r, "bleu4", upm_caption_bleu4(corpus), -1);
        upm_eval_add_metric(r, "cider_d", cider, -1);
    }
    upm_caption_corpus_free(corpus);
    return rc;
}

