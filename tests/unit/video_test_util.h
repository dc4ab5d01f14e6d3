/* What the video tests share: the test data's folder and whole files read into memory. */
#ifndef UPM_VIDEO_TEST_UTIL_H
#define UPM_VIDEO_TEST_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

typedef struct bytes {
    uint8_t *p;
    size_t n;
} bytes;

static const char *testdata; /* UPMOE_TESTDATA, set by main */

/* rel: a path under the test data, or an absolute one (the clips this test makes) */
static inline bytes slurp(const char *rel)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", rel[0] == '/' ? "" : testdata, rel);
    bytes b = {NULL, 0};
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f || fstat(fileno(f), &st) != 0 || !(b.p = malloc((size_t)st.st_size + 1)) ||
        fread(b.p, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
        fprintf(stderr, "test_video: cannot read %s (run tools/fetch-testdata)\n", path);
        exit(1);
    }
    fclose(f);
    b.n = (size_t)st.st_size;
    return b;
}

#endif
