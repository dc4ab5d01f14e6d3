/* Unit test for tasks/retrieval.c's recall at K = 1, 5, 10 over a whole gallery: a hand-worked gallery,
 * then random galleries (coarse scores, so ties happen; few distinct captions, so ground truths repeat)
 * against a brute-force reference written from the definition (sort each query's candidates by score,
 * ties to the lower index; the first ground truth's position decides every K), R@1 against
 * upm_retrieval_r1_score, and chance against its closed form C(n-t, K) / C(n, K). The general scorer (several
 * captions per image) against its own brute force, and equal to the square one with one caption each. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "retrieval.h"

static const float *g_s;
static size_t g_stride;

static int by_score(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    float sx = g_s[(size_t)x * g_stride], sy = g_s[(size_t)y * g_stride];
    return sx > sy ? -1 : sx < sy ? 1 : (x > y) - (x < y);
}

/* Position of the first ground truth of query q in its sorted candidate list (brute force). */
static int first_truth(const float *s, size_t stride, int n, const int *cap, int q)
{
    int *order = malloc(sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++)
        order[i] = i;
    g_s = s, g_stride = stride;
    qsort(order, (size_t)n, sizeof(int), by_score);
    int pos = 0;
    while (cap[order[pos]] != cap[q])
        pos++;
    free(order);
    return pos;
}

static double choose_ratio(int n, int t, int K) /* C(n-t, K) / C(n, K) */
{
    double r = 1;
    for (int j = 0; j < K; j++)
        r *= j < n - t ? (double)(n - t - j) / (double)(n - j) : 0.0;
    return r;
}

