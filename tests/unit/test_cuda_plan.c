/* The CUDA backend's host-side arithmetic (model/cuda_plan.c), on the CPU: which GPU a rank takes from the
 * launcher's variables (a GPU bound per rank included) and the errors for bad ones; launch geometry; the row-major -> cuBLAS mapping, run
 * through a naive column-major SGEMM written from the BLAS definition and compared with the row-major
 * product for every transpose pair and padded leading dimensions; the deterministic reductions'
 * partition (covers every element once, depends on n only); attention chunking and the workspace it
 * asks for. The GPU side itself: tools/gpu-check. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cuda_plan.h"

static const char *vars[8][2];

static const char *fake_getenv(const char *name)
{
    for (int i = 0; i < 8 && vars[i][0]; i++)
        if (!strcmp(vars[i][0], name))
            return vars[i][1];
    return NULL;
}

static int pick(int ndev, const char *a, const char *av, const char *b, const char *bv, char *why)
{
    memset(vars, 0, sizeof vars);
    vars[0][0] = a, vars[0][1] = av, vars[1][0] = b, vars[1][1] = bv;
    return upm_cuda_pick_device(ndev, fake_getenv, why, 256);
}

/* Column-major C = alpha op(A) op(B) + beta C, as the reference BLAS defines SGEMM. */
static void sgemm_colmajor(int ta, int tb, int m, int n, int k, const float *A, int lda, const float *B, int ldb, float *C,
                           int ldc)
{
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            double s = 0;
            for (int l = 0; l < k; l++)
                s += (double)(ta ? A[l + (size_t)i * lda] : A[i + (size_t)l * lda]) *
                     (tb ? B[j + (size_t)l * ldb] : B[l + (size_t)j * ldb]);
            C[i + (size_t)j * ldc] = (float)s;
        }
}

static void test_gemm_map(void)
{
    enum { M = 5, N = 7, K = 3 };
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int lda = (ta ? M : K) + 2, ldb = (tb ? K : N) + 1, ldc = N + 3;
            float A[(M + K) * 12], B[(N + K) * 12], C[M * (N + 3)], want[M * N];
            for (int i = 0; i < (M + K) * 12; i++)
                A[i] = (float)((i * 7) % 11) - 5.0f;
            for (int i = 0; i < (N + K) * 12; i++)
                B[i] = (float)((i * 5) % 13) - 6.0f;
            for (int i = 0; i < M; i++) /* the row-major product by its definition */
                for (int j = 0; j < N; j++) {
                    double s = 0;
                    for (int l = 0; l < K; l++)
                        s += (double)(ta ? A[l * lda + i] : A[i * lda + l]) * (tb ? B[j * ldb + l] : B[l * ldb + j]);
                    want[i * N + j] = (float)s;
                }
            upm_cuda_gemm_args g = upm_cuda_gemm_map(ta, tb, M, N, K, lda, ldb, ldc);
            CHECK(g.first_is_b == 1);
            memset(C, 0, sizeof C);
            sgemm_colmajor(g.transa, g.transb, g.m, g.n, g.k, B, g.lda, A, g.ldb, C, g.ldc);
            int ok = 1;
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++)
                    ok &= C[i * ldc + j] == want[i * N + j];
            CHECK(ok);
        }
}

int main(void)
{
    char why[256];
    CHECK(pick(4, NULL, NULL, NULL, NULL, why) == 0); /* no launcher: GPU 0 */
    CHECK(pick(4, "OMPI_COMM_WORLD_LOCAL_RANK", "2", NULL, NULL, why) == 2);
    CHECK(pick(4, "SLURM_LOCALID", "3", NULL, NULL, why) == 3);
    CHECK(pick(4, "LOCAL_RANK", "1", "OMPI_COMM_WORLD_LOCAL_RANK", "0", why) == 0); /* Open MPI's first */
    CHECK(pick(4, "UPMOE_CUDA_DEVICE", "1", "SLURM_LOCALID", "3", why) == 1);       /* the override wins */
    CHECK(pick(1, "SLURM_LOCALID", "3", "CUDA_VISIBLE_DEVICES", "3", why) == 0); /* srun --gpus-per-task=1 */
    CHECK(pick(1, "SLURM_LOCALID", "3", NULL, NULL, why) == -1); /* four ranks sharing one GPU: refused */
    CHECK(pick(2, "SLURM_LOCALID", "2", NULL, NULL, why) == -1);
    CHECK(strstr(why, "local rank 2 (SLURM_LOCALID) has no GPU of its own: 2 visible") != NULL);
    CHECK(pick(2, "OMPI_COMM_WORLD_LOCAL_RANK", "x1", NULL, NULL, why) == -1 && strstr(why, "not a local rank"));
    CHECK(pick(2, "UPMOE_CUDA_DEVICE", "-1", NULL, NULL, why) == -1 && strstr(why, "not a device number"));
    CHECK(pick(1, "UPMOE_CUDA_DEVICE", "1", NULL, NULL, why) == -1 && strstr(why, "1 device is visible"));
    CHECK(pick(0, NULL, NULL, NULL, NULL, why) == -1 && strstr(why, "no CUDA device"));

    CHECK(upm_cuda_blocks(0, 256, 100) == 1 && upm_cuda_blocks(256, 256, 100) == 1);
    CHECK(upm_cuda_blocks(257, 256, 100) == 2 && upm_cuda_blocks(1 << 30, 256, 100) == 100);

    test_gemm_map();

    size_t ns[] = {0, 1, 255, 256, 257, 1000003};
    for (size_t t = 0; t < sizeof ns / sizeof *ns; t++) { /* the partials cover [0, n) once, in order */
        size_t next = 0;
        int ok = 1;
        for (int p = 0; p < UPM_CUDA_SUM_PARTS; p++) {
            size_t lo, hi;
            upm_cuda_sum_run(ns[t], p, &lo, &hi);
            ok &= (lo == next || lo == hi) && lo <= hi;
            next = hi > next ? hi : next;
        }
        CHECK(ok && next == ns[t]);
    }
    CHECK(upm_cuda_col_runs(0) == 1 && upm_cuda_col_runs(10) == 10 && upm_cuda_col_runs(100000) == UPM_CUDA_COL_RUNS);

    /* B-size attention at 224 px: 197 tokens, 12 x 64; 256 sequences need 1.5 GiB, so a 1 GiB cap cuts chunks */
    size_t per = upm_cuda_attn_seq_bytes(197, 768, 12);
    CHECK(per == (size_t)(7 * 197 * 768 + 12 * 197 * 197) * 4);
    size_t ws = upm_cuda_attn_ws(256, 197, 768, 12, (size_t)1 << 30);
    CHECK(ws <= (size_t)1 << 30 && ws % per == 0);
    int chunk = upm_cuda_attn_chunk(256, 197, 768, 12, ws);
    CHECK(chunk == (int)(((size_t)1 << 30) / per) && chunk < 256);
    CHECK(upm_cuda_attn_ws(8, 197, 768, 12, (size_t)1 << 30) == 8 * per); /* small batches in one chunk */
    CHECK(upm_cuda_attn_chunk(8, 197, 768, 12, 8 * per) == 8);
    CHECK(upm_cuda_attn_ws(4, 197, 768, 12, per / 2) == per); /* never less than one sequence */
    CHECK(upm_cuda_attn_chunk(4, 197, 768, 12, per - 1) == 0);
    printf("B attention: %.1f MB per sequence, chunks of %d sequences in 1 GiB\n", per / 1e6, chunk);
    return CHECK_RESULT("test_cuda_plan");
}
