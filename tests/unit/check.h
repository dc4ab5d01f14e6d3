/* Minimal checks for the C unit tests: CHECK records a failure with file:line and goes on, so one run
 * reports every broken expectation; main returns CHECK_RESULT(). */
#ifndef UPM_TEST_CHECK_H
#define UPM_TEST_CHECK_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int failures;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                              \
        }                                                                            \
    } while (0)

#define CHECK_RESULT(name) \
    (failures ? (fprintf(stderr, "%s: %d checks failed\n", name, failures), 1) : (printf("%s: all checks passed\n", name), 0))

/* The whole file at path (caller frees), or NULL with a failure recorded. */
static inline uint8_t *check_read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    *n = 0;
    if (!f) {
        fprintf(stderr, "cannot read %s\n", path);
        failures++;
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    rewind(f);
    uint8_t *b = malloc(len > 0 ? (size_t)len : 1);
    *n = b ? fread(b, 1, (size_t)len, f) : 0;
    fclose(f);
    return b;
}

#endif
