/* The backend conformance suite, part 3: the ops of data-dependent routing (token routing with capacity,
 * docs/model.md "Token routing") on every backend this build can open, through upload/download only
 * (backend_mirror.h): capacity dispatch against a reference written from backend.h's definition (priority
 * order, first choices before second ones, drops past capacity, free slots), the Switch balance loss's value
 * and its gradient against finite differences of a double-precision version, row scaling and row dot
 * products; data-independent routing's expert mixing (rows independent of one another); and the same bits
 * twice. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_check.h"
#include "backend_mirror.h"

/* A gate's G and probs for R rows: softmax of random logits, the top k kept (renormalised), as the gate. */
static void make_gate(float *G, float *probs, int R, int E, int k)
{
    for (int r = 0; r < R; r++) {
        double z[64], mx = -1e300, s = 0;
        for (int e = 0; e < E; e++)
            z[e] = 2.0 * urand(), mx = fmax(mx, z[e]);
        for (int e = 0; e < E; e++)
            s += z[e] = exp(z[e] - mx);
        double kept = 0;
        for (int e = 0; e < E; e++) {
            probs[r * E + e] = (float)(z[e] / s);
            int above = 0;
            for (int i = 0; i < E; i++)
                above += z[i] > z[e] || (z[i] == z[e] && i < e);
            G[r * E + e] = above < k ? probs[r * E + e] : 0.0f;
            kept += G[r * E + e];
        }
        for (int e = 0; e < E; e++)
            G[r * E + e] = G[r * E + e] ? (float)(G[r * E + e] / kept) : 0.0f;
    }
}

static void test_dispatch(int R, int E, int k, int n, int C)
{
    float *G = fbuf((size_t)R * E), *probs = fbuf((size_t)R * E), *w = fbuf((size_t)E * C + 1), *stats = fbuf(1);
    int32_t *order = bbuf(sizeof(int32_t) * (size_t)(n ? n : 1)), *idx = bbuf(sizeof(int32_t) * ((size_t)E * C + 1));
    make_gate(G, probs, R, E, k);
    int *perm = malloc(sizeof(int) * (size_t)R);
    for (int r = 0; r < R; r++)
        perm[r] = r;
    for (int r = R - 1; r > 0; r--) { /* a priority order over a subset of the rows (the rest: padding) */
        int j = (int)((urand() + 1) / 2 * (r + 1)) % (r + 1), t = perm[r];
        perm[r] = perm[j], perm[j] = t;
    }
    for (int t = 0; t < n; t++)
        order[t] = perm[t];
    stats[0] = 2.0f; /* dispatch adds to it */
    be->moe_dispatch(be, idx, w, stats, G, order, n, E, k, C);
    int *ridx = malloc(sizeof(int) * ((size_t)E * C + 1)), *count = calloc((size_t)E, sizeof(int)), dropped = 0;
    double *rw = calloc((size_t)E * C + 1, sizeof(double));
    for (int s = 0; s < E * C; s++)
        ridx[s] = -1;
    for (int j = 0; j < k; j++)
        for (int t = 0; t < n; t++) {
            const float *g = G + (size_t)order[t] * E;
            /* the j-th choice: the kept entry with exactly j kept entries above it (ties: lower index above) */
            int e = -1;
            for (int c = 0; c < E && e < 0; c++) {
                int above = 0;
                for (int i = 0; i < E; i++)
                    above += g[i] != 0.0f && (g[i] > g[c] || (g[i] == g[c] && i < c));
                if (g[c] != 0.0f && above == j)
                    e = c;
            }
            if (e < 0)
                continue;
            if (count[e] < C)
                ridx[e * C + count[e]] = order[t], rw[e * C + count[e]++] = g[e];
            else
                dropped++;
        }
    int same = 1;
    for (int s = 0; s < E * C; s++)
        same &= idx[s] == ridx[s] && (double)w[s] == rw[s];
    CHECK(same);
    CHECK(stats[0] == 2.0f + (float)dropped);
    if (C * E < n * k)
        CHECK(dropped > 0); /* the case exercises dropping */
    free(perm), free(ridx), free(count), free(rw);
    RELEASE(G, probs, w, stats);
    BFREE(order), BFREE(idx);
}

