/* Label texts for the label loss: every name of every label is tokenized once; a training step draws
 * one synonym per class from (seed, step, class) (ImageNet-21k's WordNet synonyms, as the reference
 * implementation does per batch), the same step always draws the same names, and evaluation uses the
 * canonical (first) names. The pass is as wide as the longest name, and never wider than the task's
 * max_target_len - 1. Real CLIP vocabulary from the test data. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "catalog_ops.h"
#include "check.h"
#include "inputs.h"

/* Tokens of text as the loader cuts label texts: L ids, end-of-text last. */
static int encode(upm_bpe *bpe, const char *text, int L, int32_t *ids)
{
    upm_err err;
    memset(ids, 0, sizeof(int32_t) * (size_t)L);
    return upm_bpe_encode(bpe, text, strlen(text), ids, L, UPM_BPE_ADD_EOT | UPM_BPE_TRUNCATE, &err);
}

int main(void)
{
    const char *td = getenv("UPMOE_TESTDATA");
    char vocab[4096], dir[] = "/tmp/upmoe-labels-XXXXXX", path[4200];
    if (!td || !mkdtemp(dir)) {
        fprintf(stderr, "UPMOE_TESTDATA is not set (run tools/fetch-testdata)\n");
        return 1;
    }
    snprintf(vocab, sizeof vocab, "%s/clip/bpe_simple_vocab_16e6.txt", td);
    snprintf(path, sizeof path, "%s/catalog.db", dir);
    upm_err err = {0};
    upm_bpe *bpe = NULL;
    upm_catalog *cat = NULL;
    CHECK(upm_bpe_load(vocab, &bpe, &err) == 0);
    CHECK(upm_catalog_open(path, UPM_CAT_CREATE, &cat, &err) == 0);
    if (failures)
        return CHECK_RESULT("test_label_texts");
    static const char *const dog[] = {"dog", "domestic dog", "canis familiaris"};
    static const char *const cat_[] = {"cat"};
    static const char *const car[] = {"car", "automobile"};
    upm_labelset ls = {.synonyms = 1};
    snprintf(ls.name, sizeof ls.name, "animals");
    CHECK(upm_labelset_push(&ls, NULL, dog, 3, &err) == 0);
    CHECK(upm_labelset_push(&ls, NULL, cat_, 1, &err) == 0);
    CHECK(upm_labelset_push(&ls, NULL, car, 2, &err) == 0);
    CHECK(upm_labelset_add(cat, &ls, 0, &err) == 0);
    upm_labelset_free(&ls);
    upm_task t = {.formulation = UPM_FORM_LABEL, .n_inputs = 1, .target_modality = UPM_MOD_TEXT, .max_target_len = 8};
    snprintf(t.name, sizeof t.name, "classify");
    t.inputs[0].modality = UPM_MOD_IMAGE;
    upm_label_texts lt;
    CHECK(upm_label_texts_load(cat, &t, "animals", bpe, &lt, &err) == 0);
    const char *const *names[] = {dog, cat_, car};
    int counts[] = {3, 1, 2};
    int32_t want[7];
    int W = 0; /* the longest name, tokenized as the loader cuts them */
    for (int c = 0; c < 3; c++)
        for (int k = 0; k < counts[c]; k++) {
            int n = encode(bpe, names[c][k], 7, want);
            W = n > W ? n : W;
        }
    CHECK(W >= 2 && W < 7); /* the names are shorter than the task's budget: the pass is cut to them */
    CHECK(lt.C == 3 && lt.L == W && lt.nvariants == 6);
    /* canonical names after loading and in evaluation */
    upm_label_texts_pick(&lt, 5, -1);
    for (int c = 0; c < 3; c++) {
        int n = encode(bpe, names[c][0], 7, want);
        CHECK(lt.lengths[c] == n && !memcmp(lt.ids + c * W, want, sizeof(int32_t) * (size_t)W));
    }
    /* training steps: each class's text is one of its names; synonyms all appear; steps repeat */
    int seen[3][3] = {{0}};
    for (int step = 0; step < 60; step++) {
        upm_label_texts_pick(&lt, 5, step);
        int32_t again[3 * 7] = {0}, len_again[3];
        memcpy(again, lt.ids, sizeof(int32_t) * 3 * (size_t)W);
        memcpy(len_again, lt.lengths, sizeof len_again);
        for (int c = 0; c < 3; c++) {
            int hit = -1;
            for (int k = 0; k < counts[c]; k++) {
                int n = encode(bpe, names[c][k], 7, want);
                if (lt.lengths[c] == n && !memcmp(lt.ids + c * W, want, sizeof(int32_t) * (size_t)W))
                    hit = k;
            }
            CHECK(hit >= 0);
            if (hit >= 0)
                seen[c][hit]++;
        }
        upm_label_texts_pick(&lt, 5, step + 1000);
        upm_label_texts_pick(&lt, 5, step);
        CHECK(!memcmp(again, lt.ids, sizeof(int32_t) * 3 * (size_t)W) &&
              !memcmp(len_again, lt.lengths, sizeof len_again));
    }
    CHECK(seen[0][0] && seen[0][1] && seen[0][2] && seen[1][0] == 60 && seen[2][0] && seen[2][1]);
    upm_label_texts_free(&lt);

    /* a name longer than the budget: cut to max_target_len - 1 with <|endoftext|> last, and the pass that wide */
    static const char *const long_[] = {"a very small and quite fluffy grey domestic cat sitting on a mat"};
    static const char *const one[] = {"dog"};
    upm_labelset ls2 = {0};
    snprintf(ls2.name, sizeof ls2.name, "wordy");
    CHECK(upm_labelset_push(&ls2, NULL, one, 1, &err) == 0);
    CHECK(upm_labelset_push(&ls2, NULL, long_, 1, &err) == 0);
    CHECK(upm_labelset_add(cat, &ls2, 0, &err) == 0);
    upm_labelset_free(&ls2);
    CHECK(upm_label_texts_load(cat, &t, "wordy", bpe, &lt, &err) == 0);
    CHECK(lt.C == 2 && lt.L == 7 && lt.lengths[1] == 7 && lt.ids[7 + 6] == UPM_BPE_EOT);
    int n = encode(bpe, one[0], 7, want);
    CHECK(lt.lengths[0] == n && !memcmp(lt.ids, want, sizeof want));
    upm_label_texts_free(&lt);
    upm_catalog_close(cat);
    upm_bpe_free(bpe);
    unlink(path);
    snprintf(path, sizeof path, "%s/catalog.db-wal", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/catalog.db-shm", dir);
    unlink(path);
    rmdir(dir);
    return CHECK_RESULT("test_label_texts");
}
