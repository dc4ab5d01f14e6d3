/* The CPU backend's ops for data-dependent routing (token routing): capacity dispatch, the Switch balance
 * loss, and the row scaling and row dot products of a dispatched MoE linear (docs/model.md, "Token
 * routing"). Dispatch walks the tokens in their priority order, as the definition reads; the balance sums
 * run in a fixed order, so results do not depend on the thread count. */
#include "backend_cpu.h"

#include <stdlib.h>

#include "route_choice.h"

void upm_cpu_moe_dispatch(upm_backend *be, int32_t *idx, float *w, float *stats, const float *G, const int32_t *order,
                          int n, int E, int k, int C)
{
    (void)be;
    if (E <= 0 || C < 0)
        return;
    for (size_t s = 0; s < (size_t)E * C; s++)
        idx[s] = -1, w[s] = 0.0f;
    int fill[4096];
    int *count = E <= 4096 ? fill : calloc((size_t)E, sizeof *count);
    if (!count)
        return;
    for (int e = 0; e < E; e++)
        count[e] = 0;
    double dropped = 0;
    for (int j = 0; j < k; j++)
        for (int t = 0; t < n; t++) {
            const float *g = G + (size_t)order[t] * E;
            int e = upm_route_choice(g, E, j);
            if (e < 0)
                continue;
            if (count[e] < C) {
                size_t s = (size_t)e * C + (size_t)count[e]++;
                idx[s] = order[t], w[s] = g[e];
            } else
                dropped += 1;
        }
    if (count != fill)
        free(count);
    stats[0] += (float)dropped;
}

void upm_cpu_moe_balance(upm_backend *be, float *stats, float *dlogits, const float *probs, const float *G,
                         const int32_t *order, int n, int E, float weight)
{
    (void)be;
    if (n <= 0 || E <= 0)
        return;
    double fl[64], *f = E <= 64 ? fl : calloc((size_t)E, sizeof *f);
    if (!f)
        return;
    double P = 0, loss = 0;
    for (int e = 0; e < E; e++)
        f[e] = 0;
    for (int t = 0; t < n; t++) {
        int e = upm_route_choice(G + (size_t)order[t] * E, E, 0);
        if (e >= 0)
            f[e] += 1.0 / n;
    }
    for (int e = 0; e < E; e++) {
        P = 0;
        for (int t = 0; t < n; t++)
            P += probs[(size_t)order[t] * E + e];
        loss += f[e] * (P / n);
    }
    if (stats)
        stats[0] += (float)(E * loss);
    /* d/dp_te = E f_e / n; through the softmax: dz_tj = p_tj (d_tj - sum_e p_te d_te) */
    for (int t = 0; dlogits && t < n; t++) {
        const float *p = probs + (size_t)order[t] * E;
        float *dz = dlogits + (size_t)order[t] * E;
        double s = 0;
        for (int e = 0; e < E; e++)
            s += p[e] * (E * f[e] / n);
        for (int j = 0; j < E; j++)
            dz[j] += (float)(weight * p[j] * (E * f[j] / n - s));
    }
    if (f != fl)
        free(f);
}

void upm_cpu_scale_rows(upm_backend *be, float *Y, const float *w, int rows, int cols)
{
    if (rows <= 0 || cols <= 0)
        return;
    upm_cpu_threads(be);
#pragma omp parallel for schedule(static) if ((size_t)rows * (size_t)cols >= UPM_CPU_PAR_MIN)
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            Y[(size_t)r * cols + c] *= w[r];
}

/* Columns in blocks that stay in cache across a row's experts, summed in double (the products of two
 * floats are exact there) and rounded once; each element is the same sequence of operations whatever P,
 * the block or the thread, so rows are independent of one another. */
UPM_CPU_CLONES void upm_cpu_expert_mix(upm_backend *be, float *Y, const float *G, const float *W, int P, int E,
                                       size_t n)
{
    enum { BLOCK = 1024 };
    if (P <= 0 || n == 0)
        return;
    upm_cpu_threads(be);
    long nb = (long)((n + BLOCK - 1) / BLOCK);
#pragma omp parallel for schedule(static) if ((size_t)P * n >= UPM_CPU_PAR_MIN)
    for (long b = 0; b < nb; b++) {
        size_t j0 = (size_t)b * BLOCK, len = n - j0 < BLOCK ? n - j0 : BLOCK;
        double acc[BLOCK];
        for (int q = 0; q < P; q++) {
            for (size_t j = 0; j < len; j++)
                acc[j] = 0.0;
            for (int e = 0; e < E; e++) {
                double g = G[(size_t)q * E + e];
                const float *restrict w = W + (size_t)e * n + j0;
                if (g != 0.0)
                    for (size_t j = 0; j < len; j++)
                        acc[j] += g * (double)w[j];
            }
            float *restrict y = Y + (size_t)q * n + j0;
            for (size_t j = 0; j < len; j++)
                y[j] = (float)acc[j];
        }
    }
}

void upm_cpu_row_dot_scatter(upm_backend *be, float *dG, const float *A, const float *B, const int32_t *idx, int rows,
                             int cols, int E, int e)
{
    if (rows <= 0)
        return;
    upm_cpu_threads(be);
#pragma omp parallel for schedule(static) if ((size_t)rows * (size_t)cols >= UPM_CPU_PAR_MIN)
    for (int r = 0; r < rows; r++)
        if (idx[r] >= 0)
            dG[(size_t)idx[r] * E + e] += (float)upm_cpu_dot(A + (size_t)r * cols, B + (size_t)r * cols, (size_t)cols);
}