int main(void)
{
    /* Hand-worked: 6 images, unique captions. Image 0 ranks its text 3rd, image 1 1st, the rest 6th. */
    enum { N0 = 6 };
    float s0[N0 * N0];
    for (int i = 0; i < N0; i++)
        for (int j = 0; j < N0; j++)
            s0[i * N0 + j] = i == j ? 0.0f : 1.0f; /* every other text above the own one: rank 5 */
    s0[0 * N0 + 0] = 0.5f, s0[0 * N0 + 1] = s0[0 * N0 + 2] = 0.9f, s0[0 * N0 + 3] = s0[0 * N0 + 4] = s0[0 * N0 + 5] = 0.1f;
    s0[1 * N0 + 1] = 2.0f;
    const int32_t t0[N0] = {10, 11, 12, 13, 14, 15}, l0[N0] = {1, 1, 1, 1, 1, 1};
    upm_retrieval_recall rr;
    CHECK(upm_retrieval_recall_score(s0, N0, t0, 1, l0, &rr) == 0);
    CHECK(rr.n == N0);
    CHECK(rr.i2t[0] == 1 && rr.i2t[1] == 2 && rr.i2t[2] == 6); /* R@1: image 1; R@5: images 0, 1; K=10 > n: all */
    CHECK(fabs(rr.chance[0] - 1.0 / 6) < 1e-12 && fabs(rr.chance[1] - 5.0 / 6) < 1e-12 && fabs(rr.chance[2] - 1.0) < 1e-12);

    /* Random galleries against the brute force. */
    srand(7);
    for (int trial = 0; trial < 40; trial++) {
        int n = 2 + rand() % 40, ncap = 1 + rand() % 12;
        float *s = malloc(sizeof(float) * (size_t)n * n);
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)n * 2), *lens = malloc(sizeof(int32_t) * (size_t)n);
        int *cap = malloc(sizeof(int) * (size_t)n);
        for (int i = 0; i < n * n; i++)
            s[i] = (float)(rand() % 7) / 7.0f;
        for (int i = 0; i < n; i++) {
            cap[i] = rand() % ncap;
            ids[i * 2] = 100 + cap[i] / 3, ids[i * 2 + 1] = 200 + cap[i];
            lens[i] = 2;
        }
        CHECK(upm_retrieval_recall_score(s, n, ids, 2, lens, &rr) == 0);
        int64_t i2t[3] = {0}, t2i[3] = {0};
        double chance[3] = {0};
        for (int q = 0; q < n; q++) {
            int pi = first_truth(s + (size_t)q * n, 1, n, cap, q), pt = first_truth(s + q, (size_t)n, n, cap, q), t = 0;
            for (int j = 0; j < n; j++)
                t += cap[j] == cap[q];
            for (int k = 0; k < 3; k++) {
                int K = upm_recall_k[k];
                i2t[k] += pi < K, t2i[k] += pt < K;
                chance[k] += (1.0 - choose_ratio(n, t, K < n ? K : n)) / n;
            }
        }
        for (int k = 0; k < 3; k++) {
            CHECK(rr.i2t[k] == i2t[k] && rr.t2i[k] == t2i[k]);
            CHECK(fabs(rr.chance[k] - chance[k]) < 1e-9);
        }
        upm_retrieval_r1 r1 = upm_retrieval_r1_score(s, n, ids, 2, lens);
        CHECK(rr.i2t[0] == r1.hits_i2t && rr.t2i[0] == r1.hits_t2i && fabs(rr.chance[0] - r1.chance) < 1e-9);
        free(s), free(ids), free(lens), free(cap);
    }
    /* Several captions per image (upm_retrieval_recall_multi_score) against the brute force: caption j of
     * owner[j]; image i's truths are the captions equal to one of its own, caption j's the images owning an
     * equal caption. With one caption per image it equals the square scorer. */
    for (int trial = 0; trial < 40; trial++) {
        int ni = 2 + rand() % 25, ncap = 1 + rand() % 15, nt = 0;
        int32_t *owner = malloc(sizeof(int32_t) * (size_t)ni * 5), *ids = malloc(sizeof(int32_t) * (size_t)ni * 5);
        int32_t *lens = malloc(sizeof(int32_t) * (size_t)ni * 5);
        for (int i = 0; i < ni; i++)
            for (int c = 0, k = 1 + rand() % 5; c < k; c++, nt++)
                owner[nt] = i, ids[nt] = 300 + rand() % ncap, lens[nt] = 1;
        float *s = malloc(sizeof(float) * (size_t)ni * nt);
        for (int i = 0; i < ni * nt; i++)
            s[i] = (float)(rand() % 9) / 9.0f;
        upm_retrieval_recall_multi rm;
        CHECK(upm_retrieval_recall_multi_score(s, ni, nt, ids, 1, lens, owner, &rm) == 0);
        CHECK(rm.n == ni && rm.n_txt == nt);
        int64_t i2t[3] = {0}, t2i[3] = {0};
        int *cap_of = malloc(sizeof(int) * (size_t)(ni > nt ? ni : nt));
        for (int i = 0; i < ni; i++) { /* image i: a text is a truth when it equals one of i's captions */
            for (int j = 0; j < nt; j++) {
                cap_of[j] = 0;
                for (int c = 0; c < nt; c++)
                    cap_of[j] |= owner[c] == i && ids[c] == ids[j];
            }
            /* brute force: sort, first truth */
            int pos = 0;
            for (;; pos++) { /* the pos-th best text, by score then index */
                int best = -1;
                for (int j = 0; j < nt; j++) {
                    int before = 0; /* texts ranked above j */
                    for (int c = 0; c < nt; c++)
                        before += s[i * nt + c] > s[i * nt + j] || (s[i * nt + c] == s[i * nt + j] && c < j);
                    if (before == pos)
                        best = j;
                }
                if (cap_of[best])
                    break;
            }
            for (int k = 0; k < 3; k++)
                i2t[k] += pos < upm_recall_k[k];
        }
        for (int j = 0; j < nt; j++) { /* caption j: an image is a truth when it owns an equal caption */
            for (int i = 0; i < ni; i++) {
                cap_of[i] = 0;
                for (int c = 0; c < nt; c++)
                    cap_of[i] |= owner[c] == i && ids[c] == ids[j];
            }
            int pos = 0;
            for (;; pos++) {
                int best = -1;
                for (int i = 0; i < ni; i++) {
                    int before = 0;
                    for (int c = 0; c < ni; c++)
                        before += s[c * nt + j] > s[i * nt + j] || (s[c * nt + j] == s[i * nt + j] && c < i);
                    if (before == pos)
                        best = i;
                }
                if (cap_of[best])
                    break;
            }
            for (int k = 0; k < 3; k++)
                t2i[k] += pos < upm_recall_k[k];
        }
        for (int k = 0; k < 3; k++)
            CHECK(rm.i2t[k] == i2t[k] && rm.t2i[k] == t2i[k]);
        free(cap_of), free(s), free(owner), free(ids), free(lens);
    }
    {
        enum { N = 17 };
        float sq[N * N];
        int32_t ids[N], lens[N], own[N];
        for (int i = 0; i < N; i++)
            ids[i] = 40 + rand() % 6, lens[i] = 1, own[i] = i;
        for (int i = 0; i < N * N; i++)
            sq[i] = (float)(rand() % 5);
        upm_retrieval_recall_multi rm;
        CHECK(upm_retrieval_recall_multi_score(sq, N, N, ids, 1, lens, own, &rm) == 0);
        CHECK(upm_retrieval_recall_score(sq, N, ids, 1, lens, &rr) == 0);
        for (int k = 0; k < 3; k++)
            CHECK(rm.i2t[k] == rr.i2t[k] && rm.t2i[k] == rr.t2i[k] && fabs(rm.chance[k] - rr.chance[k]) < 1e-12 &&
                  fabs(rm.chance_t2i[k] - rr.chance[k]) < 1e-12);
    }
    return CHECK_RESULT("test_retrieval_recall");
}
