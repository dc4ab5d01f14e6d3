/* Unit test for tasks/blind_baseline.c: the input-blind baseline's accuracy on hand-counted targets, and on random
 * targets against a direct count (every group's tokens tallied one by one). */
#include <stdlib.h>

#include "blind_baseline.h"
#include "check.h"

/* The direct count: for each group, the largest number of equal tokens, by comparing every pair. */
static double direct(const int32_t *ids, const int32_t *groups, int M)
{
    int hits = 0;
    for (int g = 0; g < 8; g++) {
        int best = 0;
        for (int i = 0; i < M; i++) {
            if (groups[i] != g)
                continue;
            int c = 0;
            for (int j = 0; j < M; j++)
                c += groups[j] == g && ids[j] == ids[i];
            best = c > best ? c : best;
        }
        hits += best;
    }
    return (double)hits / M;
}

int main(void)
{
    upm_blind_baseline b = {0};
    CHECK(upm_blind_baseline_accuracy(&b) == -1); /* nothing scored */

    /* MLM: one group; "5" is the most frequent of five targets */
    const int32_t mlm[5] = {5, 5, 7, 5, 9};
    CHECK(upm_blind_baseline_add(&b, mlm, NULL, 5) == 0);
    CHECK(upm_blind_baseline_accuracy(&b) == 3.0 / 5);
    upm_blind_baseline_free(&b);

    /* captions: the best token per position, not overall (token 1 wins position 0, token 4 position 1; a single
     * constant would get 2 of 6), added in two batches */
    const int32_t ids[6] = {1, 1, 2, 3, 4, 4}, pos[6] = {0, 0, 0, 1, 1, 1};
    CHECK(upm_blind_baseline_add(&b, ids, pos, 3) == 0);
    CHECK(upm_blind_baseline_add(&b, ids + 3, pos + 3, 3) == 0);
    CHECK(upm_blind_baseline_accuracy(&b) == 4.0 / 6);
    upm_blind_baseline_free(&b);

    /* random targets (ids up to 49,410, 8 groups, skewed so that groups have clear winners) against the direct count,
     * in batches of uneven size so the buffer grows several times */
    srand(7);
    enum { M = 3000 };
    static int32_t rid[M], rgr[M];
    for (int i = 0; i < M; i++) {
        rgr[i] = rand() % 8;
        rid[i] = rand() % 3 ? rand() % (5 + rgr[i]) : rand() % 49411;
    }
    for (int lo = 0; lo < M;) {
        int n = 1 + rand() % 700;
        n = lo + n > M ? M - lo : n;
        CHECK(upm_blind_baseline_add(&b, rid + lo, rgr + lo, n) == 0);
        lo += n;
    }
    double got = upm_blind_baseline_accuracy(&b), want = direct(rid, rgr, M);
    CHECK(got == want);
    upm_blind_baseline_free(&b);
    return CHECK_RESULT("test_blind_baseline");
}