typedef struct bal_case {
    const float *G;
    const int32_t *order;
    int n, E;
} bal_case;

/* E sum_e f_e P_e with P from the softmax of z (rows of order only; f from G, held constant). */
static double bal_loss(const void *vc, const double *z)
{
    const bal_case *c = vc;
    int E = c->E;
    double loss = 0, *f = calloc((size_t)E, sizeof *f), *P = calloc((size_t)E, sizeof *P);
    for (int t = 0; t < c->n; t++) {
        const float *g = c->G + (size_t)c->order[t] * E;
        int best = -1;
        for (int e = 0; e < E; e++)
            if (g[e] != 0.0f && (best < 0 || g[e] > g[best]))
                best = e;
        if (best >= 0)
            f[best] += 1.0 / c->n;
        const double *zr = z + (size_t)c->order[t] * E;
        double mx = -1e300, s = 0;
        for (int e = 0; e < E; e++)
            mx = fmax(mx, zr[e]);
        for (int e = 0; e < E; e++)
            s += exp(zr[e] - mx);
        for (int e = 0; e < E; e++)
            P[e] += exp(zr[e] - mx) / s / c->n;
    }
    for (int e = 0; e < E; e++)
        loss += f[e] * P[e];
    free(f), free(P);
    return E * loss;
}

static void test_balance(int R, int E, int n)
{
    float *G = fbuf((size_t)R * E), *probs = fbuf((size_t)R * E), *dz = fbuf((size_t)R * E), *stats = fbuf(1);
    int32_t *order = bbuf(sizeof(int32_t) * (size_t)n);
    /* logits, their softmax, and top-2 G from them */
    double *z = malloc(sizeof(double) * (size_t)R * E);
    for (int r = 0; r < R; r++) {
        double mx = -1e300, s = 0;
        for (int e = 0; e < E; e++)
            z[r * E + e] = 2.0 * urand(), mx = fmax(mx, z[r * E + e]);
        for (int e = 0; e < E; e++)
            s += exp(z[r * E + e] - mx);
        for (int e = 0; e < E; e++)
            probs[r * E + e] = (float)(exp(z[r * E + e] - mx) / s);
        for (int e = 0; e < E; e++) {
            int above = 0;
            for (int i = 0; i < E; i++)
                above += probs[r * E + i] > probs[r * E + e] || (probs[r * E + i] == probs[r * E + e] && i < e);
            G[r * E + e] = above < 2 ? probs[r * E + e] : 0.0f;
        }
    }
    for (int t = 0; t < n; t++)
        order[t] = (t * 7 + 3) % R; /* distinct while gcd(7, R) == 1 */
    for (size_t i = 0; i < (size_t)R * E; i++)
        z[i] = log((double)probs[i]); /* logits whose softmax is probs exactly (up to float rounding) */
    bal_case c = {G, order, n, E};
    stats[0] = 0.5f;
    be->moe_balance(be, stats, NULL, probs, G, order, n, E, 0.0f);
    double want = bal_loss(&c, z);
    CHECK(fabs(stats[0] - 0.5 - want) <= 1e-5 * want);
    const float w = 0.25f;
    for (size_t i = 0; i < (size_t)R * E; i++)
        dz[i] = 1.0f; /* the op adds */
    be->moe_balance(be, NULL, dz, probs, G, order, n, E, w);
    double *g = fd_grad(bal_loss, &c, z, (size_t)R * E);
    for (size_t i = 0; i < (size_t)R * E; i++)
        g[i] = 1.0 + w * g[i];
    CHECK(near("moe_balance dlogits", dz, g, (size_t)R * E, 1e-4, 1e-2));
    free(z), free(g);
    RELEASE(G, probs, dz, stats);
    BFREE(order);
}

