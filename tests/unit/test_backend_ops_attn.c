/* The backend conformance suite, part 2 (part 1: test_backend_ops.c): attention (training's, and
 * generation's over a key/value cache) on every backend this build can open, through upload/download only (backend_mirror.h), against a double-precision reference and
 * finite differences, and bit-identical reductions (every reducing op and attention) run to run and for
 * 1 vs 2 threads. Prints the cost of ViT-Ti attention on the CPU backend. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_check.h"
#include "backend_mirror.h"

/* ---- attention ---- */

typedef struct attn_case {
    upm_attn_desc a;
    int rows;
    const double *dout;
} attn_case;

/* Double-precision attention over qkv; out rows not named by row_of stay 0. */
static void attn_ref(double *out, const double *qkv, const upm_attn_desc *a, int rows)
{
    int S = a->S, hd = a->head_dim, D = a->heads * hd;
    memset(out, 0, (size_t)rows * D * sizeof *out);
    double *p = malloc((size_t)S * sizeof *p);
    for (int s = 0; s < a->nseq; s++)
        for (int h = 0; h < a->heads; h++)
            for (int i = 0; i < S; i++) {
                const double *q = qkv + (size_t)a->row_of[s * S + i] * 3 * D + h * hd;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < S; j++) {
                    const double *k = qkv + (size_t)a->row_of[s * S + j] * 3 * D + D + h * hd;
                    double sc = 0;
                    for (int d = 0; d < hd; d++)
                        sc += q[d] * k[d];
                    p[j] = a->mask[((size_t)s * S + i) * S + j] ? sc / sqrt(hd) : -INFINITY;
                    mx = fmax(mx, p[j]);
                }
                if (mx == -INFINITY)
                    continue;
                for (int j = 0; j < S; j++)
                    sum += p[j] = exp(p[j] - mx);
                double *o = out + (size_t)a->row_of[s * S + i] * D + h * hd;
                for (int j = 0; j < S; j++)
                    for (int d = 0; d < hd; d++)
                        o[d] += p[j] / sum * qkv[(size_t)a->row_of[s * S + j] * 3 * D + 2 * D + h * hd + d];
            }
    free(p);
}

static double attn_loss(const void *vc, const double *qkv)
{
    const attn_case *c = vc;
    size_t n = (size_t)c->rows * c->a.heads * c->a.head_dim;
    double *out = malloc(n * sizeof *out), L = 0;
    attn_ref(out, qkv, &c->a, c->rows);
    for (size_t i = 0; i < n; i++)
        L += c->dout[i] * out[i];
    free(out);
    return L;
}

/* A case with rows permuted through a larger matrix (a spare row after every 8), a random mask plus
 * the diagonal, and the last token of sequence 0 as padding (attends to nothing, nobody attends to
 * it). nseq * S must be prime to 7. With `runs`, sequence 0 is permuted and the others sit in
 * consecutive rows after a spare one (the backend's in-place path); S >= 8 then. */
static attn_case attn_make(int nseq, int S, int heads, int hd, int32_t *row_of, uint8_t *mask, int runs)
{
    int n = nseq * S;
    attn_case c = {{nseq, S, heads, hd, row_of, mask}, n + n / 8 + 1, NULL};
    for (int i = 0; i < n; i++) {
        int k = (int)(((size_t)i * 7 + 3) % (size_t)S);
        row_of[i] = runs ? (i < S ? k : i + i / S) : (k = (int)(((size_t)i * 7 + 3) % (size_t)n), k + k / 8);
    }
    for (int s = 0; s < nseq; s++)
        for (int i = 0; i < S; i++)
            for (int j = 0; j < S; j++)
                mask[((size_t)s * S + i) * S + j] = i == j || urand() > -0.2;
    for (int j = 0; j < S; j++)
        mask[(size_t)(S - 1) * S + j] = mask[(size_t)j * S + S - 1] = 0;
    return c;
}

