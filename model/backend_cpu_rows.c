/* The CPU backend's per-token ops: LayerNorm, GELU, the LayerScale/drop-path residual, embedding and
 * row gathers/scatters, and patch extraction. Row-wise work is parallel over rows; sums over rows
 * (dg, db, dls, scatters with repeated indices) are parallel over column blocks, each output summed
 * by one thread in row order, so the bits never depend on the thread count. */
#include "backend_cpu.h"

#include <math.h>
#include <omp.h>

#define PAR_IF(n) if ((size_t)(n) >= UPM_CPU_PAR_MIN)

static inline int block_width(int cols, int c0)
{
    return cols - c0 < UPM_CPU_COLBLOCK ? cols - c0 : UPM_CPU_COLBLOCK;
}

/* Rows [r0, r1) of a matrix of cols floats a row, for the range checks before the loops of backend_cpu_vec.c. */
static void check_rows(const float *m, int r0, int r1, int cols)
{
    upm_cpu_check(m + (size_t)r0 * cols, (size_t)(r1 - r0) * cols * sizeof *m);
}

/* ---- LayerNorm ---- */

/* The rows' loop of the forward is upm_cpu_vec_layernorm_fwd (backend_cpu_vec.c), in chunks of 16 rows. */
void upm_cpu_layernorm_fwd(upm_backend *be, float *y, float *mean, float *rstd, const float *x, const float *g,
                           const float *b, int rows, int cols, float eps)
{
    if (rows <= 0 || cols <= 0)
        return;
    upm_cpu_threads(be);
    int len = 16, nc = (rows + len - 1) / len;
#pragma omp parallel for schedule(static) PAR_IF((size_t)rows * (size_t)cols)
    for (int k = 0; k < nc; k++) {
        int r0 = k * len, r1 = rows - r0 < len ? rows : r0 + len;
        check_rows(y, r0, r1, cols);
        check_rows(x, r0, r1, cols);
        check_rows(mean, r0, r1, 1);
        check_rows(rstd, r0, r1, 1);
        check_rows(g, 0, 1, cols);
        check_rows(b, 0, 1, cols);
        upm_cpu_vec_layernorm_fwd(y, mean, rstd, x, g, b, r0, r1, cols, eps);
    }
}

/* Column sums over rows (dg, db, dls): each thread takes a contiguous run of UPM_CPU_COLBLOCK-wide
 * blocks and streams the rows once over the run, COLRUN columns at a time. Every column is summed by
 * one thread in row order, so the bits do not depend on the thread count, and rows are read
 * contiguously instead of one 64-byte piece per row and block. */
enum { COLRUN = 256 };

static int col_teams(upm_backend *be, int rows, int cols)
{
    int nt = upm_cpu_threads(be), nb = (cols + UPM_CPU_COLBLOCK - 1) / UPM_CPU_COLBLOCK;
    if ((size_t)rows * (size_t)cols < UPM_CPU_PAR_MIN)
        return 1;
    return nt < nb ? nt : nb;
}

/* The calling thread's columns [c0, c1); 0 when it has none. */
static int col_range(int cols, int *c0, int *c1)
{
    int nb = (cols + UPM_CPU_COLBLOCK - 1) / UPM_CPU_COLBLOCK, t = omp_get_thread_num(), n = omp_get_num_threads();
    int b0 = (int)((long)nb * t / n), b1 = (int)((long)nb * (t + 1) / n);
    *c0 = b0 * UPM_CPU_COLBLOCK;
    *c1 = b1 * UPM_CPU_COLBLOCK < cols ? b1 * UPM_CPU_COLBLOCK : cols;
    return b0 < b1;
}

