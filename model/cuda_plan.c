/* Host-side arithmetic of the CUDA backend (cuda_plan.h). */
#include "cuda_plan.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

static int parse_index(const char *s, long *v)
{
    char *end;
    errno = 0;
    *v = strtol(s, &end, 10);
    return !(errno || end == s || *end || *v < 0 || *v > 1 << 20);
}

int upm_cuda_pick_device(int ndev, const char *(*getenv_fn)(const char *), char *why, size_t cap)
{
    static const char *local[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID", "LOCAL_RANK"};
    long v;
    if (ndev < 1) {
        snprintf(why, cap, "no CUDA device");
        return -1;
    }
    const char *dev = getenv_fn("UPMOE_CUDA_DEVICE");
    if (dev && *dev) {
        if (!parse_index(dev, &v)) {
            snprintf(why, cap, "UPMOE_CUDA_DEVICE='%s' is not a device number", dev);
            return -1;
        }
        if (v >= ndev) {
            snprintf(why, cap, "UPMOE_CUDA_DEVICE=%ld but %d device%s visible", v, ndev, ndev == 1 ? " is" : "s are");
            return -1;
        }
        return (int)v;
    }
    for (size_t i = 0; i < sizeof local / sizeof *local; i++) {
        const char *s = getenv_fn(local[i]);
        if (!s || !*s)
            continue;
        if (!parse_index(s, &v)) {
            snprintf(why, cap, "%s='%s' is not a local rank", local[i], s);
            return -1;
        }
        const char *vis = getenv_fn("CUDA_VISIBLE_DEVICES");
        if (v >= ndev && ndev == 1 && vis && *vis) /* the launcher bound one GPU to this rank (srun --gpus-per-task) */
            return 0;
        if (v >= ndev) {
            snprintf(why, cap,
                     "local rank %ld (%s) has no GPU of its own: %d visible on this node; start at most %d rank%s "
                     "per node (one GPU per rank)",
                     v, local[i], ndev, ndev, ndev == 1 ? "" : "s");
            return -1;
        }
        return (int)v;
    }
    return 0;
}

unsigned upm_cuda_blocks(size_t n, unsigned threads, unsigned max_blocks)
{
    if (!threads)
        threads = 1;
    size_t b = (n + threads - 1) / threads;
    if (b > max_blocks)
        b = max_blocks;
    return b ? (unsigned)b : 1u;
}

upm_cuda_gemm_args upm_cuda_gemm_map(int ta, int tb, int M, int N, int K, int lda, int ldb, int ldc)
{
    upm_cuda_gemm_args g;
    g.first_is_b = 1;
    g.transa = tb != 0, g.transb = ta != 0;
    g.m = N, g.n = M, g.k = K;
    g.lda = ldb, g.ldb = lda, g.ldc = ldc;
    return g;
}

void upm_cuda_sum_run(size_t n, int p, size_t *lo, size_t *hi)
{
    size_t per = (n + UPM_CUDA_SUM_PARTS - 1) / UPM_CUDA_SUM_PARTS;
    size_t a = (size_t)p * per, b = a + per;
    *lo = a < n ? a : n;
    *hi = b < n ? b : n;
}

size_t upm_cuda_attn_seq_bytes(int S, int D, int heads)
{
    return ((size_t)7 * (size_t)S * (size_t)D + (size_t)heads * (size_t)S * (size_t)S) * sizeof(float);
}

size_t upm_cuda_attn_ws(int nseq, int S, int D, int heads, size_t cap)
{
    size_t per = upm_cuda_attn_seq_bytes(S, D, heads), all = per * (size_t)(nseq > 0 ? nseq : 0);
    return all <= cap ? all : per > cap ? per : cap / per * per;
}

int upm_cuda_attn_chunk(int nseq, int S, int D, int heads, size_t ws_bytes)
{
    size_t per = upm_cuda_attn_seq_bytes(S, D, heads);
    if (nseq < 1 || per == 0)
        return 0;
    size_t n = ws_bytes / per;
    return n > (size_t)nseq ? nseq : (int)n;
}

int upm_cuda_col_runs(int rows)
{
    return rows < 1 ? 1 : rows < UPM_CUDA_COL_RUNS ? rows : UPM_CUDA_COL_RUNS;
}