static void test_rows(int R, int cols, int E)
{
    float *Y = frand((size_t)R * cols, 1.0), *w = frand((size_t)R, 1.0), *A = frand((size_t)R * cols, 1.0);
    float *B = frand((size_t)R * cols, 1.0), *dG = frand((size_t)(R + 2) * E, 1.0);
    int32_t *idx = bbuf(sizeof(int32_t) * (size_t)R);
    double *ry = dcopy(Y, (size_t)R * cols), *rg = dcopy(dG, (size_t)(R + 2) * E);
    for (int r = 0; r < R; r++)
        for (int c = 0; c < cols; c++)
            ry[r * cols + c] *= w[r];
    be->scale_rows(be, Y, w, R, cols);
    CHECK(near("scale_rows", Y, ry, (size_t)R * cols, 1e-7, 0));
    for (int r = 0; r < R; r++)
        idx[r] = r % 3 == 1 ? -1 : (R + 1 - r); /* distinct targets, some rows skipped */
    int e = E - 1;
    for (int r = 0; r < R; r++) {
        if (idx[r] < 0)
            continue;
        double s = 0;
        for (int c = 0; c < cols; c++)
            s += (double)A[r * cols + c] * B[r * cols + c];
        rg[(size_t)idx[r] * E + e] += s;
    }
    be->row_dot_scatter(be, dG, A, B, idx, R, cols, E, e);
    CHECK(near("row_dot_scatter", dG, rg, (size_t)(R + 2) * E, 1e-5, 1e-6));
    free(ry), free(rg);
    RELEASE(Y, w, A, B, dG);
    BFREE(idx);
}

/* expert_mix against its definition in double; an expert no row uses holds NaN (it must not be read); each
 * row alone gives the bits it gives among the others (what makes a merged model equal the routed one). */
static void test_mix(int P, int E, int k, size_t n)
{
    float *G = fbuf((size_t)P * E), *probs = fbuf((size_t)P * E), *W = frand((size_t)E * n, 1.0);
    float *Y = fbuf((size_t)P * n), *Y1 = fbuf(n);
    make_gate(G, probs, P, E, k);
    for (int q = 0; q < P; q++)
        G[(size_t)q * E + E - 1] = 0.0f; /* the last expert: unused */
    for (size_t j = 0; j < n; j++)
        W[(size_t)(E - 1) * n + j] = NAN;
    double *ref = calloc((size_t)P * n, sizeof *ref);
    for (int q = 0; q < P; q++)
        for (int e = 0; e < E - 1; e++)
            for (size_t j = 0; j < n; j++)
                ref[(size_t)q * n + j] += (double)G[(size_t)q * E + e] * W[(size_t)e * n + j];
    be->expert_mix(be, Y, G, W, P, E, n);
    /* summed in double and rounded once: within half a float32 ulp (2^-24 relative) of the exact sum */
    CHECK(near("expert_mix", Y, ref, (size_t)P * n, 6.0e-8, 0.0));
    for (int q = 0; q < P; q++) {
        be->expert_mix(be, Y1, G + (size_t)q * E, W, 1, E, n);
        CHECK(!memcmp(Y1, Y + (size_t)q * n, sizeof(float) * n));
    }
    free(ref);
    RELEASE(G, probs, W, Y, Y1);
}

static void run_all(void)
{
    test_dispatch(40, 8, 2, 33, 5);   /* capacity well below the demand: drops of first and second choices */
    test_dispatch(40, 8, 2, 33, 20);  /* enough for all: no drops, free slots */
    test_dispatch(17, 4, 1, 17, 3);   /* top-1 */
    test_dispatch(9, 3, 3, 0, 2);     /* no tokens: every slot free */
    test_balance(23, 4, 20);
    test_balance(64, 8, 64);
    test_rows(13, 37, 4);
    test_rows(300, 300, 8);
    test_mix(3, 4, 2, 110592); /* Ti's qkv of attribute routing: 3 patterns, 4 experts */
    test_mix(5, 8, 2, 1001);
    test_mix(1, 3, 1, 17);
}

int main(void)
{
    every_backend_twice("routing ops", run_all);
    return CHECK_RESULT("test_backend_ops_route");
}
