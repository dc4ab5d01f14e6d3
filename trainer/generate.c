/* Beam search over the vocabulary features (generate.h). Scores are computed on the backend (one gemm per
 * step against the cached vocabulary features) and downloaded; the search itself is host bookkeeping over
 * at most samples x beams sequences. */
#include "generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"

#define FINISHED_OTHER (-999.0) /* what the official searcher gives a finished beam's other tokens */

struct upm_generator {
    upm_model *m;
    upm_generate_opts o;
    int samples, nmax, steps;
    upm_decoder *dec; /* the cache (NULL with reencode) */
    upm_pass *full;   /* reencode: full caption passes */
    float *logits;    /* backend [nmax, C] */
    size_t cap_logits;
    float *host;      /* host [nmax, C] */
    size_t cap_host;
    double *lp, *nlp;  /* [nmax] summed log-probabilities */
    uint8_t *done, *ndone;
    int32_t *hist, *nhist; /* [nmax, max_len] */
    int32_t *parent, *prev; /* [nmax] */
};

int upm_generator_new(upm_model *m, int samples, const upm_generate_opts *o, upm_generator **out, upm_err *err)
{
    *out = NULL;
    if (samples < 1 || o->beams < 1 || o->max_len < 1 || o->max_len > m->cfg.max_text || o->length_penalty < 0)
        return upm_errf(err, UPM_EUSAGE, "generation: %d beams, %d tokens (1..%d), length penalty %g", o->beams,
                        o->max_len, m->cfg.max_text, o->length_penalty);
    upm_generator *g = calloc(1, sizeof *g);
    if (!g)
        return upm_errf(err, UPM_ENOMEM, "generation: no memory");
    g->m = m, g->o = *o, g->samples = samples, g->nmax = samples * o->beams;
    size_t n = (size_t)g->nmax, L = (size_t)o->max_len;
    g->lp = malloc(sizeof(double) * n), g->nlp = malloc(sizeof(double) * n);
    g->done = malloc(n), g->ndone = malloc(n);
    g->hist = malloc(sizeof(int32_t) * n * L), g->nhist = malloc(sizeof(int32_t) * n * L);
    g->parent = malloc(sizeof(int32_t) * n), g->prev = calloc(n, sizeof(int32_t));
    int rc = 0;
    if (!g->lp || !g->nlp || !g->done || !g->ndone || !g->hist || !g->nhist || !g->parent || !g->prev)
        rc = upm_errf(err, UPM_ENOMEM, "generation: no memory");
    if (!rc && o->reencode && !(g->full = upm_pass_new()))
        rc = upm_errf(err, UPM_ENOMEM, "generation: no memory");
    if (!rc && !o->reencode) {
        upm_decoder_opts d = {samples, o->beams, o->max_len, o->text_attr, o->query_id};
        rc = upm_decoder_new(m, &d, &g->dec, err);
    }
    if (rc) {
        upm_generator_free(g);
        return rc;
    }
    *out = g;
    return 0;
}

void upm_generator_free(upm_generator *g)
{
    if (!g)
        return;
    upm_decoder_free(g->dec);
    upm_pass_free(g->m, g->full);
    if (g->logits)
        g->m->be->free(g->m->be, g->logits);
    free(g->host), free(g->lp), free(g->nlp), free(g->done), free(g->ndone), free(g->hist), free(g->nhist);
    free(g->parent), free(g->prev);
    free(g);
}

int upm_generator_steps(const upm_generator *g) { return g->steps; }

/* Re-encoding baseline: query t's features from a full pass over prefix + caption so far + queries, the
 * prefix's rows repeated for each of a sample's `group` sequences. */