UPM_CPU_CLONES static void layernorm_dgdb(float *dg, float *db, const float *dy, const float *x, const float *mean,
                           const float *rstd, int rows, int cols, int c0, int c1)
{
    double ag[COLRUN], ab[COLRUN];
    for (; c0 < c1; c0 += COLRUN) {
        int w = c1 - c0 < COLRUN ? c1 - c0 : COLRUN;
        for (int c = 0; c < w; c++)
            ag[c] = ab[c] = 0.0;
        for (int r = 0; r < rows; r++) {
            const float *xr = x + (size_t)r * cols + c0, *dyr = dy + (size_t)r * cols + c0;
            float mu = mean[r], rs = rstd[r];
            for (int c = 0; c < w; c++) {
                ag[c] += (double)dyr[c] * (double)((xr[c] - mu) * rs);
                ab[c] += (double)dyr[c];
            }
        }
        for (int c = 0; c < w; c++) {
            if (dg)
                dg[c0 + c] = (float)((double)dg[c0 + c] + ag[c]);
            if (db)
                db[c0 + c] = (float)((double)db[c0 + c] + ab[c]);
        }
    }
}

/* The rows' loops of LayerNorm's backward are upm_cpu_vec_layernorm_dx and _bwd (backend_cpu_vec.c). */
static void check_bwd_rows(const float *dx, const float *dy, const float *x, const float *mean, const float *rstd,
                           const float *g, int r0, int r1, int cols)
{
    check_rows(dx, r0, r1, cols);
    check_rows(dy, r0, r1, cols);
    check_rows(x, r0, r1, cols);
    check_rows(mean, r0, r1, 1);
    check_rows(rstd, r0, r1, 1);
    check_rows(g, 0, 1, cols);
}

/* One pass when dx and dg/db are all wanted: rows are cut into fixed chunks (their length depends on
 * rows only), each chunk's partial column sums go to scratch, and the partials are added in chunk
 * order, so the bits do not depend on the thread count. Without scratch memory, or without dx, two
 * passes (rows for dx, column runs for dg/db). */
static int layernorm_bwd_fused(upm_backend *be, float *dx, float *dg, float *db, const float *dy, const float *x,
                               const float *mean, const float *rstd, const float *g, int rows, int cols)
{
    int len = (int)upm_cpu_chunk((size_t)rows, 16), nc = (rows + len - 1) / len;
    size_t stride;
    double *part = (double *)upm_cpu_scratch(be, (size_t)nc * 4 * (size_t)cols, 1, &stride);
    if (!part)
        return 0;
#pragma omp parallel for schedule(static) PAR_IF((size_t)rows * (size_t)cols)
    for (int k = 0; k < nc; k++) {
        int r0 = k * len, r1 = rows - r0 < len ? rows : r0 + len;
        double *pk = part + (size_t)k * 2 * cols;
        check_bwd_rows(dx, dy, x, mean, rstd, g, r0, r1, cols);
        upm_cpu_check(pk, 2 * (size_t)cols * sizeof *pk);
        upm_cpu_vec_layernorm_bwd(dx, pk, pk + cols, dy, x, mean, rstd, g, r0, r1, cols);
    }
    for (int c = 0; c < cols; c++) {
        double sg = 0.0, sb = 0.0;
        for (int k = 0; k < nc; k++) {
            sg += part[(size_t)k * 2 * cols + c];
            sb += part[(size_t)k * 2 * cols + cols + c];
        }
        if (dg)
            dg[c] = (float)((double)dg[c] + sg);
        if (db)
            db[c] = (float)((double)db[c] + sb);
    }
    return 1;
}

void upm_cpu_layernorm_bwd(upm_backend *be, float *dx, float *dg, float *db, const float *dy, const float *x,
                           const float *mean, const float *rstd, const float *g, int rows, int cols)
{
    if (rows <= 0 || cols <= 0)
        return;
    upm_cpu_threads(be);
    if (dx && (dg || db) && layernorm_bwd_fused(be, dx, dg, db, dy, x, mean, rstd, g, rows, cols))
        return;
    size_t work = (size_t)rows * (size_t)cols;
    if (dx) {
        int len = 16, nc = (rows + len - 1) / len;
#pragma omp parallel for schedule(static) PAR_IF(work)
        for (int k = 0; k < nc; k++) {
            int r0 = k * len, r1 = rows - r0 < len ? rows : r0 + len;
            check_bwd_rows(dx, dy, x, mean, rstd, g, r0, r1, cols);
            upm_cpu_vec_layernorm_dx(dx, dy, x, mean, rstd, g, r0, r1, cols);
        }
    }
    if (!dg && !db)
        return;
    int nt = col_teams(be, rows, cols);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int c0, c1;
        if (col_range(cols, &c0, &c1))
            layernorm_dgdb(dg, db, dy, x, mean, rstd, rows, cols, c0, c1);
    }
}

