/* Unit test for trainer/inputs.c upm_prompt_readouts: a GLUE-style cloze task collated from a real sample
 * with the real CLIP vocabulary is read at its prompt's <|spe|> (the paper's answer slot), at the position
 * the encoder gives that token (1 + its index in the text: the sequence starts with its own <|spe|>); the
 * token before it is the last token of "it is" as the tokenizer encodes "... it is" alone; a task without a
 * prompt keeps the default read-out (the leading <|spe|>). */
#include <stdlib.h>
#include <string.h>

#include "bpe.h"
#include "check.h"
#include "collate.h"
#include "inputs.h"

static upm_task prompt_task(void)
{
    upm_task t;
    memset(&t, 0, sizeof t);
    snprintf(t.name, sizeof t.name, "rte");
    t.formulation = UPM_FORM_LABEL;
    t.n_inputs = 2;
    t.inputs[0] = (upm_task_input){.field = "json:sentence1", .modality = UPM_MOD_TEXT};
    t.inputs[1] = (upm_task_input){.field = "json:sentence2", .modality = UPM_MOD_TEXT};
    snprintf(t.target_field, sizeof t.target_field, "json:label");
    t.target_modality = UPM_MOD_TEXT;
    snprintf(t.prompt, sizeof t.prompt, "{json:sentence1} ? <|endoftext|> it is <|spe|> , {json:sentence2} <|endoftext|>");
    t.max_text_len = 40, t.max_target_len = 8;
    return t;
}

int main(void)
{
    const char *td = getenv("UPMOE_TESTDATA");
    char path[4096];
    snprintf(path, sizeof path, "%s/clip/bpe_simple_vocab_16e6.txt", td ? td : ".");
    upm_bpe *bpe = NULL;
    upm_err err;
    if (!td || upm_bpe_load(path, &bpe, &err)) {
        fprintf(stderr, "test_prompt_readout: test data missing (run tools/fetch-testdata): %s\n", path);
        return 1;
    }
    char json0[] = "{\"sentence1\": \"the cat sat on the mat\", \"sentence2\": \"a cat is sitting\", \"label\": 0}";
    char json1[] = "{\"sentence1\": \"rain\", \"sentence2\": \"it is wet outside today\", \"label\": 1}";
    upm_wds_field f0[1] = {{"json", (unsigned char *)json0, sizeof json0 - 1}};
    upm_wds_field f1[1] = {{"json", (unsigned char *)json1, sizeof json1 - 1}};
    upm_wds_sample s[2] = {{.key = "a", .url = "/x.tar", .n_fields = 1, .fields = f0},
                           {.key = "b", .url = "/x.tar", .n_fields = 1, .fields = f1}};
    upm_task t = prompt_task();
    upm_collate_opts o = {.image_size = 32, .frames = 1, .bpe = bpe, .n_labels = 2};
    upm_batch_shape sh;
    upm_batch b;
    memset(&b, 0, sizeof b);
    CHECK(upm_collate_shape(&t, &o, 2, &sh, &err) == 0 && upm_batch_alloc(&b, &t, &sh, &err) == 0);
    for (int r = 0; r < 2; r++) {
        upm_rng rng = upm_rng_stream(1, UPM_RNG_AUGMENT, 0, 0, (uint64_t)r);
        CHECK(upm_collate_row(&t, &o, &s[r], &b, r, &rng, &err) == 0);
    }
    upm_seq_input in;
    CHECK(upm_batch_side_input(&b, UPM_SIDE_INPUT, &in, &err) == 0 && in.nseg == 1);
    int32_t seq[2], pos[2];
    CHECK(upm_prompt_readouts(&in, seq, pos) == 1);
    CHECK(in.nread == 2 && in.read_seq == seq && in.read_pos == pos);
    const char *first[2] = {"the cat sat on the mat ? ", "rain ? "};
    for (int r = 0; r < 2; r++) {
        const int32_t *ids = in.seg[0].ids + (size_t)r * in.seg[0].L;
        CHECK(seq[r] == r && pos[r] >= 1 && ids[pos[r] - 1] == UPM_BPE_SPE);
        /* the tokens before the slot: sentence1, "?", <|endoftext|>, "it is" */
        int32_t head[64], tail[8];
        int nh = upm_bpe_encode(bpe, first[r], strlen(first[r]), head, 64, 0, &err);
        int nt = upm_bpe_encode(bpe, "it is", 5, tail, 8, 0, &err);
        CHECK(nh > 0 && nt == 2 && pos[r] - 1 == nh + 1 + nt);
        CHECK(ids[nh] == UPM_BPE_EOT && ids[pos[r] - 2] == tail[1] && !memcmp(ids, head, sizeof(int32_t) * (size_t)nh));
    }
    upm_batch_free(&b);

    /* no prompt: nothing changes */
    upm_task plain = prompt_task();
    plain.prompt[0] = '\0';
    plain.n_inputs = 1;
    memset(&b, 0, sizeof b);
    CHECK(upm_collate_shape(&plain, &o, 2, &sh, &err) == 0 && upm_batch_alloc(&b, &plain, &sh, &err) == 0);
    for (int r = 0; r < 2; r++) {
        upm_rng rng = upm_rng_stream(1, UPM_RNG_AUGMENT, 0, 0, (uint64_t)r);
        CHECK(upm_collate_row(&plain, &o, &s[r], &b, r, &rng, &err) == 0);
    }
    CHECK(upm_batch_side_input(&b, UPM_SIDE_INPUT, &in, &err) == 0);
    CHECK(upm_prompt_readouts(&in, seq, pos) == 0 && in.nread == 0 && in.read_pos == NULL);
    upm_batch_free(&b);
    upm_bpe_free(bpe);
    return CHECK_RESULT("test_prompt_readout");
}
