/* BLEU-4 and CIDEr-D over a caption corpus (caption_metrics.h). Words and n-grams are interned to
 * integer ids (open-addressing tables); each sentence is its n-grams as a list of (id, count) sorted by id,
 * so matching a hypothesis against a reference is a merge. */
#include "caption_metrics.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

#define MAXN 4

/* ---- interning: byte strings -> dense ids ---- */

typedef struct intern {
    uint64_t *hash;
    int32_t *slot_id; /* -1: empty */
    char **key;       /* by id */
    size_t *klen;     /* by id */
    size_t cap, n;    /* slots (a power of two), ids */
} intern;

static uint64_t fnv1a(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static int intern_grow(intern *t)
{
    size_t cap = t->cap ? 2 * t->cap : 1024;
    uint64_t *hash = malloc(sizeof *hash * cap);
    int32_t *slot = malloc(sizeof *slot * cap);
    char **key = realloc(t->key, sizeof *key * cap / 2);
    size_t *klen = key ? realloc(t->klen, sizeof *klen * cap / 2) : NULL;
    if (key)
        t->key = key;
    if (klen)
        t->klen = klen;
    if (!hash || !slot || !key || !klen) {
        free(hash), free(slot);
        return UPM_ENOMEM;
    }
    for (size_t i = 0; i < cap; i++)
        slot[i] = -1;
    for (size_t i = 0; i < t->cap; i++)
        if (t->slot_id[i] >= 0) {
            size_t j = t->hash[i] & (cap - 1);
            while (slot[j] >= 0)
                j = (j + 1) & (cap - 1);
            slot[j] = t->slot_id[i], hash[j] = t->hash[i];
        }
    free(t->hash), free(t->slot_id);
    t->hash = hash, t->slot_id = slot, t->cap = cap;
    return 0;
}

/* The id of key (added when new), or a negative error. */
static int32_t intern_id(intern *t, const void *k, size_t n)
{
    if ((t->n + 1) * 2 > t->cap && intern_grow(t))
        return UPM_ENOMEM;
    uint64_t h = fnv1a(k, n);
    size_t j = h & (t->cap - 1);
    for (; t->slot_id[j] >= 0; j = (j + 1) & (t->cap - 1)) {
        int32_t id = t->slot_id[j];
        if (t->hash[j] == h && t->klen[id] == n && memcmp(t->key[id], k, n) == 0)
            return id;
    }
    char *copy = malloc(n ? n : 1);
    if (!copy)
        return UPM_ENOMEM;
    memcpy(copy, k, n);
    int32_t id = (int32_t)t->n++;
    t->key[id] = copy, t->klen[id] = n;
    t->slot_id[j] = id, t->hash[j] = h;
    return id;
}

static void intern_free(intern *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->key[i]);
    free(t->hash), free(t->slot_id), free(t->key), free(t->klen);
}

/* ---- sentences ---- */

typedef struct gram {
    int32_t id, count;
} gram;

typedef struct sent {
    gram *g; /* sorted by id */
    int ng, words;
} sent;

typedef struct sample {
    sent hyp;
    sent *refs;
    int nrefs;
} sample;

struct upm_caption_corpus {
    intern words, grams;
    uint8_t *order; /* by gram id: n */
    size_t cap_order;
    sample *s;
    size_t n, cap;
};

int upm_caption_tokenize(const char *s, size_t n, int (*word)(void *ctx, const char *w, size_t len), void *ctx)
{
    char buf[256];
    int count = 0;
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80 && !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) {
            i++;
            continue;
        }
        size_t len = 0, start = i;
        for (; i < n; i++) {
            c = (unsigned char)s[i];
            if (c < 0x80 && !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
                break;
        }
        len = i - start;
        const char *w = s + start;
        char *own = NULL;
        if (len > sizeof buf && !(own = malloc(len)))
            return UPM_ENOMEM;
        char *low = own ? own : buf;
        for (size_t k = 0; k < len; k++)
            low[k] = (char)(w[k] >= 'A' && w[k] <= 'Z' ? w[k] - 'A' + 'a' : w[k]);
        int rc = word ? word(ctx, low, len) : 0;
        free(own);
        if (rc < 0)
            return rc;
        count++;
    }
    return count;
}

typedef struct word_list {
    upm_caption_corpus *c;
    int32_t *ids;
    int n, cap;
} word_list;

