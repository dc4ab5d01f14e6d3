/* The backend conformance suite, part 3: the gate (top-k softmax, renormalised or not), L2 normalisation,
 * label-smoothed cross-entropy, AdamW with clipping, the learnable temperature and the experts' marks, on
 * every backend this build can open, through upload/download only (backend_mirror.h), against
 * double-precision references written from backend.h and finite differences; and each backend's results
 * twice over, bit for bit. (Part 1, every other op: test_backend_ops.c.) */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_check.h"
#include "backend_mirror.h"

/* ---- gates and losses ---- */

typedef struct gate_case {
    int rows, E, k, renorm;
    const double *dG;
} gate_case;

/* The gate written from its definition: top-k of the softmax; renorm = a softmax over the k kept logits. */
static void topk_ref(double *G, const double *z, int E, int k, int renorm)
{
    double mx = -INFINITY, sum = 0, p[64];
    for (int j = 0; j < E; j++)
        mx = fmax(mx, z[j]);
    for (int j = 0; j < E; j++)
        sum += p[j] = exp(z[j] - mx);
    double kept = 0;
    for (int j = 0; j < E; j++) {
        int beaten = 0;
        for (int i = 0; i < E; i++)
            beaten += p[i] > p[j] || (p[i] == p[j] && i < j);
        if (beaten < k)
            kept += p[j];
        G[j] = beaten < k ? p[j] : -1;
    }
    for (int j = 0; j < E; j++)
        G[j] = G[j] < 0 ? 0 : G[j] / (renorm ? kept : sum);
}

static double topk_loss(const void *vc, const double *z)
{
    const gate_case *c = vc;
    double L = 0, G[64];
    for (int r = 0; r < c->rows; r++) {
        topk_ref(G, z + r * c->E, c->E, c->k, c->renorm);
        for (int j = 0; j < c->E; j++)
            L += c->dG[r * c->E + j] * G[j];
    }
    return L;
}

static void test_topk(int renorm)
{
    enum { R = 17, E = 7 };
    float *z = frand(R * E, 2), *noise = frand(R * E, 0.15), *G = fbuf(R * E), *p = fbuf(R * E);
    for (int j = 0; j < E; j++)
        z[j] = 0.5f, noise[j] = 0; /* a tied row: experts 0 and 1 win */
    double zin[R * E], rG[R * E], rp[R * E];
    for (int i = 0; i < R * E; i++)
        zin[i] = (double)z[i] + noise[i];
    for (int k = 1; k <= E; k += 3) {
        be->topk_softmax_fwd(be, G, p, z, noise, R, E, k, renorm);
        for (int r = 0; r < R; r++) {
            topk_ref(rG + r * E, zin + r * E, E, k, renorm);
            topk_ref(rp + r * E, zin + r * E, E, E, 0);
        }
        CHECK(near("topk probs", p, rp, R * E, 1e-5, 1e-3));
        CHECK(near("topk G", G, rG, R * E, 1e-5, 1e-3));
        int kept = 0;
        for (int i = 0; i < R * E; i++)
            kept += G[i] != 0.0f;
        CHECK(kept == R * k);
    }
    be->topk_softmax_fwd(be, G, p, z, noise, R, E, 2, renorm);
    CHECK(G[0] > 0 && G[1] > 0 && G[2] == 0 && G[6] == 0); /* ties: the lower index wins */
    /* Eq. 3 keeps the probabilities as they are; renormalised, the two tied winners get 1/2 each */
    CHECK(fabs(G[0] - (renorm ? 0.5 : 1.0 / E)) < 1e-6);
    float *dG = frand(R * E, 1), *dz = frand(R * E, 1);
    double *ddG = dcopy(dG, R * E);
    gate_case c = {R - 1, E, 2, renorm, ddG + E}; /* the tied row has no derivative: leave it out */
    double *fd = fd_grad(topk_loss, &c, zin + E, (R - 1) * E);
    double ref[R * E];
    for (int i = 0; i < E; i++)
        ref[i] = dz[i];
    for (int i = 0; i < (R - 1) * E; i++)
        ref[E + i] = fd[i] + dz[E + i];
    for (int j = 0; j < E; j++)
        dG[j] = 0;
    be->topk_softmax_bwd(be, dz, dG, G, p, R, E, renorm);
    CHECK(near("topk_softmax_bwd", dz, ref, R * E, 1e-5, 1e-2));
    free(ddG), free(fd);
    RELEASE(z, noise, G, p, dG, dz);
}

