/* upmoe-step-bench: times one training step of the encoder on an image-classification batch (forward,
 * backward, AdamW over every parameter), or with --infer one evaluation forward (--merged: of the model
 * merged for the batch's task, paper §3.3), for any routing, and measures how close its matrix products come
 * to this machine's sgemm throughput: every gemm call of a step is recorded, each distinct shape is then
 * timed alone, and the sum of those ideal times over the step's time is the step's GEMM efficiency.
 * tools/bench/train_step runs it next to PyTorch, tools/bench/routing for every routing. Not a test. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "merge.h"
#include "model.h"
#include "optim.h"
#include "rng.h"

#define PROG "upmoe-step-bench"
#define MAX_SHAPES 256

typedef struct shape {
    int ct, ta, tb, M, N, K, lda, ldb, ldc; /* ct: the compute type (gemm_ct's; gemm's is fp32) */
    long calls;
} shape;

static upm_backend *inner;
static shape shapes[MAX_SHAPES];
static int nshapes, recording;
static double gemm_flops;

static void record(upm_dtype ct, int ta, int tb, int M, int N, int K, int lda, int ldb, int ldc)
{
    if (!recording)
        return;
    gemm_flops += 2.0 * M * N * K;
    int i = 0;
    while (i < nshapes && !(shapes[i].ct == (int)ct && shapes[i].ta == ta && shapes[i].tb == tb && shapes[i].M == M &&
                            shapes[i].N == N && shapes[i].K == K))
        i++;
    if (i == nshapes && nshapes < MAX_SHAPES)
        shapes[nshapes++] = (shape){(int)ct, ta, tb, M, N, K, lda, ldb, ldc, 0};
    if (i < nshapes)
        shapes[i].calls++;
}

