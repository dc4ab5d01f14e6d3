/* Unit test for several captions per sample (sampler/collate.c): upm_caption_lines splits a target field
 * into its non-empty lines (trimmed; CR LF too), and collating a pair task with a real image and the real
 * CLIP vocabulary encodes one of the lines as the target: a random one in training (each line is met
 * over draws), the first in evaluation, each exactly as that line alone encodes. The same for a caption
 * task's caption (an input); an MLM text stays whole. */
#include <stdlib.h>
#include <string.h>

#include "bpe.h"
#include "check.h"
#include "collate.h"

static int same(const upm_text_span *l, const char *want) { return l->n == strlen(want) && !memcmp(l->s, want, l->n); }

int main(void)
{
    upm_text_span l[8];
    const char *t1 = "a dog on a couch\nthe brown dog sleeps\n";
    CHECK(upm_caption_lines(t1, strlen(t1), l, 8) == 2 && same(&l[0], "a dog on a couch") && same(&l[1], "the brown dog sleeps"));
    const char *t2 = "\n  first \r\n\n\tsecond\t\r\nthird";
    CHECK(upm_caption_lines(t2, strlen(t2), l, 8) == 3 && same(&l[0], "first") && same(&l[1], "second") &&
          same(&l[2], "third"));
    CHECK(upm_caption_lines("one caption", 11, l, 8) == 1 && same(&l[0], "one caption"));
    CHECK(upm_caption_lines("\n \n", 3, l, 8) == 0);
    CHECK(upm_caption_lines(t2, strlen(t2), l, 2) == 2); /* at most max */

    const char *td = getenv("UPMOE_TESTDATA");
    char path[4096];
    snprintf(path, sizeof path, "%s/clip/bpe_simple_vocab_16e6.txt", td ? td : ".");
    upm_bpe *bpe = NULL;
    upm_err err;
    size_t njpg = 0;
    char jpath[4096];
    snprintf(jpath, sizeof jpath, "%s/images/art4apps/animals/koala.jpg", td ? td : ".");
    unsigned char *jpg = check_read_file(jpath, &njpg);
    if (!td || !jpg || upm_bpe_load(path, &bpe, &err)) {
        fprintf(stderr, "test_caption_lines: test data missing (run tools/fetch-testdata)\n");
        return 1;
    }
    upm_task t;
    memset(&t, 0, sizeof t);
    snprintf(t.name, sizeof t.name, "retrieval");
    t.formulation = UPM_FORM_PAIR;
    t.n_inputs = 1;
    t.inputs[0] = (upm_task_input){.field = "jpg", .modality = UPM_MOD_IMAGE};
    snprintf(t.target_field, sizeof t.target_field, "txt");
    t.target_modality = UPM_MOD_TEXT;
    t.max_text_len = 16, t.max_target_len = 12;
    char caps[] = "a koala in a tree\nan animal with grey fur\n";
    upm_wds_field f[2] = {{"jpg", jpg, njpg}, {"txt", (unsigned char *)caps, sizeof caps - 1}};
    upm_wds_sample s = {.key = "k", .url = "/x.tar", .n_fields = 2, .fields = f};
    int32_t want[2][12];
    int wn[2];
    wn[0] = upm_bpe_encode(bpe, "a koala in a tree", 17, want[0], 11, UPM_BPE_ADD_EOT | UPM_BPE_TRUNCATE, &err);
    wn[1] = upm_bpe_encode(bpe, "an animal with grey fur", 23, want[1], 11, UPM_BPE_ADD_EOT | UPM_BPE_TRUNCATE, &err);
    int seen[2] = {0, 0};
    for (int train = 1; train >= 0; train--)
        for (int draw = 0; draw < (train ? 16 : 4); draw++) {
            upm_collate_opts o = {.train = train, .image_size = 32, .frames = 1, .bpe = bpe};
            upm_batch_shape sh;
            upm_batch b;
            memset(&b, 0, sizeof b);
            CHECK(upm_collate_shape(&t, &o, 1, &sh, &err) == 0 && upm_batch_alloc(&b, &t, &sh, &err) == 0);
            upm_rng rng = upm_rng_stream(5, UPM_RNG_AUGMENT, (uint64_t)draw, 0, 0);
            CHECK(upm_collate_row(&t, &o, &s, &b, 0, &rng, &err) == 0);
            const upm_segment *g = &b.seg[b.nseg - 1];
            CHECK(g->side == UPM_SIDE_TARGET);
            int which = -1;
            for (int k = 0; k < 2; k++)
                if (g->lengths[0] == wn[k] && !memcmp(g->ids, want[k], sizeof(int32_t) * (size_t)wn[k]))
                    which = k;
            CHECK(which >= 0);
            if (train && which >= 0)
                seen[which]++;
            if (!train)
                CHECK(which == 0);
            upm_batch_free(&b);
        }
    CHECK(seen[0] > 0 && seen[1] > 0);

    /* A caption task's caption is an input (causal text before its queries): its lines are captions too,
     * the first in evaluation. An MLM task's text field is its own target field: it stays whole. */
    for (int form = 0; form < 2; form++) {
        upm_task u = t;
        u.formulation = form ? UPM_FORM_VOCAB_MLM : UPM_FORM_VOCAB_CAPTION;
        u.causal = !form;
        u.n_inputs = form ? 1 : 2;
        u.inputs[form ? 0 : 1] = (upm_task_input){.field = "txt", .modality = UPM_MOD_TEXT};
        upm_collate_opts o = {.train = 0, .image_size = 32, .frames = 1, .bpe = bpe};
        upm_batch_shape sh;
        upm_batch b;
        memset(&b, 0, sizeof b);
        CHECK(upm_collate_shape(&u, &o, 1, &sh, &err) == 0 && upm_batch_alloc(&b, &u, &sh, &err) == 0);
        upm_rng rng = upm_rng_stream(5, UPM_RNG_AUGMENT, 0, 0, 0);
        CHECK(upm_collate_row(&u, &o, &s, &b, 0, &rng, &err) == 0);
        const upm_segment *g = NULL;
        for (int i = 0; i < b.nseg; i++)
            if (b.seg[i].modality == UPM_MOD_TEXT && !g)
                g = &b.seg[i];
        int32_t whole[16];
        int nw = upm_bpe_encode(bpe, caps, strlen(caps), whole, g ? g->L : 1, UPM_BPE_ADD_EOT | UPM_BPE_TRUNCATE, &err);
        CHECK(g != NULL);
        if (g && !form) /* caption: the first line */
            CHECK(g->lengths[0] == wn[0] && !memcmp(g->ids, want[0], sizeof(int32_t) * (size_t)wn[0]));
        if (g && form) /* MLM: the whole text (before masking, the lengths agree; ids may be masked) */
            CHECK(g->lengths[0] == nw && nw > wn[0] + 1);
        upm_batch_free(&b);
    }
    upm_bpe_free(bpe);
    free(jpg);
    return CHECK_RESULT("test_caption_lines");
}
