/* upmoe-train: pretrains the Uni-Perceiver encoder (dense or attribute-MoE) on a catalog mixture with the
 * CPU backend: progress lines, per-step metrics in the catalog, checkpoints, exact resume, and a clean
 * checkpointed stop on SIGINT/SIGTERM/SIGUSR1. Started by mpirun (or srun with PMI) it is one rank of a
 * data-parallel run (docs/distributed.md). */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "bpe.h"
#include "checkpoint.h"
#include "comm.h"
#include "fileio.h"
#include "train.h"
#include "vocab.h"

#define PROG "upmoe-train"

static const char usage[] =
    "usage: " PROG " --mixture NAME --out DIR [options]\n"
    "       " PROG " --resume DIR [options]\n"
    "Trains on a catalog mixture on the CPU. Each step samples one dataset by weight, encodes its batch\n"
    "(inputs, and label texts or paired targets), and applies the task's loss; metrics go to the catalog.\n"
    "\n"
    "  --catalog PATH         the catalog (default: $UPMOE_CATALOG, $UPMOE_HOME/catalog.db, ~/.upmoe/catalog.db)\n"
    "  --mixture NAME         the mixture to train on (required, unless --resume)\n"
    "  --out DIR              checkpoints and trainer state (required)\n"
    "  --resume DIR           continue the run in DIR from its newest checkpoint (bit-exact on the CPU at\n"
    "                         the same --threads: oneDNN's matmuls split their sums by thread count);\n"
    "                         DIR is the run's --out directory, which --out may repeat or leave out. The\n"
    "                         run keeps the options it was started with (mixture, model, schedule, data;\n"
    "                         the checkpoint holds them): given again they must agree, except --steps,\n"
    "                         which extends (or shortens) the run; threads, logging and checkpoints may change\n"
    "  --name NAME            run name in the catalog (default: the base name of --out)\n"
    "  --model ti|s|b|l       size (paper Table 6; default ti)\n"
    "  --moe KIND             Conditional MoE routing (docs/model.md, \"Routings\"): attribute (default; the\n"
    "                         gate reads the token's 8 attribute bits), modality (an embedding of its modality),\n"
    "                         task (an embedding of the task id), task-specific (each task its own weights in\n"
    "                         the MoE linears: experts = task slots, top-1, no gate), token (the gate reads\n"
    "                         the token's representation; capacity, balance loss), context (the token and the\n"
    "                         attention-pooled sequence it sees), or none (dense)\n"
    "  --task-slots N         task and task-specific: rows of the task table (default: the mixture's tasks;\n"
    "                         more leaves room for tasks a resumed run's mixture gains)\n"
    "  --experts N --topk K   experts per MoE linear (8) and experts per token (2)\n"
    "  --moe-every N          MoE in every N-th layer (ti, s: 1; b, l: 2)\n"
    "  --moe-sa 0|1 --moe-ffn 0|1   MoE on attention and/or FFN linears (both)\n"
    "  --dim D --layers N --heads H   custom sizes (after --model)\n"
    "  --drop-path P          stochastic depth rate (size default)\n"
    "  --gate-noise STD       std of the MoE gate-logit noise in training (1/experts; 0 = none): per attribute\n"
    "                         pattern, or per token with token and context routing\n"
    "  --capacity-factor F    token and context routing: each expert takes at most ceil(F * topk * tokens /\n"
    "                         experts) tokens of a pass, the rest are dropped (the residual carries them; 1)\n"
    "  --eval-capacity-factor F   ... in evaluation passes (default 2)\n"
    "  --balance-loss W       token and context routing: weight of the Switch balance loss of every gate (0.01)\n"
    "  --expert-init copy|independent   the experts of an MoE linear start as copies of one draw, so the\n"
    "                         MoE model starts as the dense one, or are drawn each on its own\n"
    "  --gate-renorm 1|0      1: the top-k gate values are renormalised to sum to 1, as the official code does\n"
    "                         (default); 0: Eq. 3 as written (about k/experts of a dense linear's output)\n"
    "  --layerscale V         initial LayerScale of every block (1e-3)\n"
    "  --steps N              training steps (100)\n"
    "  --lr LR --min-lr LR    peak and final learning rate (5e-4, 1e-6); --warmup N steps (5% of --steps)\n"
    "  --weight-decay W       AdamW weight decay on Linear weights (0.05)\n"
    "  --clip C               global gradient-norm clip (0.5; 0 = off)\n"
    "  --adam-eps E --adam-beta2 B   AdamW's epsilon (1e-6) and second-moment decay (0.98), the paper's\n"
    "  --batch N              every dataset's batch size (default: the catalog's)\n"
    "  --batch-scale F        every dataset's catalog batch size times F (rounded, at least 1)\n"
    "  --vocab-targets full|sampled:N   vocab-mlm / vocab-caption candidates: the whole vocabulary (the\n"
    "                         paper's, default) or the batch's targets + N sampled tokens (fast on a CPU)\n"
    "  --image-size S         image side in pixels (160)\n"
    "  --augment paper|light|none   training augmentation of images and videos, for datasets whose catalog\n"
    "                         row does not choose one (default paper: RandomResizedCrop 0.08-1 + flip for\n"
    "                         classification; light: RandomResizedCrop 0.5-1, no flip; none: resize + centre\n"
    "                         crop, as in evaluation); docs/training.md, \"Augmentation\"\n"
    "  --stage2 F:S           from fraction F of the steps on, S-pixel images (the paper: --stage2 0.9:224);\n"
    "                         positions are fixed sin-cos, evaluated on the new grid\n"
    "  --seed S               seed of data order, augmentation, initialisation and noise (1)\n"
    "  --threads N            compute threads (all cores); --loader-threads N decode threads (2). Several\n"
    "                         trainers on one machine: give each its share of the cores, or set\n"
    "                         OMP_WAIT_POLICY=PASSIVE (waiting OpenMP threads spin and slow the others;\n"
    "                         docs/jobs.md)\n"
    "  --backend NAME         where the model computes: cpu, cuda (NVIDIA GPUs), or debug (the CPU ops on\n"
    "                         memory the host cannot touch: finds code that bypasses the backend); default\n"
    "                         $UPMOE_BACKEND, else cpu\n"
    "  --precision fp32|bf16  the linears' matmuls: bf16 rounds their inputs to bfloat16 and accumulates in\n"
    "                         fp32 (tensor cores); gates, attention, norms, losses and AdamW stay fp32.\n"
    "                         Default bf16 on cuda, fp32 elsewhere\n"
    "  --bpe-vocab PATH       CLIP merges file for text tasks (default: $UPMOE_BPE_VOCAB, else the copy\n"
    "                         tools/setup installs next to the programs, else one in the catalog's home)\n"
    "  --log-every N          progress line every N steps (10)\n"
    "\n"
    "data parallel (docs/distributed.md): start it with `mpirun -np N upmoe-train ...` (or srun --mpi=pmix);\n"
    "each rank samples its own task every step, gradients are averaged, rank 0 writes metrics and checkpoints;\n"
    "SIGUSR1 to mpirun (or SIGTERM to any rank) checkpoints and stops every rank after the same step\n"
    "  --comm auto|local|mpi|nccl  communicator (auto: mpi when started by a launcher, else local; with the\n"
    "                         cuda backend the gradients are then summed in device memory by NCCL, MPI\n"
    "                         doing the rest; mpi: everything over MPI; nccl: NCCL for the gradients)\n"
    "  --comm-timeout S       a rank silent for S seconds (dead, stopped) stops the job (60); a live rank that\n"
    "                         falls behind is waited for up to 5x the longest step so far\n"
    "  --readers N            reader threads per dataset stream (2) and --shuffle-block K samples (256):\n"
    "                         both are part of the data order\n"
    "  --reduce-all-experts   also reduce the (zero) gradients of experts no rank used (for measurements)\n"
    "  --no-overlap           reduce the gradients after the backward pass instead of during it (ditto)\n"
    "  --no-prefetch          decode each step's batch when it is needed, not during the step before (the\n"
    "                         same batches either way; for measurements)\n"
    "  --checkpoint-every N   checkpoint every N steps (100), and always at the end; --keep K newest (3)\n"
    "  --job ID --attempt N   set by upmoe-jobs: write to the catalog only while attempt N owns job ID\n"
    "                         (exit status 3 when it no longer does)\n"
    "  --dump-batches DIR     write the initial weights and every step (its batch, gate noise, loss, learning\n"
    "                         rate, gradient norm) as safetensors files, for a replay in another\n"
    "                         implementation (tests/trainer/long_oracle.py); one process, --drop-path 0\n"
    "  --eval-dataset D       evaluate on catalog dataset D during training (repeatable): the full pass of\n"
    "                         upmoe-eval (docs/evaluation.md), results stored with the run and step\n"
    "  --eval-every N         ... after every N steps and the last (default: at each --checkpoint-every)\n"
    "  --eval-limit N         ... on the first N samples of each dataset only\n"
    "  --quiet                no progress lines\n"
    "  -h, --help, --version\n";

