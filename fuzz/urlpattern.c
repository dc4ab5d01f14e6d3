/* Fuzz target "urlpattern": shard URL patterns (scheme rules, brace groups, numeric ranges with padding,
 * counts that overflow) and the index-based expansion the sampler addresses shards by. */
#include <string.h>

#include "fuzz.h"
#include "urlpattern.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *pat = fuzz_cstring(data, size);
    if (!pat)
        return 0;
    upm_err err = {0};
    upm_urlpat *p;
    if (upm_urlpat_parse(pat, &p, &err)) {
        FUZZ_CHECK(err.msg[0]);
        free(pat);
        return 0;
    }
    uint64_t n = upm_urlpat_count(p);
    FUZZ_CHECK(n >= 1);
    uint64_t at[] = {0, n / 2, n - 1, (n - 1) / 3};
    char buf[8192];
    for (size_t k = 0; k < sizeof at / sizeof at[0]; k++) {
        int len = upm_urlpat_get(p, at[k], buf, sizeof buf, &err);
        FUZZ_CHECK(len >= 0 || err.msg[0]);
        if (len >= 0)
            FUZZ_CHECK((size_t)len == strlen(buf));
    }
    FUZZ_CHECK(upm_urlpat_get(p, n, buf, sizeof buf, &err) < 0); /* one past the end is refused */
    /* a URL without braces expands to itself */
    if (!strpbrk(pat, "{}") && strlen(pat) < sizeof buf) {
        FUZZ_CHECK(n == 1 && upm_urlpat_get(p, 0, buf, sizeof buf, &err) >= 0 && !strcmp(buf, pat));
    }
    upm_urlpat_free(p);
    free(pat);
    return 0;
}