static double l2_loss(const void *vc, const double *x)
{
    const rows_case *c = vc;
    double L = 0;
    for (int r = 0; r < c->rows; r++) {
        double n = 0;
        for (int j = 0; j < c->cols; j++)
            n += x[r * c->cols + j] * x[r * c->cols + j];
        for (int j = 0; j < c->cols; j++)
            L += c->dy[r * c->cols + j] * x[r * c->cols + j] / fmax(sqrt(n), 1e-12);
    }
    return L;
}

static void test_l2norm(void)
{
    enum { R = 9, Cn = 33 };
    float *x = frand(R * Cn, 1), *y = fbuf(R * Cn), *nrm = fbuf(R), *dy = frand(R * Cn, 1), *dx = frand(R * Cn, 1);
    for (int j = 0; j < Cn; j++)
        x[(R - 1) * Cn + j] = 0; /* a zero row: y = 0, dx = dy / 1e-12 */
    double *dx0 = dcopy(dx, R * Cn), *xd = dcopy(x, R * Cn), *ddy = dcopy(dy, R * Cn), ref[R * Cn];
    rows_case c = {R - 1, Cn, ddy};
    for (int r = 0; r < R; r++) {
        double n = 0;
        for (int j = 0; j < Cn; j++)
            n += xd[r * Cn + j] * xd[r * Cn + j];
        for (int j = 0; j < Cn; j++)
            ref[r * Cn + j] = xd[r * Cn + j] / fmax(sqrt(n), 1e-12);
    }
    be->l2norm_fwd(be, y, nrm, x, R, Cn);
    CHECK(near("l2norm_fwd", y, ref, R * Cn, 1e-5, 1e-2) && nrm[R - 1] == 0.0f);
    double *fd = fd_grad(l2_loss, &c, xd, (R - 1) * Cn);
    for (int i = 0; i < (R - 1) * Cn; i++)
        ref[i] = fd[i] + dx0[i];
    for (int j = 0; j < Cn; j++)
        ref[(R - 1) * Cn + j] = dx0[(R - 1) * Cn + j] + ddy[(R - 1) * Cn + j] * 1e12;
    be->l2norm_bwd(be, dx, dy, y, nrm, R, Cn);
    CHECK(near("l2norm_bwd", dx, ref, R * Cn, 1e-5, 1e-14));
    free(dx0), free(xd), free(ddy), free(fd);
    RELEASE(x, y, nrm, dy, dx);
}

typedef struct xent_case {
    int rows, C;
    const int32_t *t;
    double eps, scale;
} xent_case;

static double xent_loss(const void *vc, const double *z)
{
    const xent_case *c = vc;
    double L = 0;
    int n = 0;
    for (int r = 0; r < c->rows; r++) {
        if (c->t[r] < 0)
            continue;
        const double *zr = z + r * c->C;
        double mx = -INFINITY, se = 0, sl = 0;
        for (int j = 0; j < c->C; j++)
            mx = fmax(mx, zr[j]);
        for (int j = 0; j < c->C; j++)
            se += exp(zr[j] - mx);
        for (int j = 0; j < c->C; j++)
            sl += zr[j] - mx - log(se);
        L += -(1 - c->eps) * (zr[c->t[r]] - mx - log(se)) - c->eps / c->C * sl;
        n++;
    }
    return n ? c->scale * L / n : 0;
}

static void test_xent(void)
{
    enum { R = 11, C = 13 };
    float *z = frand(R * C, 3), *d = frand(R * C, 1), *out = fbuf(2);
    static const int32_t targets[R] = {3, -1, 0, 12, 5, -1, 7, 7, 1, 2, 4};
    int32_t *t = bbuf(sizeof targets), *none = bbuf(sizeof targets);
    memcpy(t, targets, sizeof targets);
    for (int j = 0; j < C; j++)
        z[2 * C + j] = z[3 * C + j] = j == 0 || j == 12 ? 5.0f : 0.0f; /* tied maxima at 0 and 12 */
    int correct = 1; /* row 2 (target 0) counts, row 3 (target 12) does not */
    for (int r = 0; r < R; r++)
        if (r != 2 && r != 3 && t[r] >= 0) {
            int arg = 0;
            for (int j = 1; j < C; j++)
                arg = z[r * C + j] > z[r * C + arg] ? j : arg;
            correct += arg == t[r];
        }
    double *zd = dcopy(z, R * C);
    xent_case c = {R, C, t, 0.1, 0.7};
    double L = xent_loss(&c, zd) / 0.7, *fd = fd_grad(xent_loss, &c, zd, R * C);
    be->xent_fwd_bwd(be, out, d, z, t, R, C, 0.1f, 0.7f);
    CHECK(fabs(out[0] - L) <= 1e-6 * fabs(L));
    CHECK(out[1] == (float)correct);
    CHECK(near("xent dlogits", d, fd, R * C, 1e-5, 1e-2));
    for (int r = 0; r < R; r++)
        none[r] = -1;
    be->xent_fwd_bwd(be, out, d, z, none, R, C, 0.1f, 0.7f);
    int zero = out[0] == 0 && out[1] == 0;
    for (int i = 0; i < R * C; i++)
        zero &= d[i] == 0.0f;
    CHECK(zero);
    free(zd), free(fd);
    RELEASE(z, d, out);
    BFREE(t), BFREE(none);
}

