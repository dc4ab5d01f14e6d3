/* The backend conformance suite (docs/model.md, "Backends"), part 1: every op but attention, on every
 * backend this build can open (cpu, debug; cuda where built and usable), reached only through its
 * upload/download (backend_mirror.h, with guard bytes around every buffer), against a naive
 * double-precision implementation on awkward sizes, backward ops against finite differences of the double
 * forward; and each backend's results twice over, bit for bit (determinism). Attention, and reductions
 * across thread counts: test_backend_ops_attn.c; gates, losses and the optimizer: test_backend_ops_loss.c;
 * token routing's ops: test_backend_ops_route.c. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_check.h"
#include "backend_mirror.h"

/* ---- memory and dense algebra ---- */

static void test_memory(void)
{
    float *p = fbuf(1001), host[1001], back[1001];
    CHECK(((uintptr_t)p & 63) == 0);
    int zero = 1;
    for (int i = 0; i < 1001; i++)
        zero &= p[i] == 0.0f, host[i] = (float)i;
    CHECK(zero);
    be->upload(be, p, host, sizeof host);
    float *q = fbuf(1001);
    be->copy(be, q, p, sizeof host);
    be->download(be, back, q, sizeof back);
    CHECK(memcmp(back, host, sizeof host) == 0);
    be->zero(be, q + 10, 5 * sizeof(float));
    CHECK(q[9] == 9.0f && q[10] == 0.0f && q[14] == 0.0f && q[15] == 15.0f);
    void *z = be->alloc(be, 0);
    CHECK(z != NULL);
    be->sync(be);
    be->free(be, z);
    RELEASE(p, q);
}

/* All four transpose combinations, leading dimensions past the width, beta = 0 over NaN. */
static void check_gemm(int M, int N, int K)
{
    size_t mn = (size_t)M * N;
    double *ref = malloc(mn * sizeof *ref), *ref0 = malloc(mn * sizeof *ref0);
    float *got = malloc(mn * sizeof *got), *got0 = malloc(mn * sizeof *got0);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
            int lda = ac + 3, ldb = bc + 5, ldc = N + 7;
            float *A = frand((size_t)ar * lda, 1), *B = frand((size_t)br * ldb, 1), *C = frand((size_t)M * ldc, 1);
            float *C0 = fbuf((size_t)M * ldc), *Cpre = fbuf((size_t)M * ldc);
            memcpy(Cpre, C, (size_t)M * ldc * sizeof *C);
            for (int i = 0; i < M * ldc; i++)
                C0[i] = NAN; /* beta = 0 must not read these */
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) {
                    double s = 0;
                    for (int k = 0; k < K; k++)
                        s += (double)(ta ? A[k * lda + i] : A[i * lda + k]) * (tb ? B[j * ldb + k] : B[k * ldb + j]);
                    ref[i * N + j] = 0.7 * s + 0.3 * C[i * ldc + j];
                    ref0[i * N + j] = -1.5 * s;
                }
            be->gemm(be, ta, tb, M, N, K, 0.7f, A, lda, B, ldb, 0.3f, C, ldc);
            be->gemm(be, ta, tb, M, N, K, -1.5f, A, lda, B, ldb, 0.0f, C0, ldc);
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++)
                    got[i * N + j] = C[i * ldc + j], got0[i * N + j] = C0[i * ldc + j];
            /* floor 0.1: a float dot product of K terms errs by ~sqrt(K) eps times the terms' size,
             * which the largest result, not a cancelled small one, reflects */
            CHECK(near("gemm", got, ref, mn, 1e-5, 0.1));
            CHECK(near("gemm beta=0 over NaN", got0, ref0, mn, 1e-5, 0.1));
            int kept = 1; /* columns past N untouched */
            for (int i = 0; i < M; i++)
                for (int j = N; j < ldc; j++)
                    kept &= C[i * ldc + j] == Cpre[i * ldc + j] && isnan(C0[i * ldc + j]);
            CHECK(kept);
            RELEASE(A, B, C, C0, Cpre);
        }
    free(ref), free(ref0), free(got), free(got0);
}

