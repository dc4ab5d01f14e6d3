/* The input-blind baseline of the vocabulary formulations: the token accuracy of the best predictor that never
 * looks at the input, on the very targets scored. For MLM that is one constant token (the most frequent masked
 * word: "the", ","); for captions one token per caption position (the most frequent j-th word), which is what a
 * captioner that ignores the image can learn. A model must beat it to have used its context or its image; chance
 * (a uniform guess among the candidates) is far below it. Computed in hindsight on the scored targets, so no
 * blind predictor does better on them. */
#ifndef UPM_TASKS_BLIND_BASELINE_H
#define UPM_TASKS_BLIND_BASELINE_H

#include <stddef.h>
#include <stdint.h>

typedef struct upm_blind_baseline {
    uint64_t *keys; /* (position group << 32) | token, one per scored target */
    size_t n, cap;
} upm_blind_baseline;

/* Adds M scored targets: ids[i] predicted at position group groups[i] (NULL: one group, as for MLM).
 * Returns 0, or -1 when out of memory (nothing added). */
int upm_blind_baseline_add(upm_blind_baseline *b, const int32_t *ids, const int32_t *groups, int M);

/* The baseline's accuracy over everything added: the sum over groups of the count of the group's most frequent
 * token, over the number of targets; -1 when nothing was added. Sorts the keys in place. */
double upm_blind_baseline_accuracy(upm_blind_baseline *b);

void upm_blind_baseline_free(upm_blind_baseline *b);

#endif
