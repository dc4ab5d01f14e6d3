/* The fuzz harnesses' entry points (libFuzzer's names). Each harness file defines LLVMFuzzerTestOneInput,
 * which calls the project's real parser on the bytes; LLVMFuzzerInitialize is optional (see harness.c).
 * With -DUPMOE_FUZZ=ON (clang) libFuzzer drives them; in the other builds replay.c's main() feeds them the
 * committed corpora, which is how CI replays every corpus and past crash input under the sanitizers. */
#ifndef UPM_FUZZ_H
#define UPM_FUZZ_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Optional (weak: a harness without set-up leaves it out, and libFuzzer and replay.c then skip it). */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

/* The input as a NUL-terminated string (malloc'd; NULL when out of memory), for the text parsers. */
static inline char *fuzz_cstring(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (s) {
        for (size_t i = 0; i < size; i++)
            s[i] = (char)data[i];
        s[size] = '\0';
    }
    return s;
}

/* A broken invariant is a finding: say which and abort, so both libFuzzer and the replay test stop on it. */
#define FUZZ_CHECK(cond)                                                                                   \
    do {                                                                                                   \
        if (!(cond)) {                                                                                     \
            fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond);                   \
            abort();                                                                                       \
        }                                                                                                  \
    } while (0)

#endif