static void test_adamw(void)
{
    enum { N = 1003 };
    float *p = frand(N, 1), *m = fbuf(N), *v = fbuf(N), *g = frand(N, 1), *gs = fbuf(2);
    uint8_t *wd = bbuf(N);
    /* the clipping factor: a norm of 4 clipped to 2 is 1/2; below the bound, or without clipping, 1 */
    gs[1] = 16.0f;
    be->clip_scale(be, gs, gs + 1, 8.0f);
    CHECK(gs[0] == 1.0f);
    be->clip_scale(be, gs, gs + 1, 0.0f);
    CHECK(gs[0] == 1.0f);
    be->clip_scale(be, gs, gs + 1, 2.0f);
    CHECK(fabsf(gs[0] - 0.5f) < 1e-6f);
    double rp[N], rm[N] = {0}, rv[N] = {0};
    for (int i = 0; i < N; i++)
        rp[i] = p[i], wd[i] = i % 3 != 0;
    for (int t = 1; t <= 3; t++) {
        be->adamw(be, p, m, v, g, wd, N, 1e-2f, 0.9f, 0.98f, 1e-6f, 0.05f, gs, t);
        for (int i = 0; i < N; i++) {
            double gi = 0.5 * g[i];
            rm[i] = 0.9 * rm[i] + 0.1 * gi;
            rv[i] = 0.98 * rv[i] + 0.02 * gi * gi;
            double mh = rm[i] / (1 - pow(0.9, t)), vh = rv[i] / (1 - pow(0.98, t));
            rp[i] -= 1e-2 * (mh / (sqrt(vh) + 1e-6) + (wd[i] ? 0.05 : 0.0) * rp[i]);
        }
    }
    CHECK(near("adamw p", p, rp, N, 1e-5, 1e-2));
    CHECK(near("adamw m", m, rm, N, 1e-5, 1e-3));
    CHECK(near("adamw v", v, rv, N, 1e-5, 1e-3));
    BFREE(wd);
    RELEASE(p, m, v, g, gs);
}

/* Parameters a step cannot change, in blocks as long as the CPU backend's (it skips them) and shorter: a
 * zero gradient with zero moments and no decay leaves p bit for bit; the same with decay only decays it
 * (p * (1 - lr * wd), exactly); a zero gradient after a non-zero one still moves p by the momentum; one
 * non-zero gradient in a block of zeros updates that element as the formula says. */