static int reencode_features(upm_generator *g, const upm_seq_input *prefix, int group, int t, const float **F,
                             upm_err *err)
{
    int n = prefix->nseq * group, L = t + 1, P = 1, rc = 0;
    upm_seq_input in = *prefix;
    in.nseq = n;
    void *mem[3 * UPM_SEQ_MAX_SEGMENTS + 6] = {0};
    int nm = 0;
    for (int s = 0; s < prefix->nseg && !rc; s++) {
        const upm_seq_segment *src = &prefix->seg[s];
        upm_seq_segment *dst = &in.seg[s];
        size_t tok = (size_t)upm_seq_segment_tokens(src);
        P += (int)tok;
        uint8_t *a = mem[nm++] = malloc(tok * (size_t)n);
        float *px = NULL;
        int32_t *ids = NULL, *lens = NULL;
        size_t row = src->kind == UPM_SEG_TEXT ? 0 : (size_t)src->T * 3 * src->H * src->W;
        if (row)
            px = mem[nm++] = malloc(sizeof(float) * row * (size_t)n);
        else {
            ids = mem[nm++] = malloc(sizeof(int32_t) * tok * (size_t)n);
            lens = mem[nm++] = malloc(sizeof(int32_t) * (size_t)n);
        }
        if (!a || (row && !px) || (!row && (!ids || !lens))) {
            rc = upm_errf(err, UPM_ENOMEM, "generation: no memory");
            break;
        }
        for (int q = 0; q < n; q++) {
            int b = q / group;
            memcpy(a + (size_t)q * tok, src->attrs + (size_t)b * tok, tok);
            if (row)
                memcpy(px + (size_t)q * row, src->pixels + (size_t)b * row, sizeof(float) * row);
            else {
                memcpy(ids + (size_t)q * tok, src->ids + (size_t)b * tok, sizeof(int32_t) * tok);
                lens[q] = src->lengths[b];
            }
        }
        dst->attrs = a, dst->pixels = px, dst->ids = ids, dst->lengths = lens;
    }
    int32_t *ids = rc ? NULL : (mem[nm++] = malloc(sizeof(int32_t) * (size_t)n * (size_t)L * 2));
    int32_t *lens = rc ? NULL : (mem[nm++] = malloc(sizeof(int32_t) * (size_t)n * 4));
    uint8_t *attrs = rc ? NULL : (mem[nm++] = malloc((size_t)n * (size_t)L));
    if (!rc && (!ids || !lens || !attrs))
        rc = upm_errf(err, UPM_ENOMEM, "generation: no memory");
    if (!rc && in.nseg + 2 > UPM_SEQ_MAX_SEGMENTS)
        rc = upm_errf(err, UPM_EINVAL, "generation: too many input segments");
    if (!rc) {
        int32_t *q = ids + (size_t)n * L, *lt = lens, *lq = lens + n, *rs = lens + 2 * n, *rp = lens + 3 * n;
        memset(attrs, g->o.text_attr, (size_t)n * L);
        for (int s = 0; s < n; s++) {
            for (int j = 0; j < L; j++)
                ids[(size_t)s * L + j] = j < t ? g->hist[(size_t)s * g->o.max_len + j] : 0, q[(size_t)s * L + j] = g->o.query_id;
            lt[s] = t, lq[s] = t + 1, rs[s] = s, rp[s] = P + L + t;
        }
        in.seg[in.nseg++] = (upm_seq_segment){.kind = UPM_SEG_TEXT, .attn = UPM_SEG_CAUSAL, .L = L, .ids = ids,
                                              .lengths = lt, .attrs = attrs};
        in.seg[in.nseg++] = (upm_seq_segment){.kind = UPM_SEG_TEXT, .attn = UPM_SEG_QUERY, .L = L, .ids = q,
                                              .lengths = lq, .attrs = attrs};
        in.nread = n, in.read_seq = rs, in.read_pos = rp;
        rc = upm_pass_forward(g->m, g->full, &in, NULL, err);
    }
    for (int i = 0; i < nm; i++)
        free(mem[i]);
    *F = rc ? NULL : upm_pass_features(g->full);
    return rc;
}

typedef struct cand {
    double v;
    int b, c;
} cand;

/* Inserts (v, b, c) into best[0..k) (descending; an equal value keeps the earlier entry ahead). */
static void offer(cand *best, int k, double v, int b, int c)
{
    if (!(v > best[k - 1].v))
        return;
    int i = k - 1;
    while (i > 0 && v > best[i - 1].v) {
        best[i] = best[i - 1];
        i--;
    }
    best[i] = (cand){v, b, c};
}