static double bf16_value(uint16_t b);
static uint16_t bf16_ref(float x);

/* gemm_ct in bf16: A and B rounded to bfloat16 (nearest even) and their products summed in fp32: against
 * the double product of the rounded inputs, at fp32's tolerance (the products of bf16 values are exact),
 * for every transpose pair and padded leading dimensions; and measurably not the fp32 product (the
 * rounding happened). In fp32 it is gemm. */
static void check_gemm_ct(int M, int N, int K)
{
    size_t mn = (size_t)M * N;
    double *ref = malloc(mn * sizeof *ref), *exact = malloc(mn * sizeof *exact);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
            int lda = ac + 2, ldb = bc + 3, ldc = N + 1;
            float *A = frand((size_t)ar * lda, 1), *B = frand((size_t)br * ldb, 1), *C = frand((size_t)M * ldc, 1);
            float *C0 = fbuf((size_t)M * ldc);
            memcpy(C0, C, sizeof(float) * (size_t)M * ldc);
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) {
                    double s = 0, e = 0;
                    for (int k = 0; k < K; k++) {
                        float a = ta ? A[k * lda + i] : A[i * lda + k], b = tb ? B[j * ldb + k] : B[k * ldb + j];
                        s += bf16_value(bf16_ref(a)) * bf16_value(bf16_ref(b));
                        e += (double)a * b;
                    }
                    ref[(size_t)i * N + j] = 0.5 * s - 2.0 * C0[(size_t)i * ldc + j];
                    exact[(size_t)i * N + j] = 0.5 * e - 2.0 * C0[(size_t)i * ldc + j];
                }
            be->gemm_ct(be, UPM_BF16, ta, tb, M, N, K, 0.5f, A, lda, B, ldb, -2.0f, C, ldc);
            float *got = malloc(mn * sizeof *got);
            double worst = 0;
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) {
                    got[(size_t)i * N + j] = C[(size_t)i * ldc + j];
                    worst = fmax(worst, fabs(got[(size_t)i * N + j] - exact[(size_t)i * N + j]));
                }
            CHECK(near("gemm_ct bf16", got, ref, mn, 1e-5, 0.1)); /* gemm's bound */
            CHECK(worst > 1e-4); /* the fp32 product differs: the inputs were rounded */
            memcpy(C, C0, sizeof(float) * (size_t)M * ldc);
            be->gemm_ct(be, UPM_F32, ta, tb, M, N, K, 0.5f, A, lda, B, ldb, -2.0f, C, ldc);
            for (size_t i = 0; i < mn; i++)
                got[i] = C[(i / N) * ldc + i % N];
            CHECK(near("gemm_ct fp32", got, exact, mn, 1e-5, 0.1));
            free(got);
            RELEASE(A, B, C, C0);
        }
    free(ref), free(exact);
}

static void test_gemm(void)
{
    check_gemm_ct(19, 23, 41);
    check_gemm_ct(64, 48, 96);
    check_gemm(37, 29, 53);
    check_gemm(1, 67, 129); /* oneDNN's gemv paths */
    check_gemm(129, 1, 67);
    check_gemm(203, 150, 301);
    /* the same call twice gives the same bits (the contract's determinism at a fixed thread count) */
    float *A = frand(300 * 500, 1), *B = frand(500 * 200, 1), *C1 = fbuf(300 * 200), *C2 = fbuf(300 * 200);
    be->gemm(be, 0, 1, 300, 200, 500, 1.0f, A, 500, B, 500, 0.0f, C1, 200);
    be->gemm(be, 0, 1, 300, 200, 500, 1.0f, A, 500, B, 500, 0.0f, C2, 200);
    CHECK(memcmp(C1, C2, 300 * 200 * sizeof *C1) == 0);
    RELEASE(A, B, C1, C2);
    float *c2 = fbuf(4), *dummy = fbuf(2);
    c2[0] = c2[1] = NAN, c2[2] = 1, c2[3] = 2;
    be->gemm(be, 0, 0, 2, 2, 0, 1.0f, dummy, 1, dummy, 2, 0.0f, c2, 2); /* K = 0: C = beta C = 0 */
    CHECK(c2[0] == 0 && c2[1] == 0 && c2[2] == 0 && c2[3] == 0);
    RELEASE(c2, dummy);
}