static char bpe_path[4096]; /* the merges file found by default (bpe.h) */

#define MAX_EVAL_DATASETS 64
static const char *eval_datasets[MAX_EVAL_DATASETS];

static volatile sig_atomic_t stop;

/* Stop requests are taken by one thread in sigwait, with the signals blocked in every other thread (all
 * are created after this one and inherit the mask). A handler would interrupt whichever thread the kernel
 * picks (a reader, an OpenMP worker, Open MPI's progress thread) in the middle of a system call: under
 * load, a SIGUSR1 forwarded by mpirun corrupted the heap of a rank about once in ten runs. A second
 * Ctrl-C quits at once, without a checkpoint. */
static void *signal_thread(void *arg)
{
    sigset_t *set = arg;
    int interrupts = 0;
    for (;;) {
        int sig = 0;
        if (sigwait(set, &sig) != 0)
            continue;
        if (sig == SIGINT && interrupts++) {
            fprintf(stderr, PROG ": second interrupt: quitting without a checkpoint\n");
            _exit(130);
        }
        stop = 1;
    }
    return NULL;
}

static int catch_stop_signals(void)
{
    static sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    /* mpirun forwards SIGUSR1 to every rank (SIGINT/SIGTERM make it kill the job), Slurm's
     * --signal=USR1@T sends it before the time limit, upmoe-jobs sends it to cancel: the clean stop. */
    sigaddset(&set, SIGUSR1);
    pthread_t th;
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0 || pthread_create(&th, NULL, signal_thread, &set) != 0)
        return -1;
    pthread_detach(th);
    return 0;
}

