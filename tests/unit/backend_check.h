/* Shared helpers of the backend conformance tests (test_backend_ops*.c): a deterministic generator,
 * backend buffers (host mirrors of the backend under test, backend_mirror.h), tolerant comparison against
 * double-precision references, finite differences. */
#ifndef UPM_BACKEND_CHECK_H
#define UPM_BACKEND_CHECK_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "check.h"

static upm_backend *be;
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static inline double urand(void) /* uniform in [-1, 1) */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 0x2545F4914F6CDD1Dull) >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

static inline void *bbuf(size_t bytes) /* backend memory (a host mirror), zeroed */
{
    void *p = be->alloc(be, bytes);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

static inline float *fbuf(size_t n) /* backend memory (a host mirror), zeroed */
{
    float *p = be->alloc(be, n * sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

static inline float *frand(size_t n, double scale)
{
    float *p = fbuf(n);
    for (size_t i = 0; i < n; i++)
        p[i] = (float)(urand() * scale);
    return p;
}

/* Frees backend buffers: RELEASE(a, b, ...). */
#define RELEASE(...) release((float *[]){__VA_ARGS__, NULL})
#define BFREE(p) be->free(be, (p))
static inline void release(float **p)
{
    for (; *p; p++)
        be->free(be, *p);
}

static inline double *dcopy(const float *x, size_t n)
{
    double *d = calloc(n ? n : 1, sizeof *d); /* (calloc: -O1 with the sanitizers sees n = 0 as uninitialised) */
    for (size_t i = 0; i < n; i++)
        d[i] = x[i];
    return d;
}

/* got ~ ref: |got - ref| <= rtol (|ref| + floor * max|ref|) everywhere (NaN fails). */
static inline int near(const char *what, const float *got, const double *ref, size_t n, double rtol, double floor)
{
    double mx = 0.0, worst = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++)
        mx = fmax(mx, fabs(ref[i]));
    double fl = floor * mx + 1e-30;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]) / (fabs(ref[i]) + fl);
        if (!(e <= worst))
            worst = e, at = i;
    }
    if (worst <= rtol)
        return 1;
    fprintf(stderr, "%s: relative error %.3g at %zu (got %.9g, want %.9g)\n", what, worst, at, (double)got[at],
            ref[at]);
    return 0;
}

typedef double (*loss_fn)(const void *ctx, const double *in);

/* A row-wise op's case for a finite-difference loss: rows x cols inputs and the upstream gradient dy. */
typedef struct rows_case {
    int rows, cols;
    const double *dy;
} rows_case;

/* Central differences of a double-precision loss: the reference for every backward op. */
static inline double *fd_grad(loss_fn f, const void *ctx, double *in, size_t n)
{
    double *g = malloc(n * sizeof *g);
    for (size_t i = 0; i < n; i++) {
        double save = in[i], h = 1e-5 * fmax(1.0, fabs(save));
        in[i] = save + h;
        double lp = f(ctx, in);
        in[i] = save - h;
        double lm = f(ctx, in);
        in[i] = save;
        g[i] = (lp - lm) / (2 * h);
    }
    return g;
}


#endif