int upm_generator_run(upm_generator *g, const upm_seq_input *prefix, const float *V, int C, float scale,
                      int32_t *tokens, int *lens, upm_err *err)
{
    upm_model *m = g->m;
    upm_backend *be = m->be;
    int n = prefix->nseq, K = g->o.beams, ML = g->o.max_len, D = m->cfg.dim, rc = 0;
    if (n < 1 || n > g->samples || C < K)
        return upm_errf(err, UPM_EINVAL, "generation: %d samples (at most %d), %d candidates for %d beams", n,
                        g->samples, C, K);
    size_t need = sizeof(float) * (size_t)g->nmax * C;
    if (need > g->cap_logits) {
        if (g->logits)
            be->free(be, g->logits);
        g->cap_logits = 0;
        if (!(g->logits = be->alloc(be, need)))
            return upm_errf(err, UPM_ENOMEM, "generation: no memory for %d x %d scores", g->nmax, C);
        g->cap_logits = need;
    }
    if (need > g->cap_host) {
        float *h = realloc(g->host, need);
        if (!h)
            return upm_errf(err, UPM_ENOMEM, "generation: no memory for %d x %d scores", g->nmax, C);
        g->host = h, g->cap_host = need;
    }
    if (!g->o.reencode && (rc = upm_decoder_start(g->dec, prefix, err)))
        return rc;
    cand *best = malloc(sizeof *best * (size_t)K), *row = malloc(sizeof *row * (size_t)K);
    if (!best || !row) {
        free(best), free(row);
        return upm_errf(err, UPM_ENOMEM, "generation: no memory");
    }
    int group = 1;
    for (int s = 0; s < n; s++)
        g->lp[s] = 0, g->done[s] = 0;
    g->steps = 0;
    for (int t = 0; t < ML && !rc; t++) {
        int nseq = n * group;
        const float *F = NULL;
        rc = g->o.reencode ? reencode_features(g, prefix, group, t, &F, err)
                           : upm_decoder_step(g->dec, group, g->prev, &F, err);
        if (rc)
            break;
        be->gemm(be, 0, 1, nseq, C, D, scale, F, D, V, D, 0.0f, g->logits, C);
        be->download(be, g->host, g->logits, sizeof(float) * (size_t)nseq * C);
        int all_done = 1;
        for (int i = 0; i < n; i++) {
            for (int k = 0; k < K; k++)
                best[k] = (cand){-INFINITY, 0, 0};
            for (int b = 0; b < group; b++) {
                int s = i * group + b;
                const float *x = g->host + (size_t)s * C;
                if (g->done[s]) { /* only the end token continues it, at no cost */
                    offer(best, K, g->lp[s], b, g->o.end_id);
                    for (int c = 0, k = 0; c < C && k < K; c++)
                        if (c != g->o.end_id)
                            offer(best, K, FINISHED_OTHER, b, c), k++;
                    continue;
                }
                for (int k = 0; k < K; k++)
                    row[k] = (cand){-INFINITY, b, 0};
                float mx = x[0];
                for (int c = 1; c < C; c++)
                    mx = x[c] > mx ? x[c] : mx;
                double sum = 0;
                for (int c = 0; c < C; c++) {
                    sum += exp((double)x[c] - mx);
                    offer(row, K, x[c], b, c);
                }
                double lse = mx + log(sum);
                for (int k = 0; k < K; k++)
                    offer(best, K, g->lp[s] + (row[k].v - lse), b, row[k].c);
            }
            for (int k = 0; k < K; k++) {
                int s2 = i * K + k, par = i * group + best[k].b;
                g->parent[s2] = par;
                g->nlp[s2] = best[k].v;
                g->ndone[s2] = g->done[par] || best[k].c == g->o.end_id;
                memcpy(g->nhist + (size_t)s2 * ML, g->hist + (size_t)par * ML, sizeof(int32_t) * (size_t)t);
                g->nhist[(size_t)s2 * ML + t] = best[k].c;
                g->prev[s2] = best[k].c;
                all_done &= g->ndone[s2];
            }
        }
        double *tl = g->lp;
        g->lp = g->nlp, g->nlp = tl;
        uint8_t *td = g->done;
        g->done = g->ndone, g->ndone = td;
        int32_t *th = g->hist;
        g->hist = g->nhist, g->nhist = th;
        if (!g->o.reencode)
            rc = upm_decoder_reorder(g->dec, g->parent, n * K, err);
        group = K, g->steps = t + 1;
        if (all_done)
            break;
    }
    for (int i = 0; !rc && i < n; i++) {
        int pick = 0;
        double top = -INFINITY;
        for (int k = 0; k < K; k++) {
            const int32_t *h = g->hist + (size_t)(i * K + k) * ML;
            int words = 0;
            for (int j = 0; j < g->steps; j++)
                words += h[j] != g->o.end_id;
            double v = g->lp[i * K + k];
            if (g->o.length_penalty > 0)
                v /= pow(words + 1.0, g->o.length_penalty);
            if (v > top)
                top = v, pick = k;
        }
        const int32_t *h = g->hist + (size_t)(i * K + pick) * ML;
        int len = 0;
        while (len < g->steps && h[len] != g->o.end_id)
            len++;
        memcpy(tokens + (size_t)i * ML, h, sizeof(int32_t) * (size_t)len);
        lens[i] = len;
    }
    free(best), free(row);
    return rc;
}
