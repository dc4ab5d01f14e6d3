/* Unit test for tasks/retrieval.c: R@1 both ways on hand-worked score matrices, with unique and with
 * duplicate captions (every equal caption is a ground truth), ties, and the chance of a uniform guess. */
#include <math.h>

#include "check.h"
#include "retrieval.h"

int main(void)
{
    /* Three unique captions. Image 0 -> text 0 (hit), image 1 -> text 2 (miss), image 2 -> text 2 (hit).
     * Columns: text 0 -> image 0 (hit), text 1 -> image 1 (hit), text 2 -> image 1 (miss). */
    const float s1[9] = {0.9f, 0.1f, 0.2f, /**/ 0.3f, 0.5f, 0.8f, /**/ 0.0f, 0.4f, 0.7f};
    const int32_t t1[6] = {5, 6, 7, 8, 9, 0}, l1[3] = {2, 2, 1};
    upm_retrieval_r1 r = upm_retrieval_r1_score(s1, 3, t1, 2, l1);
    CHECK(r.n == 3 && r.hits_i2t == 2 && r.hits_t2i == 2);
    CHECK(fabs(r.chance - 1.0 / 3) < 1e-12);

    /* Captions A, B, A (rows 0 and 2 equal; row 1 has the same first id but another length). Image 0's best
     * text is text 2 (its caption, other index: a hit); image 1's best is text 0 (miss); image 2's best
     * text is text 0 (a hit). Text 0's best image is image 2 (hit), text 1's is image 2 (miss), text 2's is
     * image 0 (hit). Chance: (2 + 1 + 2) / 9. */
    const float s2[9] = {0.1f, 0.0f, 0.6f, /**/ 0.5f, 0.2f, 0.1f, /**/ 0.9f, 0.3f, 0.2f};
    const int32_t t2[6] = {4, 4, 4, 0, 4, 4}, l2[3] = {2, 1, 2};
    r = upm_retrieval_r1_score(s2, 3, t2, 2, l2);
    CHECK(r.hits_i2t == 2 && r.hits_t2i == 2);
    CHECK(fabs(r.chance - 5.0 / 9) < 1e-12);

    /* All scores equal: ties go to index 0, so only the pairs whose ground truth includes 0 hit. */
    const float s3[4] = {1, 1, 1, 1};
    const int32_t t3[2] = {1, 2}, l3[2] = {1, 1};
    r = upm_retrieval_r1_score(s3, 2, t3, 1, l3);
    CHECK(r.hits_i2t == 1 && r.hits_t2i == 1 && fabs(r.chance - 0.5) < 1e-12);
    return CHECK_RESULT("test_retrieval");
}
