/* Fuzz target "tar": the WebDataset reader (libarchive's tar and compression filters, member-name
 * splitting, grouping into samples, size caps, damage reporting) over a shard held in memory, through
 * the same upm_source → upm_wds path the loader streams files and HTTP through. */
#include <string.h>

#include "fuzz.h"
#include "source.h"
#include "wds.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    upm_err err = {0};
    upm_source_opts so;
    upm_source_opts_default(&so);
    so.buffer_size = 0; /* the smallest buffer (64 KiB, or the input's size), so refills happen */
    upm_source *src;
    if (upm_source_open_mem(data, size, "fuzz.tar", &so, &src, &err))
        return 0;
    upm_wds_opts wo;
    upm_wds_opts_default(&wo);
    wo.max_member_size = 1 << 16; /* the cap's path is taken by small inputs too */
    upm_wds *r;
    if (upm_wds_open_source(src, &wo, &r, &err)) {
        FUZZ_CHECK(err.msg[0]);
        upm_source_close(src);
        return 0;
    }
    /* a resumed stream skips samples by headers alone before reading: exercise it on some inputs */
    if (size % 3 == 0) {
        uint64_t skipped = 0;
        if (upm_wds_skip(r, 1, &skipped, &err) == 0)
            FUZZ_CHECK(skipped <= 1);
    }
    for (int i = 0; i < 100000 && !upm_wds_broken(r); i++) {
        upm_wds_sample s = {0};
        int rc = upm_wds_next(r, &s, &err);
        if (rc == 0) {
            FUZZ_CHECK(upm_wds_at_end(r));
            break;
        }
        if (rc < 0) {
            FUZZ_CHECK(err.msg[0]);
            continue;
        }
        FUZZ_CHECK(s.key && s.url && s.n_fields > 0);
        for (size_t f = 0; f < s.n_fields; f++) {
            FUZZ_CHECK(s.fields[f].ext && s.fields[f].data);
            FUZZ_CHECK(s.fields[f].size <= wo.max_member_size); /* (a compressed shard holds more than its size) */
            FUZZ_CHECK(upm_wds_sample_get(&s, s.fields[f].ext) == &s.fields[f]);
        }
        upm_wds_sample_free(&s);
    }
    upm_wds_close(r);
    return 0;
}