static void test_blas1(void)
{
    enum { R = 31, Cn = 23, NN = 40007 };
    float *y = frand(NN, 1), *x = frand(NN, 1);
    double *y0 = dcopy(y, NN), *ref = malloc(NN * sizeof *ref);
    be->axpy(be, y, x, -0.25f, NN);
    for (int i = 0; i < NN; i++)
        ref[i] = y0[i] - 0.25 * x[i];
    CHECK(near("axpy", y, ref, NN, 1e-5, 1e-2));
    for (int i = 0; i < NN; i++)
        ref[i] = (double)y[i] * 3.0;
    be->scale(be, y, 3.0f, NN);
    CHECK(near("scale", y, ref, NN, 1e-5, 1e-2));
    float *Y = frand(R * Cn, 1), *b = frand(Cn, 1);
    for (int i = 0; i < R * Cn; i++)
        ref[i] = (double)Y[i] + b[i % Cn];
    be->add_bias(be, Y, b, R, Cn);
    CHECK(near("add_bias", Y, ref, R * Cn, 1e-5, 1e-2));
    /* sumsq: double accumulation over 1e6 values */
    size_t n = 1000003;
    float *big = frand(n, 2), *out = fbuf(1);
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)big[i] * big[i];
    be->sumsq(be, out, big, n);
    CHECK(fabs(out[0] - s) <= 1e-6 * s);
    free(y0), free(ref);
    RELEASE(y, x, Y, b, big, out);
}

/* ---- per-token ops ---- */

/* A row-wise op's finite-difference case: the loss is sum(dy * op(in)). */
/* LayerNorm in double on in = x | g | b; also returns mean and rstd of each row when asked. */
static void ln_ref(double *y, double *mean, double *rstd, const double *in, int rows, int cols)
{
    const double *g = in + rows * cols, *b = g + cols;
    for (int r = 0; r < rows; r++) {
        const double *x = in + r * cols;
        double mu = 0, var = 0;
        for (int j = 0; j < cols; j++)
            mu += x[j] / cols;
        for (int j = 0; j < cols; j++)
            var += (x[j] - mu) * (x[j] - mu) / cols;
        for (int j = 0; j < cols; j++)
            y[r * cols + j] = (x[j] - mu) / sqrt(var + 1e-5) * g[j] + b[j];
        if (mean)
            mean[r] = mu, rstd[r] = 1 / sqrt(var + 1e-5);
    }
}

static double ln_loss(const void *vc, const double *in)
{
    const rows_case *c = vc;
    double *y = malloc((size_t)c->rows * c->cols * sizeof *y), L = 0;
    ln_ref(y, NULL, NULL, in, c->rows, c->cols);
    for (int i = 0; i < c->rows * c->cols; i++)
        L += c->dy[i] * y[i];
    free(y);
    return L;
}

