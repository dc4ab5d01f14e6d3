/* The CPU backend's gate and loss ops: top-k of a softmax (the Conditional-MoE gate: Eq. 3 as written,
 * or renormalised over the kept k as the official code does), row L2 normalisation of features, and label-smoothed cross-entropy with its
 * gradient. Rows are independent and parallel; the only cross-row sum (the mean loss) goes through
 * fixed chunks combined in order. */
#include "backend_cpu.h"

#include <math.h>

/* ---- top-k softmax gate ---- */

/* Entry j is kept when fewer than k entries beat it; i beats j when p_i > p_j, or p_i == p_j and
 * i < j, so ties go to the lower index and exactly min(k, E) entries are kept. */
static void topk_row(float *G, float *probs, const float *z, const float *noise, int E, int k, int renorm)
{
    float mx = -INFINITY;
    for (int j = 0; j < E; j++) {
        float v = noise ? z[j] + noise[j] : z[j];
        probs[j] = v;
        mx = v > mx ? v : mx;
    }
    double sum = 0.0;
    for (int j = 0; j < E; j++) {
        probs[j] = expf(probs[j] - mx);
        sum += probs[j];
    }
    float inv = (float)(1.0 / sum);
    for (int j = 0; j < E; j++)
        probs[j] *= inv;
    for (int j = 0; j < E; j++) {
        int beaten = 0;
        for (int i = 0; i < E; i++)
            beaten += probs[i] > probs[j] || (probs[i] == probs[j] && i < j);
        G[j] = beaten < k ? probs[j] : 0.0f;
    }
    if (renorm) { /* softmax over the kept logits = the kept probabilities over their sum */
        double kept = 0.0;
        for (int j = 0; j < E; j++)
            kept += G[j];
        for (int j = 0; j < E; j++)
            G[j] = G[j] != 0.0f ? (float)(G[j] / kept) : 0.0f;
    }
}

void upm_cpu_topk_softmax_fwd(upm_backend *be, float *G, float *probs, const float *logits, const float *noise,
                              int rows, int E, int k, int renorm)
{
    if (rows <= 0 || E <= 0)
        return;
    upm_cpu_threads(be);
#pragma omp parallel for schedule(static) if ((size_t)rows * (size_t)E * (size_t)E >= UPM_CPU_PAR_MIN)
    for (int r = 0; r < rows; r++) {
        size_t o = (size_t)r * E;
        topk_row(G + o, probs + o, logits + o, noise ? noise + o : NULL, E, k, renorm);
    }
}

/* With g_i = dG_i on kept entries (where G_i = p_i) and 0 elsewhere,
 * dz_j = sum_i g_i p_i (delta_ij - p_j) = G_j dG_j - p_j sum_i G_i dG_i.
 * Renormalised, G is a softmax over the kept set K: dz_j = G_j (dG_j - sum_i G_i dG_i) for j in K, else 0.
 * A kept entry whose probability underflowed to 0 contributes 0 either way, so G != 0 marks "kept". */
void upm_cpu_topk_softmax_bwd(upm_backend *be, float *dlogits, const float *dG, const float *G, const float *probs,
                              int rows, int E, int renorm)
{
    if (rows <= 0 || E <= 0)
        return;
    upm_cpu_threads(be);
#pragma omp parallel for schedule(static) if ((size_t)rows * (size_t)E >= UPM_CPU_PAR_MIN)
    for (int r = 0; r < rows; r++) {
        size_t o = (size_t)r * E;
        float s = (float)upm_cpu_dot(G + o, dG + o, (size_t)E);
        for (int j = 0; j < E; j++)
            dlogits[o + j] += G[o + j] * dG[o + j] - (renorm ? G[o + j] : probs[o + j]) * s;
    }
}

/* ---- L2 normalisation ---- */

#define L2_MIN 1e-12f

void upm_cpu_l2norm_fwd(upm_backend *be, float *y, float *norm, const float *x, int rows, int cols)
{
    if (rows <= 0 || cols <= 0)
        return;
    upm_cpu_threads(be);
#pragma omp parallel for schedule(static) if ((size_t)rows * (size_t)cols >= UPM_CPU_PAR_MIN)
    for (int r = 0; r < rows; r++) {
        size_t o = (size_t)r * cols;
        float n = (float)sqrt(upm_cpu_dot(x + o, x + o, (size_t)cols));
        norm[r] = n;
        float inv = 1.0f / (n > L2_MIN ? n : L2_MIN);
        for (int c = 0; c < cols; c++)
            y[o + c] = x[o + c] * inv;
    }
}