static int number(const char *s, double lo, double hi, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= lo && v <= hi))
        return -1;
    *out = v;
    return 0;
}

/* The long name of option value `val`, for messages. */
static const char *option_name(const struct option *opts, int val)
{
    for (; opts->name; opts++)
        if (opts->val == val)
            return opts->name;
    return "?";
}

enum { O_CAT = 256, O_MIX, O_OUT, O_RESUME, O_NAME, O_MODEL, O_MOE, O_TASK_SLOTS, O_EXPERTS, O_TOPK, O_EVERY, O_SA, O_FFN,
       O_DIM, O_LAYERS, O_HEADS, O_DROP, O_STEPS, O_LR, O_MINLR, O_WARMUP, O_WD, O_CLIP, O_BATCH, O_IMAGE,
       O_SEED, O_THREADS, O_LTHREADS, O_BPE, O_LOG, O_CKPT, O_KEEP, O_QUIET, O_VERSION, O_VOCAB, O_STAGE2,
       O_COMM, O_COMM_TIMEOUT, O_READERS, O_SHUFFLE, O_ALL_EXPERTS, O_NOISE, O_CAPF, O_ECAPF, O_BALANCE, O_LAYERSCALE, O_NO_OVERLAP, O_JOB, O_ATTEMPT, O_BATCH_SCALE, O_AUGMENT, O_RENORM, O_DUMP, O_EPS, O_BETA2, O_COPIES,
       O_EVAL_DATASET, O_EVAL_EVERY, O_EVAL_LIMIT, O_BACKEND, O_NO_PREFETCH, O_PRECISION };
static const struct option opts[] = {
    {"catalog", 1, 0, O_CAT}, {"mixture", 1, 0, O_MIX}, {"out", 1, 0, O_OUT}, {"resume", 1, 0, O_RESUME},
    {"name", 1, 0, O_NAME}, {"model", 1, 0, O_MODEL}, {"moe", 1, 0, O_MOE}, {"task-slots", 1, 0, O_TASK_SLOTS}, {"experts", 1, 0, O_EXPERTS},
    {"topk", 1, 0, O_TOPK}, {"moe-every", 1, 0, O_EVERY}, {"moe-sa", 1, 0, O_SA}, {"moe-ffn", 1, 0, O_FFN},
    {"dim", 1, 0, O_DIM}, {"layers", 1, 0, O_LAYERS}, {"heads", 1, 0, O_HEADS}, {"drop-path", 1, 0, O_DROP},
    {"steps", 1, 0, O_STEPS}, {"lr", 1, 0, O_LR}, {"min-lr", 1, 0, O_MINLR}, {"warmup", 1, 0, O_WARMUP},
    {"weight-decay", 1, 0, O_WD}, {"clip", 1, 0, O_CLIP}, {"batch", 1, 0, O_BATCH},
    {"image-size", 1, 0, O_IMAGE}, {"seed", 1, 0, O_SEED}, {"threads", 1, 0, O_THREADS},
    {"loader-threads", 1, 0, O_LTHREADS}, {"bpe-vocab", 1, 0, O_BPE}, {"log-every", 1, 0, O_LOG},
    {"checkpoint-every", 1, 0, O_CKPT}, {"keep", 1, 0, O_KEEP}, {"quiet", 0, 0, O_QUIET}, {"vocab-targets", 1, 0, O_VOCAB}, {"stage2", 1, 0, O_STAGE2},
    {"comm", 1, 0, O_COMM}, {"comm-timeout", 1, 0, O_COMM_TIMEOUT}, {"readers", 1, 0, O_READERS},
    {"shuffle-block", 1, 0, O_SHUFFLE}, {"reduce-all-experts", 0, 0, O_ALL_EXPERTS},
    {"gate-noise", 1, 0, O_NOISE}, {"capacity-factor", 1, 0, O_CAPF}, {"eval-capacity-factor", 1, 0, O_ECAPF},
    {"balance-loss", 1, 0, O_BALANCE}, {"layerscale", 1, 0, O_LAYERSCALE},
    {"no-overlap", 0, 0, O_NO_OVERLAP}, {"no-prefetch", 0, 0, O_NO_PREFETCH}, {"precision", 1, 0, O_PRECISION}, {"job", 1, 0, O_JOB}, {"attempt", 1, 0, O_ATTEMPT},
    {"batch-scale", 1, 0, O_BATCH_SCALE}, {"augment", 1, 0, O_AUGMENT}, {"gate-renorm", 1, 0, O_RENORM}, {"dump-batches", 1, 0, O_DUMP}, {"adam-eps", 1, 0, O_EPS}, {"adam-beta2", 1, 0, O_BETA2}, {"expert-init", 1, 0, O_COPIES},
    {"backend", 1, 0, O_BACKEND}, {"eval-dataset", 1, 0, O_EVAL_DATASET}, {"eval-every", 1, 0, O_EVAL_EVERY}, {"eval-limit", 1, 0, O_EVAL_LIMIT},
    {"help", 0, 0, 'h'}, {"version", 0, 0, O_VERSION}, {0, 0, 0, 0}};

