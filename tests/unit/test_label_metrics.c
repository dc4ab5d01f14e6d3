/* Unit test for tasks/label_metrics.c: multi-view scores average the views' softmaxes, not their logits.
 * Expected values from PyTorch (torch.softmax(x, 1).mean(0).log() in float64), not from this code. */
#include <math.h>
#include <string.h>

#include "check.h"
#include "label_metrics.h"

static int argmax(const float *s, int C)
{
    int b = 0;
    for (int c = 1; c < C; c++)
        b = s[c] > s[b] ? c : b;
    return b;
}

int main(void)
{
    /* sample 0: two views that disagree; averaging logits ([-8, 1.5, -10]) would pick class 1, averaging
     * probabilities picks class 0. Sample 1: three copies of one view: its own log-softmax. */
    float s[5 * 3] = {4, 0, -20, -20, 3, 0, /* sample 0, V = 2 ... */ 1, 2, 3, 1, 2, 3, 1, 2, 3};
    int32_t lab[5] = {0, 0, 2, 2, 2};
    /* V differs per call: score sample 0 with V = 2, then sample 1 (rows 2..4) with V = 3 */
    CHECK(upm_label_average_views(s, lab, 1, 2, 3) == 0);
    const double want0[3] = {-0.711297108415285, -0.7230288881383427, -3.7417345314497488};
    for (int c = 0; c < 3; c++)
        CHECK(fabs(s[c] - want0[c]) < 1e-6);
    CHECK(argmax(s, 3) == 0 && lab[0] == 0);
    CHECK(upm_label_average_views(s + 6, lab + 2, 1, 3, 3) == 0);
    const double want1[3] = {-2.4076059644443806, -1.4076059644443804, -0.4076059644443804};
    for (int c = 0; c < 3; c++)
        CHECK(fabs(s[6 + c] - want1[c]) < 1e-6);
    CHECK(lab[2] == 2);

    /* several samples in one call: rows compacted in order, labels with them */
    float m[3 * 2 * 2] = {0, 5, 0, 5, /* sample 0: class 1 twice */ 7, 0, 7, 0, /* sample 1: class 0 */
                          0, 1, 1, 0 /* sample 2: a tie */};
    int32_t ml[6] = {1, 1, 0, 0, 1, 1};
    CHECK(upm_label_average_views(m, ml, 3, 2, 2) == 0);
    CHECK(argmax(m, 2) == 1 && argmax(m + 2, 2) == 0 && fabs(m[4] - m[5]) < 1e-7);
    CHECK(fabs(m[4] - log(0.5)) < 1e-6);
    CHECK(ml[0] == 1 && ml[1] == 0 && ml[2] == 1);

    /* one view: nothing changes */
    float one[2] = {3, -1};
    int32_t l1[1] = {1};
    CHECK(upm_label_average_views(one, l1, 1, 1, 2) == 0 && one[0] == 3 && one[1] == -1 && l1[0] == 1);
    return CHECK_RESULT("test_label_metrics");
}
