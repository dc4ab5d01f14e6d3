/* Host-side arithmetic of the CUDA backend, kept in plain C so that it is unit-tested on machines without
 * a GPU (tests/unit/test_cuda_plan.c): which GPU a rank takes, launch geometry, the row-major to cuBLAS
 * (column-major) argument mapping, the fixed partial counts of deterministic reductions, and how attention
 * is cut into chunks that fit the workspace. */
#ifndef UPM_CUDA_PLAN_H
#define UPM_CUDA_PLAN_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The GPU of this process among ndev visible ones: $UPMOE_CUDA_DEVICE when set (0-based), else the local
 * rank the launcher gives (OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID, MPI_LOCALRANKID, LOCAL_RANK, in that
 * order; the only visible GPU when the launcher bound one to each rank through CUDA_VISIBLE_DEVICES), else 0. getenv_fn: getenv, or a test's table. Returns the ordinal, or -1 with why filled (a bad
 * value, or a local rank without a GPU of its own: one GPU per rank). */
int upm_cuda_pick_device(int ndev, const char *(*getenv_fn)(const char *), char *why, size_t cap);

/* Blocks of `threads` covering n items, at most max_blocks (grid-stride loops cover the rest); >= 1. */
unsigned upm_cuda_blocks(size_t n, unsigned threads, unsigned max_blocks);

/* cuBLAS is column-major: row-major C[M,N] = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, i.e. one
 * cublasSgemm call with the operands swapped. */
typedef struct upm_cuda_gemm_args {
    int transa, transb; /* of the first and second cuBLAS operand (1: transposed) */
    int m, n, k;
    int first_is_b;     /* the first operand is B (always 1; kept explicit for the test) */
    int lda, ldb, ldc;  /* leading dimensions of the first, second operand and C */
} upm_cuda_gemm_args;
upm_cuda_gemm_args upm_cuda_gemm_map(int ta, int tb, int M, int N, int K, int lda, int ldb, int ldc);

/* Deterministic sums of n values: a fixed number of partial sums (independent of the device, so the bits
 * depend only on n), each over a contiguous run, then the partials in order. */
enum { UPM_CUDA_SUM_PARTS = 256 };
/* The run of partial p: [*lo, *hi). */
void upm_cuda_sum_run(size_t n, int p, size_t *lo, size_t *hi);

/* Attention in chunks of sequences. The workspace one sequence needs: its gathered q, k, v, output
 * gradient and q, k, v gradients (7 x S x D floats) and one head-batch of score gradients (heads x S x S). */
size_t upm_cuda_attn_seq_bytes(int S, int D, int heads);
/* The workspace to reserve for nseq sequences: all of them, or as many as fit in cap (at least one). */
size_t upm_cuda_attn_ws(int nseq, int S, int D, int heads, size_t cap);
/* Sequences per chunk with ws_bytes of workspace (<= nseq); 0 when not even one fits. */
int upm_cuda_attn_chunk(int nseq, int S, int D, int heads, size_t ws_bytes);

/* Column sums over rows (bias and LayerNorm gradients) in two passes: rows cut into a number of runs
 * that depends on rows only, a partial per run and column, then the runs in order. */
enum { UPM_CUDA_COL_RUNS = 64 };
int upm_cuda_col_runs(int rows);

#ifdef __cplusplus
}
#endif

#endif