/* Options that define the run (its data, model, schedule and numbers): every checkpoint keeps them, and
 * --resume DIR takes them from there. The others (threads, logging, checkpoints, evaluation, where things
 * live) belong to one invocation and may change between the parts of a run. */
static int defines_run(int code)
{
    switch (code) {
    case O_MIX: case O_MODEL: case O_MOE: case O_TASK_SLOTS: case O_EXPERTS: case O_TOPK: case O_EVERY: case O_SA:
    case O_FFN: case O_DIM: case O_LAYERS: case O_HEADS: case O_DROP: case O_STEPS: case O_LR: case O_MINLR:
    case O_WARMUP: case O_WD: case O_CLIP: case O_BATCH: case O_IMAGE: case O_SEED: case O_VOCAB: case O_STAGE2:
    case O_READERS: case O_SHUFFLE: case O_NOISE: case O_CAPF: case O_ECAPF: case O_BALANCE: case O_LAYERSCALE:
    case O_BATCH_SCALE: case O_AUGMENT: case O_RENORM: case O_EPS: case O_BETA2: case O_COPIES: case O_PRECISION:
        return 1;
    default:
        return 0;
    }
}

/* The run-defining options a parse accepted, in order (argv strings, or the saved state's). */
typedef struct run_record {
    int n;
    const char *name[256], *value[256];
} run_record;

/* Parses argv into o and co. final: also the checks and defaults of a command line that runs (a resumed
 * run's saved options are parsed alone first, without them). rec, when given, collects the run-defining
 * options. */
