/* Whole-word masking for MLM: split CLIP BPE ids into words at "</w>" tokens, pick 15% of the words in a
 * random order, and replace their tokens 80/10/10 by <|mask|>, a random id, or themselves (text_mask.h). */
#include "text_mask.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Splits ids into words: word w is tokens [start[w], start[w] + len[w]). Returns the word count. */
static int split_words(const upm_bpe *bpe, const int32_t *ids, int n, int *start, int *len)
{
    int w = 0, open = 0;
    for (int i = 0; i < n; i++) {
        if (upm_bpe_is_special(ids[i])) {
            open = 0; /* a special token ends any word in progress */
            continue;
        }
        if (!open) {
            start[w] = i;
            len[w++] = 0;
            open = 1;
        }
        len[w - 1]++;
        if (upm_bpe_is_word_end(bpe, ids[i]))
            open = 0;
    }
    return w;
}

static int check_args(const int32_t *ids, int n, const upm_text_mask_opts *o, const int32_t *masked,
                      const int32_t *positions, const int32_t *targets, int max_targets, upm_err *err)
{
    if (n < 0 || (n > 0 && (!ids || !masked)) || max_targets < 0 || (max_targets > 0 && (!positions || !targets)))
        return upm_errf(err, UPM_EUSAGE, "upm_text_mask: missing arrays or negative sizes (n %d, max_targets %d)", n,
                        max_targets);
    if (!(o->word_rate >= 0 && o->word_rate <= 1) || !(o->p_mask >= 0 && o->p_random >= 0) ||
        !(o->p_mask + o->p_random <= 1))
        return upm_errf(err, UPM_EINVAL, "masking rates out of range: word_rate %g, p_mask %g, p_random %g",
                        o->word_rate, o->p_mask, o->p_random);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= UPM_BPE_VOCAB_SIZE)
            return upm_errf(err, UPM_EINVAL, "token id %d at position %d is outside the vocabulary (0..%d)", ids[i], i,
                            UPM_BPE_VOCAB_SIZE - 1);
    return 0;
}

int upm_text_mask_ex(const upm_bpe *bpe, const int32_t *ids, int n, const upm_text_mask_opts *opts, upm_rng *rng,
                     int32_t *masked, int32_t *positions, int32_t *targets, int max_targets, upm_err *err)
{
    upm_text_mask_opts o = opts ? *opts : UPM_TEXT_MASK_DEFAULTS;
    if (!rng)
        return upm_errf(err, UPM_EUSAGE, "upm_text_mask: no random stream given");
    int rc = check_args(ids, n, &o, masked, positions, targets, max_targets, err);
    if (rc)
        return rc;
    if (masked != ids)
        memmove(masked, ids, (size_t)n * sizeof *ids);
    if (n == 0)
        return 0;
    int *start = malloc((size_t)n * sizeof *start), *len = malloc((size_t)n * sizeof *len);
    int *order = malloc((size_t)n * sizeof *order);
    unsigned char *chosen = calloc((size_t)n, 1);
    if (!start || !len || !order || !chosen) {
        free(start);
        free(len);
        free(order);
        free(chosen);
        return upm_errf(err, UPM_ENOMEM, "out of memory masking %d tokens", n);
    }
    int words = split_words(bpe, ids, n, start, len);
    int k = (int)floor(o.word_rate * words + 0.5);
    if (k < 1 && words > 0)
        k = 1;
    if (k > words)
        k = words;
    for (int w = 0; w < words; w++)
        order[w] = w;
    int taken = 0, budget = max_targets;
    for (int j = 0; j < words && taken < k; j++) { /* lazy Fisher-Yates: order[j] is the j-th word visited */
        int r = j + (int)upm_rng_below(rng, (uint64_t)(words - j));
        int t = order[j];
        order[j] = order[r];
        order[r] = t;
        int w = order[j];
        if (len[w] > budget)
            continue;
        budget -= len[w];
        memset(chosen + start[w], 1, (size_t)len[w]);
        taken++;
    }
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (!chosen[i])
            continue;
        positions[m] = i;
        targets[m++] = ids[i];
        double u = upm_rng_uniform(rng);
        if (u < o.p_mask)
            masked[i] = UPM_BPE_MASK;
        else if (u < o.p_mask + o.p_random)
            masked[i] = (int32_t)upm_rng_below(rng, UPM_BPE_SOT);
    }
    free(start);
    free(len);
    free(order);
    free(chosen);
    return m;
}

int upm_text_mask(const upm_bpe *bpe, int32_t *ids, int n, upm_rng *rng, int32_t *targets, upm_err *err)
{
    if (n < 0 || (n > 0 && (!ids || !targets)))
        return upm_errf(err, UPM_EUSAGE, "upm_text_mask: missing arrays or negative size (n %d)", n);
    int32_t *pos = malloc((size_t)(n ? n : 1) * sizeof *pos), *orig = malloc((size_t)(n ? n : 1) * sizeof *orig);
    if (!pos || !orig) {
        free(pos);
        free(orig);
        return upm_errf(err, UPM_ENOMEM, "out of memory masking %d tokens", n);
    }
    int m = upm_text_mask_ex(bpe, ids, n, NULL, rng, ids, pos, orig, n, err);
    for (int i = 0; m >= 0 && i < n; i++)
        targets[i] = -1;
    for (int i = 0; i < m; i++)
        targets[pos[i]] = orig[i];
    free(pos);
    free(orig);
    return m < 0 ? m : 0;
}
