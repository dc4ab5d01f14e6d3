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

/* The rank (0 = first) of the best-ranked candidate c with group[c] == g among n candidates whose scores
 * are at s[c * stride]; ties go to the lower index. *truths counts the ground truths. */
static int best_truth_rank(const float *s, size_t stride, int n, const int *group, int g, int *truths)
{
    int best = -1;
    *truths = 0;
    for (int c = 0; c < n; c++)
        if (group[c] == g) {
            (*truths)++;
            if (best < 0 || s[(size_t)c * stride] > s[(size_t)best * stride])
                best = c;
        }
    int rank = 0;
    float v = s[(size_t)best * stride];
    for (int c = 0; c < n; c++) {
        float x = s[(size_t)c * stride];
        rank += x > v || (x == v && c < best);
    }
    return rank;
}

int upm_retrieval_recall_score(const float *scores, int n, const int32_t *texts, int L, const int32_t *lengths,
                               upm_retrieval_recall *out)
{
    memset(out, 0, sizeof *out);
    out->n = n;
    text_ref *refs = malloc(sizeof *refs * (size_t)(n > 0 ? n : 1));
    int *group = malloc(sizeof *group * (size_t)(n > 0 ? n : 1));
    if (!refs || !group) {
        free(refs);
        free(group);
        return -1;
    }
    for (int i = 0; i < n; i++)
        refs[i] = (text_ref){texts + (size_t)i * L, lengths[i], i};
    qsort(refs, (size_t)n, sizeof *refs, text_cmp);
    for (int i = 0, g = -1; i < n; i++) {
        if (i == 0 || refs[i].len != refs[i - 1].len ||
            memcmp(refs[i].ids, refs[i - 1].ids, sizeof(int32_t) * (size_t)refs[i].len))
            g++;
        group[refs[i].index] = g;
    }
    for (int q = 0; q < n; q++) {
        int truths;
        int r_i2t = best_truth_rank(scores + (size_t)q * n, 1, n, group, group[q], &truths); /* image q's row */
        int r_t2i = best_truth_rank(scores + q, (size_t)n, n, group, group[q], &truths);     /* text q's column */
        for (int k = 0; k < UPM_RECALL_KS; k++) {
            int K = upm_recall_k[k] < n ? upm_recall_k[k] : n;
            out->i2t[k] += r_i2t < K;
            out->t2i[k] += r_t2i < K;
            /* a uniform ranking puts no ground truth in the first K with probability C(n-t, K) / C(n, K) */
            double miss = 1.0;
            for (int j = 0; j < K; j++)
                miss *= (double)(n - truths - j) / (double)(n - j);
            out->chance[k] += (truths + K > n ? 1.0 : 1.0 - miss) / n;
        }
    }
    free(refs);
    free(group);
    return 0;
}