/* ---- GELU ---- */

/* The loops are upm_cpu_vec_gelu_fwd and _bwd (backend_cpu_vec.c). */
enum { GELU_CHUNK = 8192 };

void upm_cpu_gelu_fwd(upm_backend *be, float *y, const float *x, size_t n)
{
    upm_cpu_threads(be);
    size_t nc = (n + GELU_CHUNK - 1) / GELU_CHUNK;
#pragma omp parallel for schedule(static) PAR_IF(n)
    for (size_t c = 0; c < nc; c++) {
        size_t lo = c * GELU_CHUNK;
        size_t len = n - lo < GELU_CHUNK ? n - lo : GELU_CHUNK;
        upm_cpu_check(y + lo, len * sizeof *y);
        upm_cpu_check(x + lo, len * sizeof *x);
        upm_cpu_vec_gelu_fwd(y + lo, x + lo, len);
    }
}

void upm_cpu_gelu_bwd(upm_backend *be, float *dx, const float *dy, const float *x, size_t n)
{
    upm_cpu_threads(be);
    size_t nc = (n + GELU_CHUNK - 1) / GELU_CHUNK;
#pragma omp parallel for schedule(static) PAR_IF(n)
    for (size_t c = 0; c < nc; c++) {
        size_t lo = c * GELU_CHUNK;
        size_t len = n - lo < GELU_CHUNK ? n - lo : GELU_CHUNK;
        upm_cpu_check(dx + lo, len * sizeof *dx);
        upm_cpu_check(dy + lo, len * sizeof *dy);
        upm_cpu_check(x + lo, len * sizeof *x);
        upm_cpu_vec_gelu_bwd(dx + lo, dy + lo, x + lo, len);
    }
}

/* ---- LayerScale + drop path residual ---- */

void upm_cpu_residual_fwd(upm_backend *be, float *y, const float *x, const float *f, const float *ls,
                          const float *keep, const int32_t *seq_of, int rows, int cols)
{
    if (rows <= 0 || cols <= 0)
        return;
    upm_cpu_threads(be);
#pragma omp parallel for schedule(static) PAR_IF((size_t)rows * (size_t)cols)
    for (int r = 0; r < rows; r++) {
        float k = keep ? keep[seq_of[r]] : 1.0f;
        size_t o = (size_t)r * cols;
        for (int c = 0; c < cols; c++)
            y[o + c] = x[o + c] + ls[c] * f[o + c] * k;
    }
}

UPM_CPU_CLONES static void residual_dls(float *dls, const float *dy, const float *f, const float *keep,
                                        const int32_t *seq_of, int rows, int cols, int c0, int c1)
{
    double acc[COLRUN];
    for (; c0 < c1; c0 += COLRUN) {
        int w = c1 - c0 < COLRUN ? c1 - c0 : COLRUN;
        for (int c = 0; c < w; c++)
            acc[c] = 0.0;
        for (int r = 0; r < rows; r++) {
            float k = keep ? keep[seq_of[r]] : 1.0f;
            if (k == 0.0f) /* a dropped sequence contributes nothing */
                continue;
            const float *fr = f + (size_t)r * cols + c0, *dyr = dy + (size_t)r * cols + c0;
            for (int c = 0; c < w; c++)
                acc[c] += (double)k * (double)fr[c] * (double)dyr[c];
        }
        for (int c = 0; c < w; c++)
            dls[c0 + c] = (float)((double)dls[c0 + c] + acc[c]);
    }
}