static void check_attention(int nseq, int S, int heads, int hd, int full_fd, int runs)
{
    int32_t *row_of = bbuf((size_t)nseq * S * sizeof *row_of);
    uint8_t *mask = bbuf((size_t)nseq * S * S);
    attn_case c = attn_make(nseq, S, heads, hd, row_of, mask, runs);
    int rows = c.rows, D = heads * hd;
    uint8_t *named = calloc((size_t)rows, 1);
    for (int i = 0; i < nseq * S; i++)
        named[row_of[i]]++;
    float *qkv = frand((size_t)rows * 3 * D, 1.5), *out = frand((size_t)rows * D, 1);
    float *probs = fbuf((size_t)nseq * heads * S * S), *dout = frand((size_t)rows * D, 1);
    float *dqkv = frand((size_t)rows * 3 * D, 1), *out0 = fbuf((size_t)rows * D);
    memcpy(out0, out, (size_t)rows * D * sizeof *out);
    double *dq = dcopy(qkv, (size_t)rows * 3 * D), *ddo = dcopy(dout, (size_t)rows * D);
    double *ref = malloc((size_t)rows * D * sizeof *ref);
    attn_ref(ref, dq, &c.a, rows);
    be->attention_fwd(be, out, probs, qkv, &c.a);
    int untouched = 1;
    for (int r = 0; r < rows; r++)
        if (!named[r]) {
            untouched &= memcmp(out + (size_t)r * D, out0 + (size_t)r * D, (size_t)D * sizeof *out) == 0;
            memcpy(out + (size_t)r * D, out0 + (size_t)r * D, (size_t)D * sizeof *out);
            for (int j = 0; j < D; j++)
                ref[(size_t)r * D + j] = out0[(size_t)r * D + j];
        }
    CHECK(untouched);
    CHECK(near("attention_fwd", out, ref, (size_t)rows * D, 1e-5, 0.1)); /* sums of S terms: as gemm */
    int pad_zero = 1; /* the padding token: output 0, probability row 0, and column 0 */
    for (int d = 0; d < D; d++)
        pad_zero &= out[(size_t)row_of[S - 1] * D + d] == 0.0f;
    for (int j = 0; j < S; j++)
        pad_zero &= probs[(size_t)(S - 1) * S + j] == 0.0f && probs[(size_t)j * S + S - 1] == 0.0f;
    CHECK(pad_zero);
    c.dout = ddo;
    size_t n = (size_t)rows * 3 * D;
    double *dq0 = dcopy(dqkv, n);
    be->attention_bwd(be, dqkv, dout, probs, qkv, &c.a);
    if (full_fd) {
        double *fd = fd_grad(attn_loss, &c, dq, n);
        for (size_t i = 0; i < n; i++)
            fd[i] += dq0[i];
        CHECK(near("attention_bwd vs finite differences", dqkv, fd, n, 1e-5, 0.1));
        free(fd);
    } else { /* directional derivatives along random directions */
        double *u = malloc(n * sizeof *u), *xp = malloc(n * sizeof *xp), *xm = malloc(n * sizeof *xm);
        for (int trial = 0; trial < 3; trial++) {
            double dot = 0, rss = 0, h = 1e-5;
            for (size_t i = 0; i < n; i++) {
                u[i] = urand();
                xp[i] = dq[i] + h * u[i], xm[i] = dq[i] - h * u[i];
                double t = ((double)dqkv[i] - dq0[i]) * u[i];
                dot += t, rss += t * t;
            }
            double dir = (attn_loss(&c, xp) - attn_loss(&c, xm)) / (2 * h);
            /* relative to the size of the terms too: random signs can cancel the sum */
            CHECK(fabs(dot - dir) <= 1e-5 * (fabs(dir) + sqrt(rss)));
        }
        free(u), free(xp), free(xm);
    }
    BFREE(row_of), BFREE(mask);
    free(named), free(dq), free(ddo), free(ref), free(dq0);
    RELEASE(qkv, out, probs, dout, dqkv, out0);
}

/* ---- determinism: 1 vs 2 threads, and run to run ---- */

/* Runs every reducing op on fixed inputs (sizes past the parallel threshold) into one buffer: RED_ROWS
 * rows of Cn reduction results, then attention. */
enum { RED_ROWS = 11 };

static void reductions(float *res, const int32_t *idx, const int32_t *tgt, const upm_attn_desc *a, float **in)
{
    enum { R = 1003, Cn = 67 };
    float *x = in[0], *dy = in[1], *st = in[2], *qkv = in[3], *dout = in[4], *probs = in[5];
    memset(res, 0, RED_ROWS * Cn * sizeof *res);
    be->bias_grad(be, res, dy, R, Cn);
    float *mean = st, *rstd = st + R, *dx = st + 2 * R, *y = dx + Cn, *dlogits = y + R * Cn;
    be->layernorm_fwd(be, y, mean, rstd, x, x, x, R, Cn, 1e-5f);
    be->layernorm_bwd(be, dx, res + Cn, res + 2 * Cn, dy, x, mean, rstd, x, 1, Cn);
    be->layernorm_bwd(be, NULL, res + Cn, res + 2 * Cn, dy, x, mean, rstd, x, R, Cn);
    memset(dlogits, 0, (size_t)R * Cn * sizeof *dlogits); /* all three at once: the one-pass path */
    be->layernorm_bwd(be, dlogits, res + 8 * Cn, res + 9 * Cn, dy, x, mean, rstd, x, R, Cn);
    be->bias_grad(be, res + 10 * Cn, dlogits, R, Cn);
    be->residual_bwd(be, NULL, NULL, res + 3 * Cn, dy, x, x, NULL, NULL, R, Cn);
    be->scatter_add(be, res + 4 * Cn, dy, idx, R, Cn); /* every row lands in 3 table rows */
    be->sumsq(be, res + 7 * Cn, x, (size_t)R * Cn);
    be->xent_fwd_bwd(be, res + 7 * Cn + 1, dlogits, x, tgt, R, Cn, 0.1f, 1.0f);
    size_t nq = (size_t)a->nseq * a->S * a->heads * a->head_dim;
    memset(res + RED_ROWS * Cn, 0, 4 * nq * sizeof *res);
    be->attention_fwd(be, res + RED_ROWS * Cn, probs, qkv, a);
    be->attention_bwd(be, res + RED_ROWS * Cn + nq, dout, probs, qkv, a);
}

