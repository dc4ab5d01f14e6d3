/* Fuzz target "bpe": CLIP's BPE tokenizer on arbitrary bytes (invalid UTF-8, NULs, entities, control and
 * fullwidth characters): text clean-up, pre-tokenisation, merges, truncation and strict UTF-8, then the
 * ids back to text. Needs the merges file (found as the programs find it: $UPMOE_BPE_VOCAB, next to the
 * programs, the catalog's home). */
#include <string.h>

#include "bpe.h"
#include "fuzz.h"

static upm_bpe *bpe;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    char path[4096];
    upm_err err = {0};
    if (!upm_bpe_default_path(path, sizeof path) || upm_bpe_load(path, &bpe, &err)) {
        fprintf(stderr, "fuzz bpe: %s\n", err.msg[0] ? err.msg : "no CLIP merges file (tools/setup installs one; or set UPMOE_BPE_VOCAB)");
        exit(1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    enum { MAX_IDS = 77 };
    int32_t ids[4096];
    upm_err err = {0};
    unsigned flags = size % 2 ? UPM_BPE_STRICT_UTF8 : 0;
    int n = upm_bpe_encode(bpe, (const char *)data, size, ids, 4096, flags | UPM_BPE_CLIP, &err);
    FUZZ_CHECK(n >= 0 || err.msg[0]);
    if (n >= 2) {
        FUZZ_CHECK(ids[0] == UPM_BPE_SOT && ids[n - 1] == UPM_BPE_EOT);
        for (int i = 0; i < n; i++)
            FUZZ_CHECK(ids[i] >= 0 && ids[i] < UPM_BPE_VOCAB_SIZE);
        char *text = NULL;
        size_t len = 0;
        FUZZ_CHECK(upm_bpe_decode(bpe, ids, n, &text, &len, &err) == 0);
        FUZZ_CHECK(text && strlen(text) == len);
        free(text);
        /* the caption path: CLIP's truncation to a context of 77 keeps SOT first and EOT last */
        int m = upm_bpe_encode(bpe, (const char *)data, size, ids, MAX_IDS, flags | UPM_BPE_CLIP | UPM_BPE_TRUNCATE, &err);
        FUZZ_CHECK(m == (n < MAX_IDS ? n : MAX_IDS));
        FUZZ_CHECK(ids[0] == UPM_BPE_SOT && ids[m - 1] == UPM_BPE_EOT);
    }
    return 0;
}