void upm_cpu_residual_bwd(upm_backend *be, float *dx, float *df, float *dls, const float *dy, const float *f,
                          const float *ls, const float *keep, const int32_t *seq_of, int rows, int cols)
{
    if (rows <= 0 || cols <= 0)
        return;
    upm_cpu_threads(be);
    size_t work = (size_t)rows * (size_t)cols;
    if (dx || df) {
#pragma omp parallel for schedule(static) PAR_IF(work)
        for (int r = 0; r < rows; r++) {
            float k = keep ? keep[seq_of[r]] : 1.0f;
            size_t o = (size_t)r * cols;
            if (dx)
                for (int c = 0; c < cols; c++)
                    dx[o + c] += dy[o + c];
            if (df)
                for (int c = 0; c < cols; c++)
                    df[o + c] += k * ls[c] * dy[o + c];
        }
    }
    if (!dls)
        return;
    int nt = col_teams(be, rows, cols);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int c0, c1;
        if (col_range(cols, &c0, &c1))
            residual_dls(dls, dy, f, keep, seq_of, rows, cols, c0, c1);
    }
}

/* ---- embeddings and row movement (negative indices are skipped / give zero rows) ---- */

void upm_cpu_gather_add(upm_backend *be, float *Y, const float *T, const int32_t *idx, int n, int cols)
{
    if (n <= 0 || cols <= 0)
        return;
    upm_cpu_threads(be);
#pragma omp parallel for schedule(static) PAR_IF((size_t)n * (size_t)cols)
    for (int r = 0; r < n; r++) {
        if (idx[r] < 0)
            continue;
        float *y = Y + (size_t)r * cols;
        const float *t = T + (size_t)idx[r] * cols;
        for (int c = 0; c < cols; c++)
            y[c] += t[c];
    }
}

/* Serves scatter_add and scatter_rows_add. Parallel over column blocks with the rows in order, so
 * repeated indices add up in the same order on every call and for every thread count. */
void upm_cpu_scatter_add(upm_backend *be, float *dT, const float *dY, const int32_t *idx, int n, int cols)
{
    if (n <= 0 || cols <= 0)
        return;
    upm_cpu_threads(be);
    int nb = (cols + UPM_CPU_COLBLOCK - 1) / UPM_CPU_COLBLOCK;
#pragma omp parallel for schedule(static) PAR_IF((size_t)n * (size_t)cols)
    for (int blk = 0; blk < nb; blk++) {
        int c0 = blk * UPM_CPU_COLBLOCK, w = block_width(cols, c0);
        for (int r = 0; r < n; r++) {
            if (idx[r] < 0)
                continue;
            float *t = dT + (size_t)idx[r] * cols + c0;
            const float *y = dY + (size_t)r * cols + c0;
            for (int c = 0; c < w; c++)
                t[c] += y[c];
        }
    }
}

void upm_cpu_gather_rows(upm_backend *be, float *Y, const float *X, const int32_t *idx, int n, int cols)
{
    if (n <= 0 || cols <= 0)
        return;
    upm_cpu_threads(be);
#pragma omp parallel for schedule(static) PAR_IF((size_t)n * (size_t)cols)
    for (int r = 0; r < n; r++) {
        float *y = Y + (size_t)r * cols;
        if (idx[r] < 0)
            memset(y, 0, (size_t)cols * sizeof *y);
        else
            memcpy(y, X + (size_t)idx[r] * cols, (size_t)cols * sizeof *y);
    }
}

/* ---- patches ---- */

void upm_cpu_patchify(upm_backend *be, float *P, const float *pixels, int n, int T, int H, int W)
{
    enum { PS = 16 };
    int gh = H / PS, gw = W / PS;
    if (n <= 0 || T <= 0 || gh <= 0 || gw <= 0)
        return;
    upm_cpu_threads(be);
    int rows = n * T * gh * gw;
    size_t plane = (size_t)H * W;
#pragma omp parallel for schedule(static) PAR_IF((size_t)rows * 3 * PS * PS)
    for (int r = 0; r < rows; r++) {
        int px = r % gw, py = (r / gw) % gh, frame = r / (gw * gh); /* frame = b*T + t */
        float *p = P + (size_t)r * 3 * PS * PS;
        for (int ch = 0; ch < 3; ch++) {
            const float *src = pixels + ((size_t)frame * 3 + ch) * plane + (size_t)py * PS * W + (size_t)px * PS;
            for (int y = 0; y < PS; y++)
                memcpy(p + (ch * PS + y) * PS, src + (size_t)y * W, PS * sizeof *p);
        }
    }
}