static void test_determinism(void)
{
    enum { R = 1003, Cn = 67, NS = 4, S = 45, H = 3, HD = 32 };
    int32_t *idx = bbuf(sizeof(int32_t) * R), *tgt = bbuf(sizeof(int32_t) * R), *row_of = bbuf(sizeof(int32_t) * NS * S);
    uint8_t *mask = bbuf(NS * S * S);
    attn_case c = attn_make(NS, S, H, HD, row_of, mask, 0);
    for (int r = 0; r < R; r++)
        idx[r] = r % 3, tgt[r] = r % 7 == 0 ? -1 : r % Cn;
    size_t nq = (size_t)c.rows * H * HD;
    float *in[6] = {frand(R * Cn, 1), frand(R * Cn, 1), fbuf(2 * R + Cn + 2 * R * Cn), frand(3 * nq, 1), frand(nq, 1),
                    fbuf((size_t)NS * H * S * S)};
    size_t nres = RED_ROWS * Cn + 4 * nq;
    float *r1 = fbuf(nres), *r2 = fbuf(nres), *r3 = fbuf(nres);
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    reductions(r1, idx, tgt, &c.a, in);
    omp_set_num_threads(2);
    reductions(r2, idx, tgt, &c.a, in);
    reductions(r3, idx, tgt, &c.a, in);
    omp_set_num_threads(saved);
    CHECK(memcmp(r1, r2, nres * sizeof *r1) == 0);
    CHECK(memcmp(r2, r3, nres * sizeof *r1) == 0);
    for (size_t i = 0; i < RED_ROWS * Cn; i++)
        CHECK(r1[i] == r2[i]); /* names the first differing reduction, if any */
    RELEASE(in[0], in[1], in[2], in[3], in[4], in[5], r1, r2, r3);
    BFREE(idx), BFREE(tgt), BFREE(row_of), BFREE(mask);
}

/* Generation's attention over a key/value cache (backend.h, upm_attn_kv_desc), from its description: the
 * first n_append new tokens' k|v are stored at cache positions len.., then each new token attends to its
 * group's prefix, then to the cache (appended tokens causally; a query token to all appended ones and to
 * itself). Rows not named by row_of stay as they were; cache positions past the appended ones too. */