static int parse(int argc, char **argv, upm_train_opts *o, upm_comm_opts *co, int final, run_record *rec)
{
    int c;
    double v;
    int64_t warmup = -1;
    const char *resume_dir = NULL;
    opterr = 0;
    optind = 0; /* a full restart of getopt: main parses more than one list */
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        const char *bad = NULL;
        char badbuf[160];
        switch (c) {
        case O_CAT: o->catalog = optarg; break;
        case O_MIX: o->mixture = optarg; break;
        case O_BACKEND: o->backend = optarg; break;
        case O_OUT: o->out_dir = optarg; break;
        case O_RESUME: o->resume = 1, resume_dir = optarg; break;
        case O_NAME: o->name = optarg; break;
        case O_MODEL: {
            upm_moe_kind moe = o->model.moe;
            upm_err err;
            if (upm_model_config_preset(optarg, &o->model, &err)) {
                fprintf(stderr, PROG ": error: %s\n", err.msg);
                return 2;
            }
            o->model.moe = moe;
            o->model_name = optarg;
            break;
        }
        case O_MOE: {
            upm_err err;
            if (upm_moe_kind_parse(optarg, 1, &o->model.moe, &err)) {
                fprintf(stderr, PROG ": error: %s\n", err.msg);
                return 2;
            }
            break;
        }
#define INT_OPT(CASE, FIELD, LO, HI)                                                                 \
    case CASE:                                                                                       \
        if (number(optarg, LO, HI, &v) || v != (int64_t)v) {                                         \
            snprintf(badbuf, sizeof badbuf, "--%s needs an integer in [%.0f, %.0f]", option_name(opts, CASE), \
                     (double)(LO), (double)(HI));                                                     \
            bad = badbuf;                                                                            \
        } else                                                                                       \
            FIELD = (int)v;                                                                          \
        break;
        INT_OPT(O_EXPERTS, o->model.experts, 1, 256)
        INT_OPT(O_TASK_SLOTS, o->model.task_slots, 1, 64)
        INT_OPT(O_TOPK, o->model.topk, 1, 256)
        INT_OPT(O_EVERY, o->model.moe_every, 1, 1000)
        INT_OPT(O_SA, o->model.moe_sa, 0, 1)
        INT_OPT(O_FFN, o->model.moe_ffn, 0, 1)
        INT_OPT(O_RENORM, o->model.gate_renorm, 0, 1)
        INT_OPT(O_LAYERS, o->model.layers, 1, 1000)
        INT_OPT(O_HEADS, o->model.heads, 1, 1024)
        INT_OPT(O_BATCH, o->batch, 1, 1000000)
        INT_OPT(O_IMAGE, o->image_size, 16, 8192)
        INT_OPT(O_THREADS, o->threads, 0, 4096)
        INT_OPT(O_LTHREADS, o->loader_threads, 1, 256)
        INT_OPT(O_LOG, o->log_every, 0, 1000000000)
        INT_OPT(O_CKPT, o->checkpoint_every, 0, 1000000000)
        INT_OPT(O_KEEP, o->keep, 0, 1000000)
        INT_OPT(O_READERS, o->readers, 1, 16)
        INT_OPT(O_SHUFFLE, o->shuffle_block, 1, 16777216)
        case O_COMM:
            if (!strcmp(optarg, "auto"))
                co->kind = UPM_COMM_AUTO;
            else if (!strcmp(optarg, "local"))
                co->kind = UPM_COMM_LOCAL;
            else if (!strcmp(optarg, "mpi"))
                co->kind = UPM_COMM_MPI, o->nccl = 0;
            else if (!strcmp(optarg, "nccl"))
                co->kind = UPM_COMM_MPI, o->nccl = 1;
            else
                bad = "--comm must be auto, local, mpi or nccl";
            break;
        case O_COMM_TIMEOUT:
            if (number(optarg, 0.1, 1e6, &v))
                bad = "--comm-timeout needs seconds in [0.1, 1e6]";
            else
                co->timeout_s = v;
            break;
        case O_COPIES:
            if (!strcmp(optarg, "copy") || !strcmp(optarg, "independent"))
                o->model.expert_copies = !strcmp(optarg, "copy");
            else
                bad = "--expert-init must be copy or independent";
            break;
        case O_AUGMENT:
            if (upm_augment_parse(optarg, &o->augment) || o->augment == UPM_AUGMENT_INHERIT)
                bad = "--augment must be paper, light or none";
            break;
        case O_ALL_EXPERTS: o->reduce_all_experts = 1; break;
        case O_NO_OVERLAP: o->no_overlap = 1; break;
        case O_NO_PREFETCH: o->no_prefetch = 1; break;
        case O_PRECISION:
            if (strcmp(optarg, "fp32") && strcmp(optarg, "bf16")) {
                fprintf(stderr, "upmoe-train: error: --precision takes fp32 or bf16, not '%s'\n", optarg);
                return 2;
            }
            o->precision = optarg;
            break;
        case O_BATCH_SCALE:
            if (number(optarg, 1e-6, 1e6, &v))
                bad = "--batch-scale needs a factor > 0";
            else
                o->batch_scale = v;
            break;
        case O_JOB:
        case O_ATTEMPT:
            if (number(optarg, 1, 9e15, &v) || v != (int64_t)v)
                bad = c == O_JOB ? "--job needs a job id" : "--attempt needs a positive integer";
            else if (c == O_JOB)
                o->job = (int64_t)v;
            else
                o->attempt = (int64_t)v;
            break;
        case O_LAYERSCALE:
            if (number(optarg, 1e-9, 100, &v))
                bad = "--layerscale needs a value in [1e-9, 100]";
            else
                o->model.layerscale_init = (float)v;
            break;
        case O_CAPF:
        case O_ECAPF:
            if (number(optarg, 1e-6, 1e6, &v) || !(v > 0))
                bad = c == O_CAPF ? "--capacity-factor needs a factor > 0 (at most 1e6)"
                                  : "--eval-capacity-factor needs a factor > 0 (at most 1e6)";
            else
                *(c == O_CAPF ? &o->model.capacity : &o->model.eval_capacity) = (float)v;
            break;
        case O_BALANCE:
            if (number(optarg, 0, 1e3, &v))
                bad = "--balance-loss needs a weight in [0, 1000]";
            else
                o->model.balance = (float)v;
            break;
        case O_NOISE:
            if (number(optarg, 0, 100, &v))
                bad = "--gate-noise needs a std in [0, 100]";
            else
                o->model.gate_noise = (float)v;
            break;
        case O_DIM:
            if (number(optarg, 4, 65536, &v) || v != (int)v)
                bad = "--dim needs an integer in [4, 65536]";
            else
                o->model.dim = (int)v, o->model.mlp = 4 * (int)v, o->model_name = "custom";
            break;
        case O_DROP:
            if (number(optarg, 0, 0.99, &v))
                bad = "--drop-path needs a rate in [0, 0.99]";
            else
                o->model.drop_path = (float)v;
            break;
        case O_STEPS:
            if (number(optarg, 1, 1e15, &v) || v != (int64_t)v)
                bad = "--steps needs a positive integer";
            else
                o->steps = (int64_t)v;
            break;
        case O_WARMUP:
            if (number(optarg, 0, 1e15, &v) || v != (int64_t)v)
                bad = "--warmup needs a non-negative integer";
            else
                warmup = (int64_t)v;
            break;
        case O_LR: if (number(optarg, 0, 10, &v)) bad = "--lr needs a rate in [0, 10]"; else o->optim.lr = (float)v; break;
        case O_MINLR: if (number(optarg, 0, 10, &v)) bad = "--min-lr needs a rate in [0, 10]"; else o->optim.min_lr = (float)v; break;
        case O_WD: if (number(optarg, 0, 10, &v)) bad = "--weight-decay needs a value in [0, 10]"; else o->optim.weight_decay = (float)v; break;
        case O_EPS: if (number(optarg, 1e-30, 1, &v)) bad = "--adam-eps needs a value in (0, 1]"; else o->optim.eps = (float)v; break;
        case O_BETA2: if (number(optarg, 0, 0.999999, &v)) bad = "--adam-beta2 needs a value in [0, 1)"; else o->optim.beta2 = (float)v; break;
        case O_CLIP: if (number(optarg, 0, 1e9, &v)) bad = "--clip needs a value >= 0"; else o->optim.clip = (float)v; break;
        case O_SEED: {
            char *end;
            o->seed = strtoull(optarg, &end, 10);
            if (!*optarg || *end)
                bad = "--seed needs a non-negative integer";
            break;
        }
        case O_BPE: o->bpe_vocab = optarg; break;
        case O_DUMP: o->dump_dir = optarg; break;
        case O_STAGE2: {
            double f;
            int size, used = 0;
            if (sscanf(optarg, "%lf:%d%n", &f, &size, &used) != 2 || optarg[used] || !(f > 0 && f < 1) || size < 16 ||
                size % 16)
                bad = "--stage2 needs FRACTION:SIZE with 0 < FRACTION < 1 and SIZE a multiple of 16";
            else
                o->stage2_at = f, o->stage2_size = size;
            break;
        }
        case O_VOCAB: {
            upm_err err;
            if (upm_vocab_targets_parse(optarg, &o->vocab_sampled, &err)) {
                fprintf(stderr, PROG ": error: %s\n", err.msg);
                return 2;
            }
            break;
        }
        case O_QUIET: o->quiet = 1; break;
        case O_EVAL_DATASET:
            if (o->n_eval_datasets == MAX_EVAL_DATASETS)
                bad = "--eval-dataset may be given at most 64 times";
            else
                eval_datasets[o->n_eval_datasets++] = optarg, o->eval_datasets = eval_datasets;
            break;
        INT_OPT(O_EVAL_EVERY, o->eval_every, 1, 1000000000)
        INT_OPT(O_EVAL_LIMIT, o->eval_limit, 1, 1000000000000LL)
        case 'h': fputs(usage, stdout); return -1;
        case O_VERSION: printf(PROG " %s\n", UPMOE_VERSION); return -1;
        default:
            fprintf(stderr, PROG ": error: unknown or incomplete option '%s' (see --help)\n", argv[optind - 1]);
            return 2;
        }
        if (bad) {
            fprintf(stderr, PROG ": error: %s, not '%s'\n", bad, optarg);
            return 2;
        }
        if (rec && defines_run(c) && rec->n < 256)
            rec->name[rec->n] = option_name(opts, c), rec->value[rec->n++] = optarg;
    }
    o->optim.total_steps = o->steps;
    o->optim.warmup_steps = warmup >= 0 ? warmup : o->steps / 20;
    if (!final)
        return 0;
    if (optind < argc) {
        fprintf(stderr, PROG ": error: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    if ((o->eval_every || o->eval_limit) && !o->n_eval_datasets) {
        fprintf(stderr, PROG ": error: --eval-every and --eval-limit need --eval-dataset (see --help)\n");
        return 2;
    }
    if (o->n_eval_datasets && !o->eval_every) /* at the checkpoints, else at the end */
        o->eval_every = o->checkpoint_every > 0 ? o->checkpoint_every : 0;
    if (resume_dir && o->out_dir && strcmp(resume_dir, o->out_dir)) {
        fprintf(stderr, PROG ": error: --resume %s continues in that directory; leave out --out or give the same\n",
                resume_dir);
        return 2;
    }
    if (resume_dir)
        o->out_dir = resume_dir;
    if ((o->job > 0) != (o->attempt > 0)) {
        fprintf(stderr, PROG ": error: --job and --attempt go together\n");
        return 2;
    }
    if (!o->mixture || !o->out_dir) {
        fprintf(stderr, PROG ": error: --mixture and --out (or --resume DIR) are required (see --help)\n");
        return 2;
    }
    if (!o->bpe_vocab)
        o->bpe_vocab = upm_bpe_default_path(bpe_path, sizeof bpe_path);
    return 0;
}