static void test_layernorm(void)
{
    enum { R = 29, Cn = 67 };
    float *x = frand(R * Cn, 2), *g = frand(Cn, 1), *b = frand(Cn, 1), *y = fbuf(R * Cn);
    float *mean = fbuf(R), *rstd = fbuf(R), *dy = frand(R * Cn, 1);
    for (int i = 0; i < Cn; i++)
        x[i] += 5.0f; /* an offset row: the variance must not cancel */
    size_t n = R * Cn + 2 * Cn;
    double *in = malloc(n * sizeof *in), *ddy = dcopy(dy, R * Cn), ref[R * Cn], rmean[R], rrstd[R];
    for (int i = 0; i < R * Cn; i++)
        in[i] = x[i];
    for (int j = 0; j < Cn; j++)
        in[R * Cn + j] = g[j], in[R * Cn + Cn + j] = b[j];
    ln_ref(ref, rmean, rrstd, in, R, Cn);
    be->layernorm_fwd(be, y, mean, rstd, x, g, b, R, Cn, 1e-5f);
    CHECK(near("layernorm_fwd", y, ref, R * Cn, 1e-5, 1e-2));
    CHECK(near("layernorm mean", mean, rmean, R, 1e-6, 0.1) && near("layernorm rstd", rstd, rrstd, R, 1e-6, 0));
    /* backward, added onto nonzero gradients */
    rows_case c = {R, Cn, ddy};
    double *fd = fd_grad(ln_loss, &c, in, n);
    float *dx = frand(R * Cn, 1), *dg = frand(Cn, 1), *db = frand(Cn, 1);
    for (int i = 0; i < R * Cn; i++)
        fd[i] += dx[i];
    for (int j = 0; j < Cn; j++)
        fd[R * Cn + j] += dg[j], fd[R * Cn + Cn + j] += db[j];
    be->layernorm_bwd(be, dx, dg, db, dy, x, mean, rstd, g, R, Cn);
    CHECK(near("layernorm dx", dx, fd, R * Cn, 1e-5, 1e-2));
    CHECK(near("layernorm dg", dg, fd + R * Cn, Cn, 1e-5, 1e-2));
    CHECK(near("layernorm db", db, fd + R * Cn + Cn, Cn, 1e-5, 1e-2));
    free(in), free(ddy), free(fd);
    RELEASE(x, g, b, y, mean, rstd, dy, dx, dg, db);
}

static void test_gelu(void)
{
    enum { N = 20011 };
    float *x = frand(N, 12), *y = fbuf(N), *dy = frand(N, 1), *dx = frand(N, 1);
    x[0] = 0, x[1] = 1e-8f, x[2] = -1e-8f, x[3] = 40, x[4] = -12;
    double *ry = malloc(N * sizeof *ry), *rdx = malloc(N * sizeof *rdx);
    for (int i = 0; i < N; i++) {
        double v = x[i], cdf = 0.5 * erfc(-v / sqrt(2.0)), pdf = exp(-0.5 * v * v) / sqrt(2 * 3.14159265358979323846);
        ry[i] = v * cdf;
        rdx[i] = dx[i] + dy[i] * (cdf + v * pdf);
    }
    be->gelu_fwd(be, y, x, N);
    be->gelu_bwd(be, dx, dy, x, N);
    CHECK(near("gelu_fwd (tails included)", y, ry, N, 1e-5, 0));
    CHECK(near("gelu_bwd", dx, rdx, N, 1e-5, 1e-2)); /* GELU' crosses 0 near x = -0.75 */
    free(ry), free(rdx);
    RELEASE(x, y, dy, dx);
}

static void test_residual(void)
{
    enum { R = 23, Cn = 19, NS = 4 };
    float *x = frand(R * Cn, 1), *f = frand(R * Cn, 1), *ls = frand(Cn, 1), *y = fbuf(R * Cn);
    float *keep = fbuf(NS);
    keep[0] = 1.25f, keep[1] = 0.0f, keep[2] = 1.25f, keep[3] = 1.0f;
    int32_t *seq_of = bbuf(sizeof(int32_t) * R);
    for (int r = 0; r < R; r++)
        seq_of[r] = (r * 7) % NS;
    double ry[R * Cn], rn[R * Cn];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < Cn; c++) {
            ry[r * Cn + c] = x[r * Cn + c] + (double)keep[seq_of[r]] * ls[c] * f[r * Cn + c];
            rn[r * Cn + c] = x[r * Cn + c] + (double)ls[c] * f[r * Cn + c];
        }
    be->residual_fwd(be, y, x, f, ls, keep, seq_of, R, Cn);
    CHECK(near("residual_fwd", y, ry, R * Cn, 1e-5, 1e-2));
    be->residual_fwd(be, x, x, f, ls, NULL, seq_of, R, Cn); /* in place, keep = NULL */
    CHECK(near("residual_fwd in place", x, rn, R * Cn, 1e-5, 1e-2));
    float *dy = frand(R * Cn, 1), *dx = frand(R * Cn, 1), *df = frand(R * Cn, 1), *dls = frand(Cn, 1);
    double rdx[R * Cn], rdf[R * Cn], rdls[Cn];
    for (int c = 0; c < Cn; c++)
        rdls[c] = dls[c];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < Cn; c++) {
            double k = keep[seq_of[r]], d = dy[r * Cn + c];
            rdx[r * Cn + c] = dx[r * Cn + c] + d;
            rdf[r * Cn + c] = df[r * Cn + c] + k * ls[c] * d;
            rdls[c] += k * f[r * Cn + c] * d;
        }
    be->residual_bwd(be, dx, df, dls, dy, f, ls, keep, seq_of, R, Cn);
    CHECK(near("residual dx", dx, rdx, R * Cn, 1e-5, 1e-2));
    CHECK(near("residual df", df, rdf, R * Cn, 1e-5, 1e-2));
    CHECK(near("residual dls", dls, rdls, Cn, 1e-5, 1e-2));
    RELEASE(x, f, ls, y, dy, dx, df, dls, keep);
    BFREE(seq_of);
}

