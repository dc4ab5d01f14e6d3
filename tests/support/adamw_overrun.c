/* Test support for the sanitizer build (tests/CMakeLists.txt, adamw_overrun_is_reported): AdamW over one
 * float more than its buffers hold. Every block is idle (all zeros), so the only reads of the last block
 * are the idle scan's, which the sanitizer build runs unchecked (model/backend_cpu.c); ASan must still
 * report the overrun, through the range check adamw_range makes instead. */
#include <stdio.h>
#include <stdlib.h>

#include "backend.h"

int main(void)
{
    enum { N = 40000 }; /* several chunks and blocks, the last one partial */
    upm_backend *be = NULL;
    upm_err err = {0};
    if (upm_backend_cpu_new(1, &be, &err)) {
        fprintf(stderr, "adamw_overrun: %s\n", err.msg);
        return 2;
    }
    float *p = calloc(N, sizeof *p), *m = calloc(N, sizeof *m), *v = calloc(N, sizeof *v);
    float *g = calloc(N, sizeof *g), gscale = 1.0f;
    if (!p || !m || !v || !g)
        return 2;
    be->adamw(be, p, m, v, g, NULL, N + 1, 1e-3f, 0.9f, 0.98f, 1e-6f, 0.0f, &gscale, 1);
    printf("adamw_overrun: not reported\n");
    free(p);
    free(m);
    free(v);
    free(g);
    be->destroy(be);
    return 0;
}
