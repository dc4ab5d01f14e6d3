/* R@1 both ways with caption identity as ground truth (retrieval.h). */
#include "retrieval.h"

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
