/* The CPU backend's innermost per-element loops: LayerNorm forward and backward, GELU, the attention softmax
 * forward and backward, AdamW's update and idle-block scan, the bias and its gradient, the sum of squares.
 * Outside the matmuls they are most of a small model's training step, and they must vectorise.
 *
 * In the sanitizer build this file alone is compiled without ASan and UBSan (model/CMakeLists.txt): GCC
 * vectorises no loop that carries their checks, and these loops were half of a small model's training
 * step there (docs/ARCHITECTURE.md, 11). Their callers check, whole, every range a loop here reads or
 * writes (upm_cpu_check, backend_cpu.h), so a call that runs past an allocation is still reported, with
 * the caller's stack; each loop touches exactly the ranges its comment names, and no more. */
#include "backend_cpu.h"

#include <math.h>

/* ---- GELU ---- */

/* The standard normal cdf Phi(x) and density phi(x). Phi goes through erfc(z) = t exp(-z^2) R(t) with
 * t = 1/(1 + z/2) (Numerical Recipes' substitution), R a degree-11 polynomial Chebyshev-fitted on t
 * in (0, 1] (every z >= 0) to erfc(z) exp(z^2) / t: relative error < 3e-7 in float for every
 * argument, so x Phi(x) keeps its relative accuracy far into the negative tail, where 1 + erf(.)
 * would cancel. One exp, shared with the density, and branch-free so the loops vectorise (libm's
 * erff is scalar and made GELU a third of a ViT-Ti step). */
static inline float erfcx_over_t(float t)
{
    return 2.820948064e-01f +
           t * (2.820925117e-01f +
                t * (2.469212264e-01f +
                     t * (1.748430282e-01f +
                          t * (9.676507115e-02f +
                               t * (-7.306420803e-02f +
                                    t * (1.690478176e-01f +
                                         t * (-5.187245607e-01f +
                                              t * (5.650556087e-01f +
                                                   t * (-2.846036255e-01f +
                                                        t * (6.296636909e-02f + t * -3.394021187e-03f))))))))));
}

static inline float normal_cdf(float x, float *pdf)
{
    float t = 1.0f / (1.0f + 0.5f * (fabsf(x) * 0.70710678118654752f));
    float e = upm_cpu_expf(-0.5f * x * x); /* exp(-z^2) */
    float erfc_z = t * e * erfcx_over_t(t);
    *pdf = e * 0.39894228040143268f;
    return upm_cpu_fsel(x >= 0.0f, 1.0f - 0.5f * erfc_z, 0.5f * erfc_z);
}

/* y = GELU(x) over [0, n). */
UPM_CPU_CLONES void upm_cpu_vec_gelu_fwd(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float pdf;
        y[i] = x[i] * normal_cdf(x[i], &pdf);
    }
}

/* dx += dy GELU'(x) over [0, n). */
UPM_CPU_CLONES void upm_cpu_vec_gelu_bwd(float *dx, const float *dy, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float pdf, cdf = normal_cdf(x[i], &pdf);
        dx[i] += dy[i] * (cdf + x[i] * pdf);
    }
}

/* ---- LayerNorm ---- */

static inline void layernorm_row(float *y, float *mean, float *rstd, const float *x, const float *g, const float *b,
                                 int cols, float eps)
{
    double mu = upm_cpu_sum(x, (size_t)cols) / cols;
    double acc[8] = {0};
    int c = 0;
    for (; c + 8 <= cols; c += 8)
        for (int l = 0; l < 8; l++) {
            double d = (double)x[c + l] - mu;
            acc[l] += d * d;
        }
    for (int l = 0; c < cols; c++, l++) {
        double d = (double)x[c] - mu;
        acc[l] += d * d;
    }
    double var = (((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))) / cols;
    float m = (float)mu, rs = (float)(1.0 / sqrt(var + (double)eps));
    *mean = m;
    *rstd = rs;
    for (c = 0; c < cols; c++)
        y[c] = (x[c] - m) * rs * g[c] + b[c];
}

/* Rows [r0, r1): touches those rows of y and x, mean[r0, r1), rstd[r0, r1), g and b [0, cols). */
UPM_CPU_CLONES void upm_cpu_vec_layernorm_fwd(float *y, float *mean, float *rstd, const float *x, const float *g,
                                              const float *b, int r0, int r1, int cols, float eps)
{
    for (int r = r0; r < r1; r++)
        layernorm_row(y + (size_t)r * cols, mean + r, rstd + r, x + (size_t)r * cols, g, b, cols, eps);
}