/* y = x / n: dx = (dy - y (y . dy)) / n; below the clamp the divisor is a constant: dx = dy / 1e-12. */
void upm_cpu_l2norm_bwd(upm_backend *be, float *dx, const float *dy, const float *y, const float *norm, int rows,
                        int cols)
{
    if (rows <= 0 || cols <= 0)
        return;
    upm_cpu_threads(be);
#pragma omp parallel for schedule(static) if ((size_t)rows * (size_t)cols >= UPM_CPU_PAR_MIN)
    for (int r = 0; r < rows; r++) {
        size_t o = (size_t)r * cols;
        float n = norm[r];
        float yd = n > L2_MIN ? (float)upm_cpu_dot(y + o, dy + o, (size_t)cols) : 0.0f;
        float inv = 1.0f / (n > L2_MIN ? n : L2_MIN);
        for (int c = 0; c < cols; c++)
            dx[o + c] += (dy[o + c] - y[o + c] * yd) * inv;
    }
}

/* ---- label-smoothed cross-entropy ---- */

/* One valid row: returns its loss, sets *correct, writes the row of dlogits (gradient times w). One
 * exp per logit (kept in d between the passes), since the vocabulary losses have C ~ 50k. */
static double xent_row(float *d, const float *z, int t, int C, float eps, double w, int *correct)
{
    float mx = z[0];
    int arg = 0;
    for (int c = 1; c < C; c++)
        if (z[c] > mx) {
            mx = z[c];
            arg = c;
        }
    for (int c = 0; c < C; c++)
        d[c] = upm_cpu_expf(z[c] - mx);
    double se = upm_cpu_sum(d, (size_t)C), sz = upm_cpu_sum(z, (size_t)C);
    double lse = mx + log(se);
    /* -(1-eps) log p_t - eps/C sum_c log p_c with log p_c = z_c - lse */
    double loss = lse - (1.0 - eps) * z[t] - eps / C * sz;
    float wp = (float)(w / se), wu = (float)(w * eps / C);
    for (int c = 0; c < C; c++)
        d[c] = d[c] * wp - wu;
    d[t] -= (float)(w * (1.0 - eps));
    *correct = arg == t;
    return loss;
}

void upm_cpu_xent_fwd_bwd(upm_backend *be, float *out, float *dlogits, const float *logits, const int32_t *target,
                          int rows, int C, float eps, float scale)
{
    out[0] = 0.0f;
    out[1] = 0.0f;
    if (rows <= 0 || C <= 0)
        return;
    upm_cpu_threads(be);
    int valid = 0; /* targets outside [0, C) are ignored like negative ones */
    for (int r = 0; r < rows; r++)
        valid += target[r] >= 0 && target[r] < C;
    double w = valid ? (double)scale / valid : 0.0;
    size_t chunk = upm_cpu_chunk((size_t)rows, 1);
    int nc = (int)(((size_t)rows + chunk - 1) / chunk);
    double part[UPM_CPU_MAX_CHUNKS];
    int hits[UPM_CPU_MAX_CHUNKS];
#pragma omp parallel for schedule(static) if ((size_t)rows * (size_t)C >= UPM_CPU_PAR_MIN)
    for (int ci = 0; ci < nc; ci++) {
        size_t lo = (size_t)ci * chunk, hi = lo + chunk < (size_t)rows ? lo + chunk : (size_t)rows;
        double sum = 0.0;
        int h = 0;
        for (size_t r = lo; r < hi; r++) {
            float *d = dlogits + r * C;
            int t = target[r], ok = 0;
            if (t < 0 || t >= C) {
                memset(d, 0, (size_t)C * sizeof *d);
                continue;
            }
            sum += xent_row(d, logits + r * C, t, C, eps, w, &ok);
            h += ok;
        }
        part[ci] = sum;
        hits[ci] = h;
    }
    double total = 0.0;
    int correct = 0;
    for (int ci = 0; ci < nc; ci++) {
        total += part[ci];
        correct += hits[ci];
    }
    out[0] = valid ? (float)(total / valid) : 0.0f;
    out[1] = (float)correct;
}