/* Whether argv gives option opt ("--opt V" or "--opt=V") before a "--". */
static int has_option(int argc, char **argv, const char *opt)
{
    size_t n = strlen(opt);
    for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
        if (!strncmp(argv[i], opt, n) && (argv[i][n] == 0 || argv[i][n] == '='))
            return 1;
    return 0;
}

/* --resume's directory, looked up before parsing (the run's saved options come first), or NULL. */
static const char *resume_arg(int argc, char **argv)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--"); i++) {
        if (!strcmp(argv[i], "--resume") && i + 1 < argc)
            return argv[i + 1];
        if (!strncmp(argv[i], "--resume=", 9))
            return argv[i] + 9;
    }
    return NULL;
}

/* The run-defining options kept by the newest checkpoint under dir: its state's "args", or for a checkpoint
 * written before they were kept, its mixture, steps and seed. The strings live in *json. */
static int saved_args(const char *dir, cJSON **json, const char **args, int cap, int *n, upm_err *err)
{
    char ckpt[4096], path[4200];
    *json = NULL, *n = 0;
    int rc = upm_checkpoint_latest(dir, ckpt, sizeof ckpt, err);
    if (rc)
        return rc;
    snprintf(path, sizeof path, "%s/state.json", ckpt);
    char *text = NULL;
    size_t len = 0;
    rc = upm_read_file(path, &text, &len, err);
    if (rc)
        return rc;
    cJSON *j = *json = cJSON_ParseWithLength(text, len);
    free(text);
    cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "args");
    if (!cJSON_IsArray(a)) { /* older checkpoints: what their state has */
        static const char *keys[] = {"mixture", "total_steps", "seed"}, *opt[] = {"--mixture", "--steps", "--seed"};
        a = cJSON_AddArrayToObject(j, "args_of_old_state");
        for (int i = 0; a && i < 3; i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, keys[i]);
            char num[32];
            if (cJSON_IsNumber(v))
                snprintf(num, sizeof num, "%.0f", v->valuedouble);
            if (cJSON_IsString(v) || cJSON_IsNumber(v)) {
                cJSON_AddItemToArray(a, cJSON_CreateString(opt[i]));
                cJSON_AddItemToArray(a, cJSON_CreateString(cJSON_IsString(v) ? v->valuestring : num));
            }
        }
    }
    const cJSON *x;
    cJSON_ArrayForEach(x, a) {
        if (!cJSON_IsString(x) || *n == cap)
            return upm_errf(err, UPM_EBADDATA, "%s: its \"args\" must be at most %d strings", path, cap);
        args[(*n)++] = x->valuestring;
    }
    return 0;
}