/* dx = rstd (g dy - mean(g dy) - xhat mean(g dy xhat)) for one row. */
static inline void layernorm_row_dx(float *dx, const float *dy, const float *x, float mu, float rs, const float *g,
                                    int cols)
{
    double sa[8] = {0}, sb[8] = {0};
    int c = 0;
    for (; c + 8 <= cols; c += 8)
        for (int l = 0; l < 8; l++) {
            float xh = (x[c + l] - mu) * rs, gd = dy[c + l] * g[c + l];
            sa[l] += (double)gd;
            sb[l] += (double)gd * (double)xh;
        }
    for (int l = 0; c < cols; c++, l++) {
        float xh = (x[c] - mu) * rs, gd = dy[c] * g[c];
        sa[l] += (double)gd;
        sb[l] += (double)gd * (double)xh;
    }
    float a = (float)((((sa[0] + sa[1]) + (sa[2] + sa[3])) + ((sa[4] + sa[5]) + (sa[6] + sa[7]))) / cols);
    float bb = (float)((((sb[0] + sb[1]) + (sb[2] + sb[3])) + ((sb[4] + sb[5]) + (sb[6] + sb[7]))) / cols);
    for (c = 0; c < cols; c++) {
        float xh = (x[c] - mu) * rs;
        dx[c] += rs * (dy[c] * g[c] - a - xh * bb);
    }
}

/* Rows [r0, r1): touches those rows of dx, dy and x, mean[r0, r1), rstd[r0, r1) and g[0, cols). */
UPM_CPU_CLONES void upm_cpu_vec_layernorm_dx(float *dx, const float *dy, const float *x, const float *mean,
                                             const float *rstd, const float *g, int r0, int r1, int cols)
{
    for (int r = r0; r < r1; r++) {
        size_t o = (size_t)r * cols;
        layernorm_row_dx(dx + o, dy + o, x + o, mean[r], rstd[r], g, cols);
    }
}

/* dx of rows [r0, r1) and, in the same pass while the rows are in cache, their partial dg (ag) and
 * db (ab) sums, in row order. Touches what upm_cpu_vec_layernorm_dx does, and ag and ab [0, cols). */
UPM_CPU_CLONES void upm_cpu_vec_layernorm_bwd(float *dx, double *ag, double *ab, const float *dy, const float *x,
                                              const float *mean, const float *rstd, const float *g, int r0, int r1,
                                              int cols)
{
    for (int c = 0; c < cols; c++)
        ag[c] = ab[c] = 0.0;
    for (int r = r0; r < r1; r++) {
        size_t o = (size_t)r * cols;
        float mu = mean[r], rs = rstd[r];
        layernorm_row_dx(dx + o, dy + o, x + o, mu, rs, g, cols);
        for (int c = 0; c < cols; c++) {
            ag[c] += (double)dy[o + c] * (double)((x[o + c] - mu) * rs);
            ab[c] += (double)dy[o + c];
        }
    }
}

/* ---- attention softmax ---- */

/* Largest of n floats over 16 fixed lanes so it vectorises (max is exact in any order); a plain ?:
 * (no arithmetic in its arms) is what GCC turns into a vector max. */
static inline float row_max(const float *p, int n)
{
    float lane[16];
    for (int l = 0; l < 16; l++)
        lane[l] = -INFINITY;
    int j = 0;
    for (; j + 16 <= n; j += 16)
        for (int l = 0; l < 16; l++)
            lane[l] = p[j + l] > lane[l] ? p[j + l] : lane[l];
    float mx = lane[0];
    for (int l = 1; l < 16; l++)
        mx = lane[l] > mx ? lane[l] : mx;
    for (; j < n; j++)
        mx = p[j] > mx ? p[j] : mx;
    return mx;
}

/* Row-wise softmax of scores over the allowed keys (mask != 0), max-subtracted; disallowed keys get
 * probability 0 and a row with no allowed key is all zeros (a padding token's output is then 0).
 * Rows are first shifted by their max with disallowed scores set to -inf (and a row with no allowed
 * key to all -inf), so the exp runs as one flat loop over the S x S block (exp(-inf) = 0): per-row
 * loops would leave S mod 16 scalar exps in every row. Touches P[0, S*S) and mask[0, S*S). */
UPM_CPU_CLONES void upm_cpu_vec_masked_softmax(float *P, const uint8_t *mask, int S)
{
    size_t n = (size_t)S * S;
    for (int i = 0; i < S; i++) {
        float *p = P + (size_t)i * S;
        const uint8_t *m = mask + (size_t)i * S;
        int any = 0;
        for (int j = 0; j < S; j++)
            any |= m[j];
        for (int j = 0; j < S; j++)
            p[j] = upm_cpu_fsel(m[j], p[j], -INFINITY);
        float mx = any ? row_max(p, S) : 0.0f;
        for (int j = 0; j < S; j++)
            p[j] = p[j] - mx;
    }
    for (size_t k = 0; k < n; k++)
        P[k] = upm_cpu_expf(P[k]);
    for (int i = 0; i < S; i++) {
        float *p = P + (size_t)i * S;
        double sum = upm_cpu_sum(p, (size_t)S);
        if (sum == 0.0) /* nothing allowed: already all zeros */
            continue;
        float inv = (float)(1.0 / sum);
        for (int j = 0; j < S; j++)
            p[j] *= inv;
    }
}