static int add_word(void *ctx, const char *w, size_t len)
{
    word_list *l = ctx;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 32;
        int32_t *ids = realloc(l->ids, sizeof *ids * (size_t)cap);
        if (!ids)
            return UPM_ENOMEM;
        l->ids = ids, l->cap = cap;
    }
    int32_t id = intern_id(&l->c->words, w, len);
    if (id < 0)
        return id;
    l->ids[l->n++] = id;
    return 0;
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Tokenizes text into s: its n-grams (n = 1..4) with counts, sorted by id. */
static int make_sent(upm_caption_corpus *c, const char *text, size_t len, sent *s)
{
    memset(s, 0, sizeof *s);
    word_list wl = {c, NULL, 0, 0};
    int rc = upm_caption_tokenize(text, len, add_word, &wl);
    if (rc < 0) {
        free(wl.ids);
        return rc;
    }
    rc = 0;
    int W = wl.n, total = 0;
    for (int k = 1; k <= MAXN; k++)
        total += W >= k ? W - k + 1 : 0;
    int32_t *ids = malloc(sizeof *ids * (size_t)(total ? total : 1));
    if (!ids) {
        free(wl.ids);
        return UPM_ENOMEM;
    }
    int m = 0;
    for (int k = 1; k <= MAXN && !rc; k++)
        for (int i = 0; i + k <= W && !rc; i++) {
            int32_t id = intern_id(&c->grams, wl.ids + i, sizeof(int32_t) * (size_t)k);
            if (id < 0) {
                rc = id;
                break;
            }
            if ((size_t)id >= c->cap_order) {
                size_t cap = c->cap_order ? 2 * c->cap_order : 4096;
                while (cap <= (size_t)id)
                    cap *= 2;
                uint8_t *o = realloc(c->order, cap);
                if (!o) {
                    rc = UPM_ENOMEM;
                    break;
                }
                c->order = o, c->cap_order = cap;
            }
            c->order[id] = (uint8_t)k;
            ids[m++] = id;
        }
    free(wl.ids);
    if (rc) {
        free(ids);
        return rc;
    }
    qsort(ids, (size_t)m, sizeof *ids, cmp_i32);
    s->g = malloc(sizeof *s->g * (size_t)(m ? m : 1));
    if (!s->g) {
        free(ids);
        return UPM_ENOMEM;
    }
    for (int i = 0; i < m; i++) {
        if (s->ng && s->g[s->ng - 1].id == ids[i])
            s->g[s->ng - 1].count++;
        else
            s->g[s->ng++] = (gram){ids[i], 1};
    }
    s->words = W;
    free(ids);
    return 0;
}

upm_caption_corpus *upm_caption_corpus_new(void) { return calloc(1, sizeof(upm_caption_corpus)); }

void upm_caption_corpus_free(upm_caption_corpus *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++) {
        free(c->s[i].hyp.g);
        for (int r = 0; r < c->s[i].nrefs; r++)
            free(c->s[i].refs[r].g);
        free(c->s[i].refs);
    }
    free(c->s);
    free(c->order);
    intern_free(&c->words);
    intern_free(&c->grams);
    free(c);
}

int upm_caption_corpus_add(upm_caption_corpus *c, const char *hyp, size_t hyp_len, const char *const *refs,
                           const size_t *ref_lens, int nrefs)
{
    if (nrefs < 1)
        return UPM_EINVAL;
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 64;
        sample *s = realloc(c->s, sizeof *s * cap);
        if (!s)
            return UPM_ENOMEM;
        c->s = s, c->cap = cap;
    }
    sample *s = &c->s[c->n];
    memset(s, 0, sizeof *s);
    s->refs = calloc((size_t)nrefs, sizeof *s->refs);
    int rc = s->refs ? make_sent(c, hyp, hyp_len, &s->hyp) : UPM_ENOMEM;
    for (int r = 0; !rc && r < nrefs; r++, s->nrefs++)
        rc = make_sent(c, refs[r], ref_lens[r], &s->refs[r]);
    if (rc) {
        free(s->hyp.g);
        for (int r = 0; r < s->nrefs; r++)
            free(s->refs[r].g);
        free(s->refs);
        return rc;
    }
    c->n++;
    return 0;
}

size_t upm_caption_corpus_size(const upm_caption_corpus *c) { return c->n; }

