/* Test support for the sanitizer build (tests/CMakeLists.txt, kernel_overrun_*): one op of the CPU backend
 * called on one float more than its buffers hold. The op's per-element loop is in backend_cpu_vec.c, which
 * the sanitizer build compiles without ASan (model/CMakeLists.txt); ASan must still report the overrun,
 * through the range check the op makes before the loop (upm_cpu_check). usage: kernel_overrun OP, OP one
 * of adamw (every block idle: all zeros), gelu, bias_grad (its rows start one float into the buffer). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

int main(int argc, char **argv)
{
    enum { N = 40000, COLS = 64 }; /* several chunks and blocks, the last one partial */
    if (argc != 2 || (strcmp(argv[1], "adamw") && strcmp(argv[1], "gelu") && strcmp(argv[1], "bias_grad"))) {
        fprintf(stderr, "usage: kernel_overrun adamw|gelu|bias_grad\n");
        return 2;
    }
    upm_backend *be = NULL;
    upm_err err = {0};
    if (upm_backend_cpu_new(1, &be, &err)) {
        fprintf(stderr, "kernel_overrun: %s\n", err.msg);
        return 2;
    }
    float *a = calloc(N, sizeof *a), *b = calloc(N, sizeof *b), *c = calloc(N, sizeof *c);
    float *d = calloc(N, sizeof *d), gscale = 1.0f;
    if (!a || !b || !c || !d)
        return 2;
    if (!strcmp(argv[1], "adamw"))
        be->adamw(be, a, b, c, d, NULL, N + 1, 1e-3f, 0.9f, 0.98f, 1e-6f, 0.0f, &gscale, 1);
    else if (!strcmp(argv[1], "gelu"))
        be->gelu_fwd(be, a, b, N + 1);
    else /* N / COLS rows of COLS floats, starting one float into b */
        be->bias_grad(be, a, b + 1, N / COLS, COLS);
    printf("kernel_overrun %s: not reported\n", argv[1]);
    free(a);
    free(b);
    free(c);
    free(d);
    be->destroy(be);
    return 0;
}