static void test_rows(void)
{
    enum { V = 7, N = 41, Cn = 21 };
    float *T = frand(V * Cn, 1), *Y = frand(N * Cn, 1), *dT = frand(V * Cn, 1), *G = frand(N * Cn, 1);
    int32_t *idx = bbuf(sizeof(int32_t) * N);
    for (int r = 0; r < N; r++)
        idx[r] = r % 5 == 4 ? -1 : (r * 3) % V; /* repeats, and -1 rows */
    double ry[N * Cn], rT[V * Cn], rg[N * Cn];
    for (int i = 0; i < V * Cn; i++)
        rT[i] = dT[i];
    for (int r = 0; r < N; r++)
        for (int c = 0; c < Cn; c++) {
            ry[r * Cn + c] = Y[r * Cn + c] + (idx[r] >= 0 ? T[idx[r] * Cn + c] : 0);
            rg[r * Cn + c] = idx[r] >= 0 ? T[idx[r] * Cn + c] : 0;
            if (idx[r] >= 0)
                rT[idx[r] * Cn + c] += Y[r * Cn + c];
        }
    be->scatter_add(be, dT, Y, idx, N, Cn); /* uses Y before gather_add changes it */
    CHECK(near("scatter_add", dT, rT, V * Cn, 1e-5, 1e-2));
    be->gather_add(be, Y, T, idx, N, Cn);
    CHECK(near("gather_add", Y, ry, N * Cn, 1e-5, 1e-2));
    be->gather_rows(be, G, T, idx, N, Cn);
    CHECK(near("gather_rows", G, rg, N * Cn, 0, 0));
    for (int i = 0; i < V * Cn; i++)
        rT[i] = dT[i];
    for (int r = 0; r < N; r++)
        for (int c = 0; c < Cn && idx[r] >= 0; c++)
            rT[idx[r] * Cn + c] += G[r * Cn + c];
    be->scatter_rows_add(be, dT, G, idx, N, Cn);
    CHECK(near("scatter_rows_add", dT, rT, V * Cn, 1e-5, 1e-2));
    /* patches: 2 clips of 3 frames, 32 x 48 pixels */
    enum { B = 2, F = 3, H = 32, W = 48 };
    float *px = frand(B * F * 3 * H * W, 1), *P = fbuf(B * F * 6 * 768);
    be->patchify(be, P, px, B, F, H, W);
    int bad = 0;
    for (size_t i = 0; i < (size_t)B * F * 6 * 768; i++) {
        size_t row = i / 768, bt = row / 6, py = row / 3 % 2, qx = row % 3; /* 2 x 3 patches per frame */
        size_t ch = i % 768 / 256, yy = i % 256 / 16, xx = i % 16;
        bad += P[i] != px[((bt * 3 + ch) * H + py * 16 + yy) * W + qx * 16 + xx];
    }
    CHECK(bad == 0);
    RELEASE(T, Y, dT, G, px, P);
    BFREE(idx);
}