static void test_adamw_idle(void)
{
    enum { B = 1024, N = 5 * B + 37 };
    float *p = frand(N, 1), *m = fbuf(N), *v = fbuf(N), *g = fbuf(N), *gs = fbuf(1), p0[N];
    uint8_t *wd = bbuf(N);
    double rp[N], rm[N] = {0}, rv[N] = {0};
    gs[0] = 1.0f;
    for (int i = 0; i < N; i++)
        rp[i] = p0[i] = p[i], wd[i] = i >= B && i < 2 * B; /* block 1 decays, the others do not */
    const float lr = 1e-2f, decay = 1.0f - lr * 0.05f;
    for (int t = 1; t <= 3; t++) {
        for (int i = 0; i < N; i++)
            g[i] = i >= 2 * B && i < 3 * B ? (t == 1 ? (float)urand() : 0.0f) /* block 2: once, then zero */
                   : i >= 4 * B ? (float)urand()                              /* block 4 and the tail */
                                : 0.0f;
        g[3 * B + 100] = t == 2 ? 0.5f : 0.0f; /* block 3: one element, once */
        be->adamw(be, p, m, v, g, wd, N, lr, 0.9f, 0.98f, 1e-6f, 0.05f, gs, t);
        for (int i = 0; i < N; i++) {
            rm[i] = 0.9 * rm[i] + 0.1 * g[i];
            rv[i] = 0.98 * rv[i] + 0.02 * (double)g[i] * g[i];
            double mh = rm[i] / (1 - pow(0.9, t)), vh = rv[i] / (1 - pow(0.98, t));
            rp[i] -= lr * (mh / (sqrt(vh) + 1e-6) + (wd[i] ? 0.05 : 0.0) * rp[i]);
        }
    }
    CHECK(near("adamw idle p", p, rp, N, 1e-5, 1e-2));
    /* random gradients of either sign: m cancels to ~1e-4 from terms ~0.05, so float rounding (~1e-8)
     * is measured against the largest |m|, not each element */
    CHECK(near("adamw idle m", m, rm, N, 1e-5, 0.1));
    int same = 1, decayed = 1, moved = 1;
    for (int i = 0; i < B; i++) {
        same &= memcmp(&p[i], &p0[i], sizeof p[i]) == 0 && m[i] == 0.0f && v[i] == 0.0f;
        float d = p0[B + i];
        for (int t = 0; t < 3; t++)
            d = d * decay;
        decayed &= p[B + i] == d && m[B + i] == 0.0f && v[B + i] == 0.0f;
        moved &= fabsf(p[2 * B + i] - p0[2 * B + i]) > 2 * lr; /* a full-size step each time, by the momentum */
    }
    CHECK(same);
    CHECK(decayed);
    CHECK(moved);
    CHECK(p[3 * B + 100] != p0[3 * B + 100] && p[3 * B + 99] == p0[3 * B + 99] && p[3 * B + 101] == p0[3 * B + 101]);
    BFREE(wd);
    RELEASE(p, m, v, g, gs);
}

/* gemm with the learnable temperature as alpha, read on the backend: s = min(exp(t), cap); its gradient
 * dt += sum dy * y unless the cap holds. */
static void test_temperature(void)
{
    enum { M = 5, N = 7, K = 6 };
    float *A = frand(M * K, 1), *B = frand(N * K, 1), *C = frand(M * N, 1), *t = fbuf(2), *dy = frand(M * N, 1);
    for (int capped = 0; capped < 2; capped++) {
        t[0] = capped ? 5.0f : 1.3f; /* exp(5) = 148 > cap 100 */
        t[1] = 0.25f;                /* dt starts non-zero: the op adds */
        double s = fmin(exp((double)t[0]), 100.0), ref[M * N];
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double acc = 0;
                for (int k = 0; k < K; k++)
                    acc += (double)A[i * K + k] * B[j * K + k];
                ref[i * N + j] = s * acc + 0.5 * C[i * N + j];
            }
        be->gemm_temp(be, 0, 1, M, N, K, t, 100.0f, A, K, B, K, 0.5f, C, N);
        CHECK(near(capped ? "gemm_temp (capped)" : "gemm_temp", C, ref, M * N, 1e-5, 1e-3));
        double dt = 0.25;
        for (int i = 0; i < M * N; i++)
            dt += capped ? 0.0 : (double)dy[i] * C[i];
        be->temperature_bwd(be, t + 1, dy, C, M * N, t, 100.0f);
        CHECK(near(capped ? "temperature_bwd (capped)" : "temperature_bwd", t + 1, &dt, 1, 1e-5, 1e-3));
    }
    RELEASE(A, B, C, t, dy);
}

/* The experts a gate chose, marked on the backend: columns with a non-zero entry set, others kept. */
static void test_mark(void)
{
    enum { R = 9, E = 11 };
    float *G = fbuf(R * E);
    uint8_t *mask = bbuf(E), want[E];
    for (int c = 0; c < E; c++)
        mask[c] = want[c] = c == 10; /* marked by an earlier gate */
    for (int r = 0; r < R; r++)
        for (int c = 0; c < E; c++)
            if ((c % 3 == 1 && r == c % R) || (c == 4 && r == R - 1)) /* one entry a column, last row included */
                G[r * E + c] = c == 7 ? -1e-30f : 0.5f, want[c] = 1;
    be->mark_nonzero_cols(be, mask, G, R, E);
    CHECK(memcmp(mask, want, E) == 0);
    BFREE(mask);
    RELEASE(G);
}


static void run_all(void)
{
    test_topk(0);
    test_topk(1);
    test_l2norm();
    test_xent();
    test_adamw();
    test_adamw_idle();
    test_temperature();
    test_mark();
}

int main(void)
{
    every_backend_twice("gates, losses and the optimizer", run_all);
    return CHECK_RESULT("test_backend_ops_loss");
}