/* dS = P (dP - rowsum(dP P)) in place of dP, row by row. Touches dS[0, S*S) and P[0, S*S). */
UPM_CPU_CLONES void upm_cpu_vec_softmax_bwd(float *dS, const float *P, int S)
{
    for (int i = 0; i < S; i++) {
        float *d = dS + (size_t)i * S;
        const float *p = P + (size_t)i * S;
        float c = (float)upm_cpu_dot(d, p, (size_t)S);
        for (int j = 0; j < S; j++)
            d[j] = p[j] * (d[j] - c);
    }
}

/* ---- reductions ---- */

/* Y[r, :] += b for rows [r0, r1): touches those rows of Y and b[0, cols). */
UPM_CPU_CLONES void upm_cpu_vec_add_bias(float *Y, const float *b, int r0, int r1, int cols)
{
    for (int r = r0; r < r1; r++) {
        float *y = Y + (size_t)r * cols;
        for (int c = 0; c < cols; c++)
            y[c] += b[c];
    }
}

/* Touches db[c0, c1) and, of every row r < rows, dY[r * cols + c0, r * cols + c1). */
UPM_CPU_CLONES void upm_cpu_vec_bias_grad(float *db, const float *dY, int rows, int cols, int c0, int c1)
{
    double acc[UPM_CPU_BIAS_RUN];
    for (; c0 < c1; c0 += UPM_CPU_BIAS_RUN) {
        int w = c1 - c0 < UPM_CPU_BIAS_RUN ? c1 - c0 : UPM_CPU_BIAS_RUN;
        for (int c = 0; c < w; c++)
            acc[c] = 0.0;
        for (int r = 0; r < rows; r++) {
            const float *y = dY + (size_t)r * cols + c0;
            for (int c = 0; c < w; c++)
                acc[c] += (double)y[c];
        }
        for (int c = 0; c < w; c++)
            db[c0 + c] = (float)((double)db[c0 + c] + acc[c]);
    }
}

/* Touches x[0, n). */
double upm_cpu_vec_sumsq(const float *x, size_t n)
{
    return upm_cpu_dot(x, x, n);
}

/* ---- AdamW ---- */

/* 1 when the step cannot change a block: every gradient and moment is zero and no weight decay applies,
 * so the step would compute m = v = 0 and p * 1 - step * (0 / (0 + eps)) = p, the same bits. Most of
 * the token-embedding table is such blocks (the rows of tokens no batch has used yet), and with a small
 * model that table is most of the parameters (docs/training.md, "A step"). One pass of ORs without an
 * early exit, so that it vectorises. */
static inline int adamw_idle(const float *restrict g, const float *restrict m, const float *restrict v,
                             const uint8_t *restrict wd, size_t len, float decay)
{
    int busy = 0;
    for (size_t i = 0; i < len; i++)
        busy |= (g[i] != 0.0f) | (m[i] != 0.0f) | (v[i] != 0.0f);
    if (busy || decay == 1.0f)
        return !busy;
    if (!wd)
        return 0;
    int decayed = 0;
    for (size_t i = 0; i < len; i++)
        decayed |= wd[i];
    return !decayed;
}

/* Blocks of 512 parameters, so that a block the step cannot change is skipped (adamw_idle). One fused loop
 * per block that vectorises: the kernels are built with -fno-math-errno (model/CMakeLists.txt), so sqrtf
 * is the vector square root, correctly rounded in every width like the scalar one: the same bits.
 * Touches p, m, v, g and (when not NULL) wd_mask over [0, n). */
enum { ADAMW_BLOCK = 512 };

UPM_CPU_CLONES void upm_cpu_vec_adamw(float *restrict p, float *restrict m, float *restrict v, const float *restrict g,
                                      const uint8_t *restrict wd_mask, size_t n, upm_cpu_adamw_k k)
{
    for (size_t lo = 0; lo < n; lo += ADAMW_BLOCK) {
        size_t len = n - lo < ADAMW_BLOCK ? n - lo : ADAMW_BLOCK;
        float *pb = p + lo, *mb = m + lo, *vb = v + lo;
        const float *gb = g + lo;
        if (adamw_idle(gb, mb, vb, wd_mask ? wd_mask + lo : NULL, len, k.decay))
            continue;
        const uint8_t *wb = wd_mask ? wd_mask + lo : NULL;
        for (size_t i = 0; i < len; i++) {
            float gi = gb[i] * k.gscale;
            float mi = k.b1 * mb[i] + (1.0f - k.b1) * gi;
            float vi = k.b2 * vb[i] + (1.0f - k.b2) * gi * gi;
            float decay = wb ? upm_cpu_fsel(wb[i], k.decay, 1.0f) : k.decay;
            mb[i] = mi;
            vb[i] = vi;
            pb[i] = pb[i] * decay - k.step * (mi / (sqrtf(vi) / k.sbc2 + k.eps));
        }
    }
}