/* The count of gram id in s (0 when absent). */
static int count_of(const sent *s, int32_t id)
{
    int lo = 0, hi = s->ng;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (s->g[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < s->ng && s->g[lo].id == id ? s->g[lo].count : 0;
}

double upm_caption_bleu4(const upm_caption_corpus *c)
{
    int64_t num[MAXN + 1] = {0}, den[MAXN + 1] = {0}, hyp_len = 0, ref_len = 0;
    for (size_t i = 0; i < c->n; i++) {
        const sample *s = &c->s[i];
        int64_t total[MAXN + 1] = {0};
        for (int k = 0; k < s->hyp.ng; k++) {
            const gram *g = &s->hyp.g[k];
            int n = c->order[g->id], best = 0;
            for (int r = 0; r < s->nrefs; r++) {
                int rc = count_of(&s->refs[r], g->id);
                best = rc > best ? rc : best;
            }
            num[n] += g->count < best ? g->count : best;
            total[n] += g->count;
        }
        for (int n = 1; n <= MAXN; n++)
            den[n] += total[n] > 1 ? total[n] : 1;
        int h = s->hyp.words, closest = s->refs[0].words;
        for (int r = 1; r < s->nrefs; r++) { /* closest length, ties to the shorter */
            int w = s->refs[r].words, dw = abs(w - h), dc = abs(closest - h);
            if (dw < dc || (dw == dc && w < closest))
                closest = w;
        }
        hyp_len += h, ref_len += closest;
    }
    for (int n = 1; n <= MAXN; n++)
        if (num[n] == 0)
            return 0.0;
    double bp = hyp_len > ref_len ? 1.0 : exp(1.0 - (double)ref_len / (double)hyp_len);
    double logs = 0;
    for (int n = 1; n <= MAXN; n++)
        logs += 0.25 * log((double)num[n] / (double)den[n]);
    return bp * exp(logs);
}

/* TF-IDF weight of every n-gram of s (same order as s->g), the norms per order and the toolkit's length
 * (its bigram count: CiderScorer adds term frequencies where the 0-based order index is 1). */
static void tfidf(const upm_caption_corpus *c, const sent *s, const double *df_log, double ref_len, double *w,
                  double norm[MAXN + 1], int *length)
{
    double sq[MAXN + 1] = {0};
    *length = 0;
    for (int k = 0; k < s->ng; k++) {
        int n = c->order[s->g[k].id];
        w[k] = (double)s->g[k].count * (ref_len - df_log[s->g[k].id]);
        sq[n] += w[k] * w[k];
        if (n == 2)
            *length += s->g[k].count;
    }
    for (int n = 1; n <= MAXN; n++)
        norm[n] = sqrt(sq[n]);
}

double upm_caption_cider_d(const upm_caption_corpus *c, double *per_sample)
{
    size_t G = c->grams.n;
    double *df_log = calloc(G ? G : 1, sizeof *df_log);
    size_t *last = malloc(sizeof *last * (G ? G : 1));
    int maxg = 1;
    for (size_t i = 0; i < c->n; i++) {
        maxg = c->s[i].hyp.ng > maxg ? c->s[i].hyp.ng : maxg;
        for (int r = 0; r < c->s[i].nrefs; r++)
            maxg = c->s[i].refs[r].ng > maxg ? c->s[i].refs[r].ng : maxg;
    }
    double *wh = malloc(sizeof *wh * (size_t)maxg), *wr = malloc(sizeof *wr * (size_t)maxg);
    if (!df_log || !last || !wh || !wr) {
        free(df_log), free(last), free(wh), free(wr);
        return -1;
    }
    for (size_t g = 0; g < G; g++)
        last[g] = (size_t)-1;
    for (size_t i = 0; i < c->n; i++) /* document frequency: the samples whose references hold the n-gram */
        for (int r = 0; r < c->s[i].nrefs; r++)
            for (int k = 0; k < c->s[i].refs[r].ng; k++) {
                int32_t id = c->s[i].refs[r].g[k].id;
                if (last[id] != i)
                    last[id] = i, df_log[id] += 1;
            }
    for (size_t g = 0; g < G; g++)
        df_log[g] = log(df_log[g] > 1 ? df_log[g] : 1.0);
    double ref_len = log((double)c->n), total = 0, sigma = 6.0;
    for (size_t i = 0; i < c->n; i++) {
        const sample *s = &c->s[i];
        double nh[MAXN + 1], nr[MAXN + 1], score[MAXN + 1] = {0};
        int lh, lr;
        tfidf(c, &s->hyp, df_log, ref_len, wh, nh, &lh);
        for (int r = 0; r < s->nrefs; r++) {
            const sent *ref = &s->refs[r];
            tfidf(c, ref, df_log, ref_len, wr, nr, &lr);
            double val[MAXN + 1] = {0}, delta = (double)(lh - lr);
            for (int a = 0, b = 0; a < s->hyp.ng; a++) { /* merge: both sorted by id */
                int32_t id = s->hyp.g[a].id;
                while (b < ref->ng && ref->g[b].id < id)
                    b++;
                double vr = b < ref->ng && ref->g[b].id == id ? wr[b] : 0.0;
                val[c->order[id]] += (wh[a] < vr ? wh[a] : vr) * vr;
            }
            for (int n = 1; n <= MAXN; n++) {
                if (nh[n] != 0 && nr[n] != 0)
                    val[n] /= nh[n] * nr[n];
                score[n] += val[n] * exp(-(delta * delta) / (2 * sigma * sigma));
            }
        }
        double mean = (score[1] + score[2] + score[3] + score[4]) / MAXN;
        double v = mean / s->nrefs * 10.0;
        if (per_sample)
            per_sample[i] = v;
        total += v;
    }
    free(df_log), free(last), free(wh), free(wr);
    return c->n ? total / (double)c->n : 0.0;
}
