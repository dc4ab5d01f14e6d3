/* Vocabulary read-outs, candidates and chunked candidate encoding (see vocab.h). */
#include "vocab.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bpe.h"
#include "rng.h"

int upm_vocab_readouts(const upm_batch *b, const upm_seq_input *in, upm_readout_kind readout, upm_vocab_batch *vb,
                       upm_err *err)
{
    memset(vb, 0, sizeof *vb);
    int off[UPM_SEQ_MAX_SEGMENTS], pos = 1, text = -1, query = -1;
    for (int s = 0; s < in->nseg; s++) {
        off[s] = pos, pos += upm_seq_segment_tokens(&in->seg[s]);
        if (in->seg[s].kind == UPM_SEG_TEXT && text < 0 && in->seg[s].attn != UPM_SEG_QUERY)
            text = s;
        if (in->seg[s].attn == UPM_SEG_QUERY)
            query = s;
    }
    int mlm = readout == UPM_READ_MASKED;
    if (readout != UPM_READ_MASKED && readout != UPM_READ_QUERIES)
        return upm_errf(err, UPM_EINVAL, "batch of task %s: vocabulary targets need masked or query read-outs",
                        b->task);
    if (text < 0 || (mlm && !b->mlm_targets) || (!mlm && query < 0))
        return upm_errf(err, UPM_EINVAL, "batch of task %s: no %s to score against the vocabulary", b->task,
                        mlm ? "masked text" : "caption query segment");
    const upm_seq_segment *t = &in->seg[text];
    int L = t->L, cap = b->B * L;
    vb->read_seq = malloc(sizeof(int32_t) * (size_t)cap * 3 + 1);
    if (!vb->read_seq)
        return upm_errf(err, UPM_ENOMEM, "no memory for %d read-outs", cap);
    vb->read_pos = vb->read_seq + cap, vb->target_ids = vb->read_pos + cap;
    for (int r = 0; r < b->B; r++)
        for (int j = 0; j < L; j++) {
            int32_t target = mlm ? b->mlm_targets[(size_t)r * L + j] : j < t->lengths[r] ? t->ids[(size_t)r * L + j] : -1;
            if (target < 0)
                continue;
            vb->read_seq[vb->M] = r;
            vb->read_pos[vb->M] = (mlm ? off[text] : off[query]) + j;
            vb->target_ids[vb->M++] = target;
        }
    if (vb->M == 0)
        return upm_errf(err, UPM_EBADDATA, "batch of task %s at step %llu has no %s", b->task,
                        (unsigned long long)b->step, mlm ? "masked token" : "caption token");
    return 0;
}

