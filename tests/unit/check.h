/* Minimal checks for the C unit tests: CHECK records a failure with file:line and goes on, so one run
 * reports every broken expectation; main returns CHECK_RESULT(). */
#ifndef UPM_TEST_CHECK_H
#define UPM_TEST_CHECK_H

#include <stdio.h>

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

#endif