/* Gradient buckets: ranges gathered one after another, written back scaled. */
static void test_pack(void)
{
    enum { N = 1000, NR = 4 };
    size_t off[NR] = {3, 100, 101, 640}, len[NR] = {17, 1, 250, 360}, total = 0;
    for (int r = 0; r < NR; r++)
        total += len[r];
    float *src = frand(N, 1), *buf = fbuf(total), *dst = frand(N, 1), before[N];
    be->pack(be, buf, src, off, len, NR);
    int ok = 1;
    for (int r = 0, at = 0; r < NR; at += (int)len[r], r++)
        ok &= memcmp(buf + at, src + off[r], len[r] * sizeof(float)) == 0;
    CHECK(ok);
    memcpy(before, dst, sizeof before);
    be->unpack_scale(be, dst, buf, off, len, NR, 0.25f);
    double ref[N];
    for (int i = 0; i < N; i++)
        ref[i] = before[i];
    for (int r = 0, at = 0; r < NR; at += (int)len[r], r++)
        for (size_t i = 0; i < len[r]; i++)
            ref[off[r] + i] = 0.25 * (double)buf[at + i];
    CHECK(near("unpack_scale", dst, ref, N, 0.0, 0.0)); /* times 1/4: exact */
    RELEASE(src, buf, dst);
}

/* Order and waiting: events complete once the work before them has; host_alloc memory uploads and
 * downloads like any host memory; a backend that ran all of this reports no error. */
static void test_streams(void)
{
    upm_event *ev = be->event_new(be);
    CHECK(ev != NULL);
    float *h = be->host_alloc(be, 4096), *x = fbuf(1024), *y = fbuf(1024);
    CHECK(h && ((uintptr_t)h & 63) == 0);
    for (int i = 0; i < 1024; i++)
        h[i] = (float)i;
    be->upload(be, x, h, 4096);
    be->record(be, ev);
    be->wait(be, ev); /* the upload has read h */
    CHECK(be->query(be, ev) == 1);
    for (int i = 0; i < 1024; i++)
        h[i] = -1.0f;
    be->axpy(be, y, x, 2.0f, 1024);
    be->record(be, ev);
    be->download(be, h, y, 4096);
    CHECK(be->query(be, ev) == 1); /* everything before a download has completed */
    int ok = 1;
    for (int i = 0; i < 1024; i++)
        ok &= h[i] == 2.0f * (float)i;
    CHECK(ok);
    upm_err err = {0};
    CHECK(be->status(be, &err) == 0);
    be->host_free(be, h);
    be->event_free(be, ev);
    RELEASE(x, y);
}

/* ---- element types ---- */

static double bf16_value(uint16_t b) /* the encoding's definition: fp32's top half */
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Round to nearest, ties to even, from the definition: the two bf16 values around x (toward zero and
 * away from it), the nearer in exact (double) arithmetic; past the largest finite value the next one up is
 * 2^128, i.e. infinity, as IEEE 754 rounds with an unbounded exponent before overflowing. */
static uint16_t bf16_ref(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    uint16_t lo = (uint16_t)(u >> 16), hi = (uint16_t)(lo + 1);
    double vlo = bf16_value(lo), vhi = (hi & 0x7fff) == 0x7f80 ? copysign(ldexp(1.0, 128), x) : bf16_value(hi);
    double dlo = fabs((double)x - vlo), dhi = fabs(vhi - (double)x);
    return dlo < dhi ? lo : dhi < dlo ? hi : (lo & 1) ? hi : lo;
}