int upm_vocab_blind_add(upm_blind_baseline *b, const upm_vocab_batch *vb, upm_readout_kind readout, upm_err *err)
{
    if (b && upm_blind_baseline_add(b, vb->target_ids, readout == UPM_READ_QUERIES ? vb->read_pos : NULL, vb->M))
        return upm_errf(err, UPM_ENOMEM, "no memory for the blind baseline's %d targets", vb->M);
    return 0;
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

int upm_vocab_candidates(upm_vocab_batch *vb, int V, int sampled_n, uint64_t seed, int64_t step, upm_err *err)
{
    vb->target_idx = malloc(sizeof(int32_t) * (size_t)vb->M);
    if (!vb->target_idx)
        return upm_errf(err, UPM_ENOMEM, "no memory");
    if (sampled_n <= 0) {
        vb->C = V;
        if (!(vb->cand = malloc(sizeof(int32_t) * (size_t)V)))
            return upm_errf(err, UPM_ENOMEM, "no memory");
        for (int v = 0; v < V; v++)
            vb->cand[v] = v;
        memcpy(vb->target_idx, vb->target_ids, sizeof(int32_t) * (size_t)vb->M);
        return 0;
    }
    int regular = V < UPM_BPE_SOT ? V : UPM_BPE_SOT; /* negatives are regular tokens, never specials */
    uint8_t *in = calloc((size_t)V, 1);
    int32_t *targets = malloc(sizeof(int32_t) * (size_t)vb->M);
    if (!in || !targets) {
        free(in), free(targets);
        return upm_errf(err, UPM_ENOMEM, "no memory");
    }
    int T = 0, T_regular = 0;
    for (int i = 0; i < vb->M; i++)
        if (!in[vb->target_ids[i]]) {
            in[vb->target_ids[i]] = 1, targets[T++] = vb->target_ids[i];
            T_regular += vb->target_ids[i] < regular;
        }
    qsort(targets, (size_t)T, sizeof *targets, cmp_i32);
    int free_ids = regular - T_regular, N = sampled_n < free_ids ? sampled_n : free_ids;
    vb->C = T + N;
    vb->cand = malloc(sizeof(int32_t) * (size_t)vb->C);
    vb->logq = malloc(sizeof(float) * (size_t)vb->C);
    if (!vb->cand || !vb->logq) {
        free(in), free(targets);
        return upm_errf(err, UPM_ENOMEM, "no memory");
    }
    memcpy(vb->cand, targets, sizeof(int32_t) * (size_t)T);
    upm_rng r = upm_rng_stream(seed, UPM_RNG_MASK, (uint64_t)step, 0x766f6361, 0); /* "voca" */
    for (int n = 0; n < N;) {
        int32_t v = (int32_t)upm_rng_below(&r, (uint64_t)regular);
        if (!in[v])
            in[v] = 1, vb->cand[T + n++] = v;
    }
    float corr = N > 0 ? -logf((float)N / (float)free_ids) : 0.0f;
    for (int c = 0; c < vb->C; c++)
        vb->logq[c] = c < T ? 0.0f : corr;
    for (int i = 0; i < vb->M; i++) { /* targets are the sorted prefix */
        int32_t *hit = bsearch(&vb->target_ids[i], targets, (size_t)T, sizeof *targets, cmp_i32);
        vb->target_idx[i] = (int32_t)(hit - targets);
    }
    free(in);
    free(targets);
    return 0;
}

void upm_vocab_batch_free(upm_vocab_batch *vb)
{
    free(vb->read_seq);
    free(vb->cand);
    free(vb->target_idx);
    free(vb->logq);
    memset(vb, 0, sizeof *vb);
}

/* One chunk [c0, c0+n) of the C candidates as sequences [SPE, v] (token routing's noise table covers all C). */
static int chunk_forward(upm_model *m, upm_pass *p, const int32_t *cand, int c0, int n, int C,
                         const upm_vocab_encode_opts *o, int32_t *lengths, uint8_t *attrs, float *keep, upm_err *err)
{
    upm_seq_input in = {.nseq = n, .spe_attr = o->spe_attr, .nseg = 1, .task = o->task};
    in.seg[0] = (upm_seq_segment){.kind = UPM_SEG_TEXT, .attn = UPM_SEG_FULL, .L = 1, .ids = cand + c0,
                                  .lengths = lengths, .attrs = attrs};
    if (keep) {
        upm_rng r = upm_rng_stream(o->seed, UPM_RNG_DROP_PATH, (uint64_t)o->step, 2, (uint64_t)c0);
        upm_drop_path_keep(keep, (size_t)m->cfg.layers * 2 * n, o->drop_path, &r);
    }
    upm_pass_opts po = {!o->eval, o->gate_noise, keep, c0, C};
    return upm_pass_forward(m, p, &in, &po, err);
}

int upm_vocab_encode(upm_model *m, upm_pass *p, const int32_t *cand, int C, const upm_vocab_encode_opts *o, float *V,
                     const float *dV, upm_err *err)
{
    int chunk = o->chunk > 0 ? o->chunk : 4096, n0 = C < chunk ? C : chunk, D = m->cfg.dim;
    int32_t *lengths = malloc(sizeof(int32_t) * (size_t)n0);
    uint8_t *attrs = malloc((size_t)n0);
    float *keep = o->drop_path > 0 ? malloc(sizeof(float) * (size_t)m->cfg.layers * 2 * n0) : NULL;
    if (!lengths || !attrs || (o->drop_path > 0 && !keep)) {
        free(lengths), free(attrs), free(keep);
        return upm_errf(err, UPM_ENOMEM, "no memory for vocabulary chunks");
    }
    for (int i = 0; i < n0; i++)
        lengths[i] = 1, attrs[i] = o->text_attr;
    int rc = 0, single = C <= chunk;
    for (int c0 = 0; !rc && c0 < C; c0 += chunk) {
        int n = C - c0 < chunk ? C - c0 : chunk;
        if (!(dV && single))
            rc = chunk_forward(m, p, cand, c0, n, C, o, lengths, attrs, keep, err);
        if (!rc && !dV)
            m->be->copy(m->be, V + (size_t)c0 * D, upm_pass_features(p), sizeof(float) * (size_t)n * D);
        if (!rc && dV)
            rc = upm_pass_backward(m, p, dV + (size_t)c0 * D, err);
    }
    free(lengths);
    free(attrs);
    free(keep);
    return rc;
}

int upm_vocab_targets_parse(const char *s, int *sampled_n, upm_err *err)
{
    if (!strcmp(s, "full")) {
        *sampled_n = 0;
        return 0;
    }
    char *end = NULL;
    long n = strncmp(s, "sampled:", 8) || !isdigit((unsigned char)s[8]) ? 0 : strtol(s + 8, &end, 10);
    if (n < 1 || n > 10000000 || !end || *end)
        return upm_errf(err, UPM_EUSAGE, "--vocab-targets must be full or sampled:N (1 <= N <= 10000000), not '%s'", s);
    *sampled_n = (int)n;
    return 0;
}
