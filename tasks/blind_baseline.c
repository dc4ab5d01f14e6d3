/* The input-blind baseline of vocabulary targets (blind_baseline.h): every (group, token) kept, then sorted once,
 * so that each group's most frequent token is the longest run. Exact, and a few bytes per scored target. */
#include "blind_baseline.h"

#include <stdlib.h>

int upm_blind_baseline_add(upm_blind_baseline *b, const int32_t *ids, const int32_t *groups, int M)
{
    if (M <= 0)
        return 0;
    if (b->n + (size_t)M > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + (size_t)M)
            cap *= 2;
        uint64_t *k = realloc(b->keys, cap * sizeof *k);
        if (!k)
            return -1;
        b->keys = k, b->cap = cap;
    }
    for (int i = 0; i < M; i++)
        b->keys[b->n++] = (uint64_t)(uint32_t)(groups ? groups[i] : 0) << 32 | (uint32_t)ids[i];
    return 0;
}

static int cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, c = *(const uint64_t *)y;
    return (a > c) - (a < c);
}

double upm_blind_baseline_accuracy(upm_blind_baseline *b)
{
    if (b->n == 0)
        return -1;
    qsort(b->keys, b->n, sizeof *b->keys, cmp_u64);
    size_t hits = 0, best = 0, run = 0;
    for (size_t i = 0; i < b->n; i++) {
        run = i > 0 && b->keys[i] == b->keys[i - 1] ? run + 1 : 1;
        if (i > 0 && b->keys[i] >> 32 != b->keys[i - 1] >> 32) /* a new group: the last one's best counts */
            hits += best, best = 0;
        if (run > best)
            best = run;
    }
    return (double)(hits + best) / (double)b->n;
}

void upm_blind_baseline_free(upm_blind_baseline *b)
{
    free(b->keys);
    b->keys = NULL, b->n = b->cap = 0;
}
