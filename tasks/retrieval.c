/* R@1 both ways with caption identity as ground truth (retrieval.h). */
#include "retrieval.h"

#include <stdlib.h>
#include <string.h>

static int same_text(const int32_t *texts, int L, const int32_t *lengths, int a, int b)
{
    return lengths[a] == lengths[b] &&
           !memcmp(texts + (size_t)a * L, texts + (size_t)b * L, sizeof(int32_t) * (size_t)lengths[a]);
}

upm_retrieval_r1 upm_retrieval_r1_score(const float *scores, int n, const int32_t *texts, int L, const int32_t *lengths)
{
    upm_retrieval_r1 r = {0, 0, n, 0.0};
    for (int i = 0; i < n; i++) {
        int best_t = 0, best_i = 0, truths = 0;
        for (int j = 1; j < n; j++) {
            if (scores[(size_t)i * n + j] > scores[(size_t)i * n + best_t])
                best_t = j; /* image i's best text */
            if (scores[(size_t)j * n + i] > scores[(size_t)best_i * n + i])
                best_i = j; /* text i's best image */
        }
        for (int j = 0; j < n; j++)
            truths += same_text(texts, L, lengths, i, j);
        r.hits_i2t += same_text(texts, L, lengths, i, best_t);
        r.hits_t2i += same_text(texts, L, lengths, i, best_i);
        r.chance += (double)truths / n / n;
    }
    return r;
}

const int upm_recall_k[UPM_RECALL_KS] = {1, 5, 10};

typedef struct text_ref {
    const int32_t *ids;
    int len, index;
} text_ref;

static int text_cmp(const void *a, const void *b)
{
    const text_ref *x = a, *y = b;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    int c = memcmp(x->ids, y->ids, sizeof(int32_t) * (size_t)x->len);
    return c ? c : (x->index > y->index) - (x->index < y->index);
}

/* Caption identity groups (by sorting) of n texts into group[n]; returns the number of groups or -1. */
static int group_texts(const int32_t *texts, int L, const int32_t *lengths, int n, int *group)
{
    text_ref *refs = malloc(sizeof *refs * (size_t)(n > 0 ? n : 1));
    if (!refs)
        return -1;
    for (int i = 0; i < n; i++)
        refs[i] = (text_ref){texts + (size_t)i * L, lengths[i], i};
    qsort(refs, (size_t)n, sizeof *refs, text_cmp);
    int g = -1;
    for (int i = 0; i < n; i++) {
        if (i == 0 || refs[i].len != refs[i - 1].len ||
            memcmp(refs[i].ids, refs[i - 1].ids, sizeof(int32_t) * (size_t)refs[i].len))
            g++;
        group[refs[i].index] = g;
    }
    free(refs);
    return g + 1;
}

/* Rank (ties to the lower index) of the best-ranked candidate c < n with truth(c) set; *truths counts them. */
static int best_rank(const float *s, size_t stride, int n, const unsigned char *truth, int *truths)
{
    int best = -1;
    *truths = 0;
    for (int c = 0; c < n; c++)
        if (truth[c]) {
            (*truths)++;
            if (best < 0 || s[(size_t)c * stride] > s[(size_t)best * stride])
                best = c;
        }
    if (best < 0)
        return n;
    int rank = 0;
    float v = s[(size_t)best * stride];
    for (int c = 0; c < n; c++) {
        float x = s[(size_t)c * stride];
        rank += x > v || (x == v && c < best);
    }
    return rank;
}

static double chance_at(int n, int truths, int K)
{
    if (K > n)
        K = n;
    if (truths + K > n)
        return 1.0;
    double miss = 1.0;
    for (int j = 0; j < K; j++)
        miss *= (double)(n - truths - j) / (double)(n - j);
    return 1.0 - miss;
}

int upm_retrieval_recall_multi_score(const float *scores, int n_img, int n_txt, const int32_t *texts, int L,
                                     const int32_t *lengths, const int32_t *owner, upm_retrieval_recall_multi *out)
{
    memset(out, 0, sizeof *out);
    out->n = n_img, out->n_txt = n_txt;
    int *group = malloc(sizeof *group * (size_t)(n_txt > 0 ? n_txt : 1));
    int ng = group ? group_texts(texts, L, lengths, n_txt, group) : -1;
    /* has[i * ng + g]: image i owns a caption of group g (n_img x groups bytes) */
    unsigned char *has = ng >= 0 ? calloc((size_t)n_img * (size_t)(ng > 0 ? ng : 1), 1) : NULL;
    unsigned char *truth = has ? malloc((size_t)(n_img > n_txt ? n_img : n_txt) + 1) : NULL;
    if (!truth) {
        free(group), free(has), free(truth);
        return -1;
    }
    for (int j = 0; j < n_txt; j++)
        if (owner[j] >= 0 && owner[j] < n_img)
            has[(size_t)owner[j] * ng + group[j]] = 1;
    for (int i = 0; i < n_img; i++) { /* image i: the texts in its groups */
        int truths;
        for (int j = 0; j < n_txt; j++)
            truth[j] = has[(size_t)i * ng + group[j]];
        int r = best_rank(scores + (size_t)i * n_txt, 1, n_txt, truth, &truths);
        for (int k = 0; k < UPM_RECALL_KS; k++) {
            out->i2t[k] += r < upm_recall_k[k];
            out->chance[k] += chance_at(n_txt, truths, upm_recall_k[k]) / n_img;
        }
    }
    for (int j = 0; j < n_txt; j++) { /* caption j: the images owning an equal caption */
        int truths;
        for (int i = 0; i < n_img; i++)
            truth[i] = has[(size_t)i * ng + group[j]];
        int r = best_rank(scores + j, (size_t)n_txt, n_img, truth, &truths);
        for (int k = 0; k < UPM_RECALL_KS; k++) {
            out->t2i[k] += r < upm_recall_k[k];
            out->chance_t2i[k] += chance_at(n_img, truths, upm_recall_k[k]) / n_txt;
        }
    }
    free(group), free(has), free(truth);
    return 0;
}

int upm_retrieval_recall_score(const float *scores, int n, const int32_t *texts, int L, const int32_t *lengths,
                               upm_retrieval_recall *out)
{
    int32_t *owner = malloc(sizeof *owner * (size_t)(n > 0 ? n : 1));
    upm_retrieval_recall_multi m;
    memset(out, 0, sizeof *out);
    if (!owner)
        return -1;
    for (int i = 0; i < n; i++)
        owner[i] = i; /* one caption per image: its own */
    int rc = upm_retrieval_recall_multi_score(scores, n, n, texts, L, lengths, owner, &m);
    free(owner);
    out->n = n;
    for (int k = 0; !rc && k < UPM_RECALL_KS; k++)
        out->i2t[k] = m.i2t[k], out->t2i[k] = m.t2i[k], out->chance[k] = m.chance[k];
    return rc;
}