static void rec_gemm(upm_backend *be, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc)
{
    (void)be;
    record(UPM_F32, ta, tb, M, N, K, lda, ldb, ldc);
    inner->gemm(inner, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

static void rec_gemm_ct(upm_backend *be, upm_dtype ct, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                        int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    (void)be;
    record(ct, ta, tb, M, N, K, lda, ldb, ldc);
    inner->gemm_ct(inner, ct, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* Seconds one call of shape s takes alone (median of a few repetitions after a warm-up). */
static double time_shape(const shape *s)
{
    size_t a = (size_t)(s->ta ? s->K : s->M) * s->lda, b = (size_t)(s->tb ? s->N : s->K) * s->ldb,
           c = (size_t)s->M * s->ldc;
    float *A = inner->alloc(inner, a * 4 + 4), *B = inner->alloc(inner, b * 4 + 4), *C = inner->alloc(inner, c * 4 + 4);
    double best = 1e30;
    int reps = (int)fmin(50, fmax(3, 2e8 / (2.0 * s->M * s->N * s->K + 1)));
    inner->gemm_ct(inner, (upm_dtype)s->ct, s->ta, s->tb, s->M, s->N, s->K, 1, A, s->lda, B, s->ldb, 0, C, s->ldc);
    inner->sync(inner);
    for (int r = 0; r < 5; r++) {
        double t = upm_monotonic_s();
        for (int i = 0; i < reps; i++)
            inner->gemm_ct(inner, (upm_dtype)s->ct, s->ta, s->tb, s->M, s->N, s->K, 1, A, s->lda, B, s->ldb, 1, C,
                           s->ldc);
        inner->sync(inner); /* a GPU's calls are queued: wait for them */
        t = (upm_monotonic_s() - t) / reps;
        best = t < best ? t : best;
    }
    inner->free(inner, A), inner->free(inner, B), inner->free(inner, C);
    return best;
}

int main(int argc, char **argv)
{
    int batch = 32, image = 160, steps = 5, warmup = 2, threads = 0, json = 0, verbose = 0, infer = 0, merged = 0;
    int topk = 0; /* 0: the preset's */
    const char *backend = NULL, *size = "ti", *precision = NULL;
    upm_model_config cfg;
    upm_model_config_preset("ti", &cfg, NULL);
    upm_moe_kind moe = UPM_MOE_ATTRIBUTE;
    upm_err err = {0};
    static const struct option opts[] = {{"moe", 1, 0, 'm'}, {"batch", 1, 0, 'b'}, {"image", 1, 0, 'i'},
                                         {"steps", 1, 0, 's'}, {"warmup", 1, 0, 'w'}, {"threads", 1, 0, 't'},
                                         {"json", 0, 0, 'j'}, {"shapes", 0, 0, 'v'}, {"backend", 1, 0, 'B'},
                                         {"model", 1, 0, 'M'}, {"precision", 1, 0, 'p'}, {"infer", 0, 0, 'I'},
                                         {"merged", 0, 0, 'G'}, {"topk", 1, 0, 'k'}, {"help", 0, 0, 'h'},
                                         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            if (upm_moe_kind_parse(optarg, 1, &moe, &err)) {
                fprintf(stderr, PROG ": error: %s\n", err.msg);
                return 2;
            }
            break;
        case 'I': infer = 1; break;
        case 'G': merged = infer = 1; break;
        case 'M': size = optarg; break;
        case 'p': precision = optarg; break;
        case 'b': batch = atoi(optarg); break;
        case 'i': image = atoi(optarg); break;
        case 's': steps = atoi(optarg); break;
        case 'w': warmup = atoi(optarg); break;
        case 't': threads = atoi(optarg); break;
        case 'j': json = 1; break;
        case 'B': backend = optarg; break;
        case 'k': topk = atoi(optarg); break;
        case 'v': verbose = 1; break;
        case 'h':
            printf("usage: " PROG " [--model ti|s|b|l] [--moe KIND] [--infer [--merged]] [--batch 32] [--image 160] "
                   "[--steps 5] [--warmup 2] [--threads N] [--backend cpu|debug|cuda] [--precision fp32|bf16] [--topk K] "
                   "[--json] [--shapes]\nTimes a training step of Uni-Perceiver (default Ti) on an image batch, or with --infer an "
                   "evaluation forward (--merged: of the experts merged for the batch's task). KIND: %s.\n",
                   upm_moe_kind_names(1));
            return 0;
        default: return 2;
        }
    }
    if (batch < 1 || image < 16 || image % 16 || steps < 1 || warmup < 0 || topk < 0) {
        fprintf(stderr, PROG ": error: bad arguments (see --help)\n");
        return 2;
    }
    if (upm_model_config_preset(size, &cfg, &err)) {
        fprintf(stderr, PROG ": error: %s\n", err.msg);
        return 2;
    }
    cfg.moe = moe;
    if (upm_moe_needs_task(moe)) { /* a table of three tasks (paper Table 3's), the batch is the first's */
        cfg.task_slots = cfg.ntasks = 3;
        strcpy(cfg.task_names[0], "classification"), strcpy(cfg.task_names[1], "caption"), strcpy(cfg.task_names[2], "mlm");
        if (moe == UPM_MOE_TASK_SPECIFIC)
            cfg.experts = 3, cfg.topk = 1;
    }
    if (upm_moe_token_routed(moe))
        cfg.gate_noise = 0;
    if (topk)
        cfg.topk = topk;
    if (merged && !upm_moe_routed(moe)) {
        fprintf(stderr, PROG ": error: --merged needs a routing that merges (attribute, modality, task, task-specific)\n");
        return 2;
    }
    upm_backend rec;
    upm_model *m = NULL;
    if (upm_backend_open(backend, &(upm_backend_opts){.threads = threads}, &inner, &err)) {
        fprintf(stderr, PROG ": error: %s\n", err.msg);
        return 1;
    }
    rec = *inner;
    rec.gemm = rec_gemm;
    rec.gemm_ct = rec_gemm_ct;
    upm_optim opt;
    upm_optim_config oc;
    upm_optim_config_default(&oc);
    oc.total_steps = 1000;
    if (upm_model_new(&cfg, &rec, 1, &m, &err) || upm_optim_init(&opt, m, &oc, &err) ||
        upm_precision_parse(precision, inner, &m->compute, &err)) {
        fprintf(stderr, PROG ": error: %s\n", err.msg);
        return 1;
    }
    /* one 160 px image batch: SPE + 100 patches per image, the image-classification attribute byte */
    size_t npx = (size_t)batch * 3 * image * image;
    int tok = (image / 16) * (image / 16);
    float *pixels = malloc(npx * sizeof(float)), *R = malloc(sizeof(float) * (size_t)batch * cfg.dim);
    uint8_t *attrs = malloc((size_t)batch * tok);
    upm_rng r = upm_rng_stream(1, 1, 2, 3, 4);
    for (size_t i = 0; i < npx; i++)
        pixels[i] = (float)upm_rng_normal(&r);
    for (size_t i = 0; i < (size_t)batch * cfg.dim; i++)
        R[i] = (float)upm_rng_normal(&r) / (float)batch;
    memset(attrs, 0x99, (size_t)batch * tok);
    upm_seq_input in = {.nseq = batch, .spe_attr = 0x99, .nseg = 1};
    in.seg[0] = (upm_seq_segment){.kind = UPM_SEG_IMAGE, .T = 1, .H = image, .W = image, .pixels = pixels,
                                  .attrs = attrs};
    float *dU = inner->alloc(inner, sizeof(float) * (size_t)batch * cfg.dim);
    inner->upload(inner, dU, R, sizeof(float) * (size_t)batch * cfg.dim); /* loss = sum(U * R): a fixed dL/dU */
    in.task = upm_moe_needs_task(moe) ? 1 : 0;
    upm_model *run = m; /* the model timed: --merged times the experts merged for the batch's patterns */
    if (merged && upm_model_merge(m, (const uint8_t[]){0x99}, 1, 0, in.task, &run, &err)) {
        fprintf(stderr, PROG ": error: %s\n", err.msg);
        return 1;
    }
    upm_pass *p = upm_pass_new();
    upm_pass_opts train_opts = {.train = 1}; /* training passes (token routing: training capacity, balance) */
    double best = 1e30; /* the fastest step: the VM is shared, noise only ever adds time */
    float st[UPM_NSTATS];
    double assignments = 0;
    for (int s = 0; s < warmup + steps; s++) {
        recording = s == warmup; /* record the gemm calls of one timed step */
        double t = upm_monotonic_s();
        upm_model_zero_grad(run);
        if (upm_pass_forward(run, p, &in, infer ? NULL : &train_opts, &err) ||
            (!infer && upm_pass_backward(run, p, dU, &err))) {
            fprintf(stderr, PROG ": error: %s\n", err.msg);
            return 1;
        }
        float gn, lr;
        if (!infer && upm_optim_step(&opt, m, &gn, &lr, &err)) {
            fprintf(stderr, PROG ": error: %s\n", err.msg);
            return 1;
        }
        assignments = run->route_assignments;
        upm_model_stats_read(run, st); /* the step's statistics, and its wait */
        double dt = upm_monotonic_s() - t;
        if (s >= warmup && dt < best)
            best = dt;
    }
    recording = 0;
    double step = best, ideal = 0;
    for (int i = 0; i < nshapes; i++) {
        double ts = time_shape(&shapes[i]);
        ideal += shapes[i].calls * ts;
        if (verbose)
            fprintf(stderr, "  gemm %c%c M %5d N %7d K %5d  x%-3ld %7.2f ms each  %6.1f GFLOP/s\n", shapes[i].ta ? 'T' : 'N',
                    shapes[i].tb ? 'T' : 'N', shapes[i].M, shapes[i].N, shapes[i].K, shapes[i].calls, ts * 1e3,
                    2.0 * shapes[i].M * shapes[i].N * shapes[i].K / ts / 1e9);
    }
    double gflop = gemm_flops / 1e9, dropped = assignments > 0 ? st[UPM_STAT_DROPPED] / assignments : -1;
    const char *mode = merged ? "infer-merged" : infer ? "infer" : "train";
    /* memory: the parameters (training: + gradients and AdamW's two moments) and the pass's activations */
    double param_mb = (double)run->L.total * 4 * (infer ? 1 : 4) / 1048576, act_mb = (double)upm_pass_bytes(p) / 1048576;
    if (json)
        printf("{\"model\": \"%s\", \"backend\": \"%s\", \"precision\": \"%s\", \"moe\": \"%s\", \"topk\": %d, "
               "\"mode\": \"%s\", \"batch\": %d, \"tokens\": %d, \"parameters\": %zu, \"step_ms\": %.2f, \"param_mb\": %.1f, "
               "\"activation_mb\": %.1f, \"dropped\": %.4f, "
               "\"gemm_gflop\": %.2f, \"gemm_ideal_ms\": %.2f, \"gemm_share\": %.3f, \"gemm_gflops_alone\": %.1f}\n",
               size, inner->name, m->compute == UPM_BF16 ? "bf16" : "fp32", upm_moe_kind_name(moe), cfg.topk, mode, batch, tok + 1,
               upm_layout_count(&run->L), step * 1e3, param_mb, act_mb, dropped, gflop, ideal * 1e3, ideal / step,
               gflop / ideal);
    else
        printf("%s %s %s on %s, batch %d x %d tokens, %zu parameters: %.1f ms; its GEMMs (%.1f GFLOP, %d shapes) "
               "take %.1f ms alone at %.0f GFLOP/s: %.0f%% of the step\n",
               upm_moe_kind_name(moe), size, mode, inner->name, batch, tok + 1, upm_layout_count(&run->L), step * 1e3,
               gflop, nshapes, ideal * 1e3, gflop / ideal, 100 * ideal / step);
    upm_pass_free(run, p);
    if (run != m)
        upm_model_free(run);
    upm_optim_free(&opt, m);
    inner->free(inner, dU);
    upm_model_free(m);
    upm_backend_free(inner);
    free(pixels), free(R), free(attrs);
    return 0;
}