static void test_convert(void)
{
    enum { N = 20000, NS = 16 };
    static const uint32_t special[NS] = {0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00001,
                                         0x7f800001, /* a NaN whose payload is only in the dropped bits */
                                         0x7f7fffff, /* the largest float: rounds to infinity */
                                         0x7f7f7fff, 0x7f7f8000, /* just below / at the tie under the top */
                                         0x00000001, 0x00008000, 0x00018000, /* denormals and ties */
                                         0x3f808000, 0x3f818000, 0x3f807fff};
    float *x = fbuf(N), *back = fbuf(N);
    uint16_t *h = bbuf(sizeof(uint16_t) * N);
    for (int i = 0; i < N; i++) {
        rng_state ^= rng_state >> 12, rng_state ^= rng_state << 25, rng_state ^= rng_state >> 27;
        uint32_t u = i < NS ? special[i] : (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 32);
        if (i >= NS && i % 4 == 0)
            u = (u & 0xffff0000u) | 0x8000u; /* an exact tie */
        memcpy(&x[i], &u, sizeof u);
    }
    be->convert(be, h, UPM_BF16, x, UPM_F32, N);
    be->convert(be, back, UPM_F32, h, UPM_BF16, N);
    int bad = 0, nans = 0;
    for (int i = 0; i < N; i++) {
        if (isnan(x[i])) { /* stays a NaN of the same sign */
            nans++;
            bad += !(isnan(bf16_value(h[i])) && (h[i] >> 15) == (uint16_t)(signbit(x[i]) != 0));
        } else
            bad += h[i] != bf16_ref(x[i]);
        bad += memcmp(&back[i], &(float){(float)bf16_value(h[i])}, sizeof(float)) != 0 && !isnan(back[i]);
    }
    CHECK(bad == 0 && nans > 2);
    CHECK(h[7] == 0x7f80 && h[8] == 0x7f7f && h[9] == 0x7f80 && h[11] == 0x0000 && h[12] == 0x0002);
    be->convert(be, back, UPM_F32, x, UPM_F32, N); /* same types: a copy */
    CHECK(memcmp(back, x, sizeof(float) * N) == 0);
    RELEASE(x, back);
    BFREE(h);
}

/* The suite checks itself: an axpy that writes one element too many is caught by the guard bytes. */
static void (*good_axpy)(upm_backend *, float *, const float *, float, size_t);
static void overrunning_axpy(upm_backend *b, float *y, const float *x, float alpha, size_t n)
{
    good_axpy(b, y, x, alpha, n);
    float one = 1.0f;
    b->upload(b, y + n, &one, sizeof one); /* past the end */
}

static void test_guards(void)
{
    upm_err err;
    upm_backend *real = NULL;
    CHECK(upm_backend_cpu_new(1, &real, &err) == 0);
    good_axpy = real->axpy;
    real->axpy = overrunning_axpy;
    be = mirror_of(real, NULL);
    float *y = fbuf(10), *x = frand(10, 1);
    int before = failures;
    be->axpy(be, y, x, 1.0f, 10);
    CHECK(failures == before + 1); /* "mirror: axpy wrote past the end of a buffer of 40 bytes" */
    failures = before;
    be->axpy(be, y, x, 1.0f, 9); /* within bounds: nothing to report */
    CHECK(failures == before);
    RELEASE(y, x);
    upm_backend_free(be);
}

static void run_all(void)
{
    test_memory();
    test_gemm();
    test_blas1();
    test_layernorm();
    test_gelu();
    test_residual();
    test_rows();
    test_pack();
    test_streams();
    test_convert();
}

int main(void)
{
    test_guards();
    every_backend_twice("every op but attention", run_all);
    char why[512];
    if (upm_backend_why_not("cuda", why, sizeof why))
        printf("cuda backend: not checked here (%s); tools/gpu-check runs this suite on a GPU\n", why);
    /* the CPU backend's own contract: its thread count */
    upm_err err;
    upm_backend *bad = NULL;
    CHECK(upm_backend_cpu_new(-1, &bad, &err) == UPM_EUSAGE && bad == NULL);
    int saved = omp_get_max_threads();
    CHECK(upm_backend_cpu_new(1, &be, &err) == 0 && omp_get_max_threads() == 1 && strcmp(be->name, "cpu") == 0);
    CHECK(be->cpu_threads == 1); /* what a checkpoint records (bit-exact resume needs the same count) */
    upm_backend_free(be);
    omp_set_num_threads(saved);
    return CHECK_RESULT("test_backend_ops");
}