static void check_kv_attention(void)
{
    enum { NSEQ = 4, GROUP = 2, PL = 3, NNEW = 3, NAPP = 2, LEN = 2, CAP = 6, H = 2, HD = 4, D = H * HD };
    enum { ROWS = NSEQ * NNEW + 2 };
    int32_t *row_of = bbuf(sizeof(int32_t) * NSEQ * NNEW);
    for (int i = 0; i < NSEQ * NNEW; i++)
        row_of[i] = (i * 5 + 3) % ROWS; /* scattered rows, two left out */
    float *qkv = frand((size_t)ROWS * 3 * D, 1), *prefix = frand((size_t)NSEQ / GROUP * PL * 3 * D, 1);
    float *cache = frand((size_t)CAP * NSEQ * 2 * D, 1), *out = frand((size_t)ROWS * D, 1);
    double *want_out = dcopy(out, (size_t)ROWS * D), *want_cache = dcopy(cache, (size_t)CAP * NSEQ * 2 * D);
    for (int s = 0; s < NSEQ; s++)
        for (int i = 0; i < NAPP; i++)
            for (int c = 0; c < 2 * D; c++)
                want_cache[((size_t)(LEN + i) * NSEQ + s) * 2 * D + c] = qkv[(size_t)row_of[s * NNEW + i] * 3 * D + D + c];
    enum { MAXK = PL + LEN + NAPP + 1 };
    for (int s = 0; s < NSEQ; s++)
        for (int i = 0; i < NNEW; i++) {
            int r = row_of[s * NNEW + i];
            const double *keys[MAXK], *vals[MAXK];
            double kbuf[MAXK][2 * D];
            int nk = 0;
            for (int j = 0; j < PL; j++) {
                const float *pr = prefix + ((size_t)(s / GROUP) * PL + j) * 3 * D;
                for (int c = 0; c < 2 * D; c++)
                    kbuf[nk][c] = pr[D + c];
                nk++;
            }
            int upto = i < NAPP ? LEN + i + 1 : LEN + NAPP;
            for (int pos = 0; pos < upto; pos++, nk++)
                for (int c = 0; c < 2 * D; c++)
                    kbuf[nk][c] = want_cache[((size_t)pos * NSEQ + s) * 2 * D + c];
            if (i >= NAPP) {
                for (int c = 0; c < 2 * D; c++)
                    kbuf[nk][c] = qkv[(size_t)r * 3 * D + D + c];
                nk++;
            }
            for (int k = 0; k < nk; k++)
                keys[k] = kbuf[k], vals[k] = kbuf[k] + D;
            for (int h = 0; h < H; h++) {
                double sc[MAXK], mx = -INFINITY, sum = 0;
                for (int k = 0; k < nk; k++) {
                    sc[k] = 0;
                    for (int d = 0; d < HD; d++)
                        sc[k] += (double)qkv[(size_t)r * 3 * D + h * HD + d] * keys[k][h * HD + d];
                    sc[k] /= sqrt(HD);
                    mx = fmax(mx, sc[k]);
                }
                for (int k = 0; k < nk; k++)
                    sum += (sc[k] = exp(sc[k] - mx));
                for (int d = 0; d < HD; d++) {
                    double o = 0;
                    for (int k = 0; k < nk; k++)
                        o += sc[k] / sum * vals[k][h * HD + d];
                    want_out[(size_t)r * D + h * HD + d] = o;
                }
            }
        }
    upm_attn_kv_desc a = {NSEQ, NNEW, NAPP, H, HD, row_of, prefix, PL, GROUP, cache, LEN};
    be->attention_kv_fwd(be, out, qkv, &a);
    CHECK(near("attention_kv_fwd out", out, want_out, (size_t)ROWS * D, 1e-5, 1e-3));
    CHECK(near("attention_kv_fwd cache", cache, want_cache, (size_t)CAP * NSEQ * 2 * D, 0.0, 0.0));
    free(want_out), free(want_cache);
    RELEASE(qkv, prefix, cache, out);
    BFREE(row_of);
}

/* ViT-Ti attention: 32 sequences x 101 tokens, 3 heads of 64 (a printout for the lead, not a check). */
static void time_vit_ti(void)
{
    enum { NS = 32, S = 101, H = 3, HD = 64, D = H * HD };
    int32_t *row_of = malloc(NS * S * sizeof *row_of);
    uint8_t *mask = malloc(NS * S * S);
    for (int i = 0; i < NS * S; i++)
        row_of[i] = i;
    memset(mask, 1, NS * S * S);
    upm_attn_desc a = {NS, S, H, HD, row_of, mask};
    float *qkv = frand(NS * S * 3 * D, 1), *out = fbuf(NS * S * D), *probs = fbuf((size_t)NS * H * S * S);
    float *dqkv = fbuf(NS * S * 3 * D);
    double t0 = 0;
    enum { REPS = 3 };
    for (int i = -1; i < REPS; i++) { /* the first round JIT-compiles oneDNN's kernels: not timed */
        t0 = i == 0 ? omp_get_wtime() : t0;
        be->attention_fwd(be, out, probs, qkv, &a);
        be->attention_bwd(be, dqkv, out, probs, qkv, &a);
    }
    double ms = (omp_get_wtime() - t0) / REPS * 1e3;
    printf("attention fwd+bwd at ViT-Ti shape (32 x 101 tokens, 3 x 64): %.2f ms per layer, %.0f ms per "
           "12-layer step (%d threads)\n",
           ms, 12 * ms, omp_get_max_threads());
    free(row_of), free(mask);
    RELEASE(qkv, out, probs, dqkv);
}

/* Every check of this suite on the backend be. */
static void run_all(void)
{
    check_attention(3, 13, 2, 5, 1, 0);  /* finite differences on every input */
    check_attention(3, 13, 2, 5, 1, 1);  /* the same with sequences in consecutive rows */
    check_attention(2, 45, 3, 64, 0, 0); /* oneDNN-sized blocks, directional derivatives */
    check_attention(3, 40, 3, 64, 0, 1);
    check_kv_attention();
    test_determinism();
}

int main(void)
{
    every_backend_twice("attention and reductions", run_all);
    upm_err err;
    CHECK(upm_backend_cpu_new(0, &be, &err) == 0);
    time_vit_ti();
    upm_backend_free(be);
    return CHECK_RESULT("test_backend_ops_attn");
}