/* A run-defining value given for the resumed run that differs from the run's own: one line saying so. */
static int differs(const char *opt, const char *here, const char *there)
{
    if (!strcmp(here, there))
        return 0;
    fprintf(stderr, PROG ": error: --%s %s differs from the run being resumed, which has %s\n", opt, here, there);
    return 1;
}

static int differs_num(const char *opt, double here, double there)
{
    char a[40], b[40];
    snprintf(a, sizeof a, "%.7g", here), snprintf(b, sizeof b, "%.7g", there); /* float32 options: 7 digits */
    return here != there && differs(opt, a, b);
}

/* The resumed run's options (r, from its checkpoint) against the effective ones (o): 0 when they agree
 * except for --steps, which may extend (or shorten) the run. */
static int check_same_run(const upm_train_opts *r, const upm_train_opts *o)
{
    const upm_model_config *a = &o->model, *b = &r->model;
    char s1[32], s2[32];
    snprintf(s1, sizeof s1, "%llu", (unsigned long long)o->seed), snprintf(s2, sizeof s2, "%llu", (unsigned long long)r->seed);
    int bad = differs("mixture", o->mixture ? o->mixture : "", r->mixture ? r->mixture : "") | differs("seed", s1, s2);
    bad |= differs("precision", o->precision ? o->precision : "(the backend's)", r->precision ? r->precision : "(the backend's)");
    bad |= differs("moe", upm_moe_kind_name(a->moe), upm_moe_kind_name(b->moe));
    bad |= differs("augment", upm_augment_name(o->augment), upm_augment_name(r->augment));
    bad |= differs_num("dim", a->dim, b->dim) | differs_num("heads", a->heads, b->heads) |
           differs_num("layers", a->layers, b->layers) | differs_num("experts", a->experts, b->experts) |
           differs_num("topk", a->topk, b->topk) | differs_num("moe-sa", a->moe_sa, b->moe_sa) |
           differs_num("moe-ffn", a->moe_ffn, b->moe_ffn) | differs_num("moe-every", a->moe_every, b->moe_every) |
           differs_num("task-slots", a->task_slots, b->task_slots) | differs_num("drop-path", a->drop_path, b->drop_path) |
           differs_num("layerscale", a->layerscale_init, b->layerscale_init) |
           differs_num("gate-noise", a->gate_noise, b->gate_noise) | differs_num("gate-renorm", a->gate_renorm, b->gate_renorm) |
           differs_num("expert-init (copy 1, independent 0)", a->expert_copies, b->expert_copies) |
           differs_num("capacity-factor", a->capacity, b->capacity) |
           differs_num("eval-capacity-factor", a->eval_capacity, b->eval_capacity) |
           differs_num("balance-loss", a->balance, b->balance);
    bad |= differs_num("lr", o->optim.lr, r->optim.lr) | differs_num("min-lr", o->optim.min_lr, r->optim.min_lr) |
           differs_num("warmup", (double)o->optim.warmup_steps, (double)r->optim.warmup_steps) |
           differs_num("weight-decay", o->optim.weight_decay, r->optim.weight_decay) |
           differs_num("clip", o->optim.clip, r->optim.clip) | differs_num("adam-eps", o->optim.eps, r->optim.eps) |
           differs_num("adam-beta2", o->optim.beta2, r->optim.beta2);
    bad |= differs_num("batch", o->batch, r->batch) | differs_num("batch-scale", o->batch_scale, r->batch_scale) |
           differs_num("image-size", o->image_size, r->image_size) |
           differs_num("stage2 (size)", o->stage2_size, r->stage2_size) |
           differs_num("stage2 (fraction)", o->stage2_at, r->stage2_at) |
           differs_num("vocab-targets (sampled; 0: full)", o->vocab_sampled, r->vocab_sampled) |
           differs_num("readers", o->readers, r->readers) | differs_num("shuffle-block", o->shuffle_block, r->shuffle_block);
    if (bad)
        fprintf(stderr, PROG ": a resumed run keeps the options it was started with (its checkpoints hold them): "
                "leave these out or give the run's values; --steps may change, to extend or shorten it\n");
    return bad;
}

/* The run-defining options to keep (JSON array): each once, where it first appeared, with its last value,
 * and the warmup resolved (its default follows --steps, which a resume may change). */
static char *record_json(const run_record *rec, const upm_train_opts *o)
{
    cJSON *a = cJSON_CreateArray();
    int warmup = 0;
    for (int i = 0; i < rec->n; i++) {
        int first = 1;
        for (int k = 0; k < i && first; k++)
            first = strcmp(rec->name[k], rec->name[i]) != 0;
        if (!first)
            continue;
        const char *value = rec->value[i];
        for (int k = i + 1; k < rec->n; k++)
            if (!strcmp(rec->name[k], rec->name[i]))
                value = rec->value[k];
        char opt[64];
        snprintf(opt, sizeof opt, "--%s", rec->name[i]);
        cJSON_AddItemToArray(a, cJSON_CreateString(opt));
        cJSON_AddItemToArray(a, cJSON_CreateString(value));
        warmup |= !strcmp(rec->name[i], "warmup");
    }
    if (!warmup) {
        char v[32];
        snprintf(v, sizeof v, "%lld", (long long)o->optim.warmup_steps);
        cJSON_AddItemToArray(a, cJSON_CreateString("--warmup"));
        cJSON_AddItemToArray(a, cJSON_CreateString(v));
    }
    char *s = cJSON_PrintUnformatted(a);
    cJSON_Delete(a);
    return s;
}

/* Runs the parsed command line: checks, the signal thread, the communicator, the trainer. */
static int train(upm_train_opts *o, upm_comm_opts *co)
{
    upm_err err = {0};
    int rc;
    upm_model_config check = o->model;
    if (upm_moe_needs_task(check.moe)) { /* the task table is sized from the mixture when the trainer opens */
        check.task_slots = check.task_slots > 0 ? check.task_slots : 1;
        if (check.moe == UPM_MOE_TASK_SPECIFIC)
            check.experts = check.task_slots, check.topk = 1;
    }
    if ((rc = upm_model_config_check(&check, &err))) {
        fprintf(stderr, PROG ": error: %s\n", err.msg);
        return 2;
    }
    if (catch_stop_signals()) {
        fprintf(stderr, PROG ": error: cannot start the signal thread\n");
        return 1;
    }
    o->stop = &stop;
    co->stop = &stop;
    upm_comm *comm = NULL;
    if ((rc = upm_comm_open(co, &comm, &err))) {
        fprintf(stderr, PROG ": error: %s\n", err.msg);
        return err.code == UPM_EUSAGE ? 2 : 1;
    }
    int world = upm_comm_world(comm), rank = upm_comm_rank(comm);
    if (world > 1 && o->threads == 0) { /* share the node's cores between its ranks */
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        int local = upm_comm_local_world(comm);
        o->threads = cores > local ? (int)(cores / local) : 1;
    }
    o->comm = comm;
    rc = upm_train(o, &err);
    if (rc) {
        if (world > 1)
            fprintf(stderr, PROG ": error: rank %d: %s\n", rank, err.msg);
        else
            fprintf(stderr, PROG ": error: %s\n", err.msg);
    }
    upm_comm_close(comm, rc != 0); /* a failed rank stops the whole job */
    return rc ? (err.code == UPM_EUSAGE ? 2 : err.code == UPM_ELEASE ? 3 : 1) : 0;
}

/* Parses the command line, a resumed run's saved options first (see saved_args); *all, *state and
 * *run_args are the caller's to free whatever the outcome. -1: --help or --version was answered. */
static int parse_run(int argc, char **argv, upm_train_opts *o, upm_comm_opts *co, char ***all, cJSON **state,
                     char **run_args)
{
    upm_err err = {0};
    /* A resume continues the run that was started: its saved options first, this command line after them
     * (what it gives again must agree, except --steps). */
    const char *rdir = resume_arg(argc, argv), *saved[256];
    int nsaved = 0, rc = rdir ? saved_args(rdir, state, saved, 256, &nsaved, &err) : 0;
    if (rc == UPM_ENOTFOUND && has_option(argc, argv, "--mixture"))
        rc = 0; /* nothing to take over: the command line is checked as it is, the trainer finds no checkpoint */
    if (rc) {
        fprintf(stderr, PROG ": error: --resume %s: %s%s\n", rdir, err.msg,
                rc == UPM_ENOTFOUND ? " (a run starts with --mixture M --out DIR)" : "");
        return rc == UPM_ENOTFOUND ? 2 : 1;
    }
    char **v = *all = malloc(sizeof(char *) * ((size_t)argc + (size_t)nsaved + 2));
    if (!v)
        return 1;
    v[0] = argv[0];
    for (int i = 0; i < nsaved; i++)
        v[1 + i] = (char *)saved[i];
    upm_train_opts run;
    if (nsaved) { /* the run's own options, alone */
        upm_comm_opts rco;
        upm_train_opts_default(&run);
        upm_comm_opts_default(&rco);
        v[nsaved + 1] = NULL;
        if (parse(nsaved + 1, v, &run, &rco, 0, NULL)) {
            fprintf(stderr, PROG ": error: the options kept by %s's newest checkpoint do not parse\n", rdir);
            return 2;
        }
    }
    for (int i = 1; i <= argc; i++)
        v[nsaved + i] = argv[i];
    run_record rec = {0};
    if ((rc = parse(argc + nsaved, v, o, co, 1, &rec)))
        return rc;
    if (nsaved && check_same_run(&run, o))
        return 2;
    if (nsaved && o->steps != run.steps)
        printf("the run's steps change from %lld to %lld (the cosine schedule now ends at step %lld)\n",
               (long long)run.steps, (long long)o->steps, (long long)o->steps);
    o->run_args = *run_args = record_json(&rec, o);
    return 0;
}

int main(int argc, char **argv)
{
    upm_train_opts o;
    upm_comm_opts co;
    upm_train_opts_default(&o);
    upm_comm_opts_default(&co);
    char **all = NULL, *run_args = NULL;
    cJSON *state = NULL;
    int rc = parse_run(argc, argv, &o, &co, &all, &state, &run_args);
    if (!rc)
        rc = train(&o, &co);
    free(run_args);
    free(all);
    cJSON_Delete(state);
    return rc < 0 ? 0 : rc;
}
