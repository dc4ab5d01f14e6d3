/* upmoe-analyze interference: the task-interference metric of the paper (§3.1, Eq. 1-2, Table 1).
 *
 * For tasks i and j and the shared parameters θ of one block's FFN (fc1 and fc2, weights and biases, every
 * expert of an MoE linear), with g_i(x) = ∇θ L_i(x) on a training batch x of task i:
 *
 *     m_j     = mean over task j's batches of g_j / ‖g_j‖        (the expected update direction of task j)
 *     I(i, j) = mean over task i's batches x of (m_j · g_i(x)) / (m_i · g_i(x))
 *
 * i.e. Eq. 1's first-order loss change of task i when θ steps along task j's normalised gradient, relative
 * to the change along task i's own (Eq. 2's denominator), so I(i, i) = 1. Every task of the mixture draws
 * --batches batches from the mixture's own sampler (evaluation order: no augmentation; the gradients of
 * training passes without gate noise or drop path, nothing updated), in two passes over the same batches:
 * the first forms m, the second the ratios. Deterministic for a seed. --dump DIR writes each batch of the
 * first pass as a step file (trainer/batchdump.h), so PyTorch can recompute the same quantity
 * (tests/trainer/test_analyze.py). The matrix is stored in the catalog (table interference) with the
 * checkpoint's run and step unless --no-store. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "bpe.h"
#include "catalog_ops.h"
#include "checkpoint.h"
#include "fileio.h"
#include "interference.h"
#include "results.h"
#include "task_batches.h"
#include "runs.h"
#include "trainer_state.h"
#include "vocab.h"

#define PROG "upmoe-analyze"
#define MAX_LAYERS 64
#define MAX_TASKS UPM_ANALYZE_MAX_TASKS

static const char usage_text[] =
    "usage: " PROG " interference --checkpoint DIR --mixture M [--layers 4,12] [--batches 100] [--seed S]\n"
    "                            [--batch N] [--image-size PX] [--json] [--dump DIR] [--catalog PATH]\n"
    "                            [--backend cpu|debug|cuda] [--threads N] [--bpe-vocab FILE]\n"
    "                            [--vocab-targets full|sampled:N] [--no-store]\n"
    "The task-interference metric of the paper (Eq. 1-2, Table 1): for every pair of tasks of the mixture, the\n"
    "change of task i's loss when the FFN parameters of a block (1-based; default the 4th and 12th, as Table 1)\n"
    "follow task j's mean normalised gradient, relative to following its own (the diagonal is 1). Gradients of\n"
    "--batches training batches per task (default 100), drawn by the mixture's sampler with --seed. The matrix is\n"
    "stored in the catalog with the checkpoint's run and step (--no-store: not).\n";

typedef struct interference {
    int ntasks, nlayers, B;
    upm_task_list list;
    int layer[MAX_LAYERS];   /* 0-based block */
    size_t n[MAX_LAYERS];    /* parameters of each block's FFN */
    double *dir[MAX_LAYERS]; /* [ntasks][n]: the mean normalised gradient of each task */
    double *I[MAX_LAYERS];   /* [ntasks][ntasks] */
} interference;

static int usage_error(const char *msg)
{
    fprintf(stderr, PROG ": error: %s (see " PROG " interference --help)\n", msg);
    return 2;
}

/* The FFN parameters of block l: fc1 and fc2, weight and bias. */
static void ffn_params(const upm_model *m, int l, int idx[4])
{
    const upm_block_idx *k = &m->L.blocks[l];
    idx[0] = k->fc1.w, idx[1] = k->fc1.b, idx[2] = k->fc2.w, idx[3] = k->fc2.b;
}

typedef struct pass_ctx {
    interference *f;
    int pass;
    float *g; /* one block's FFN gradient */
} pass_ctx;

/* After a batch of task ti: pass 0 adds its normalised gradient to the task's direction, pass 1 its ratios. */
static int take_batch(void *vctx, trainer *t, int ti, upm_err *err)
{
    pass_ctx *c = vctx;
    interference *f = c->f;
    float *g = c->g;
    for (int k = 0; k < f->nlayers; k++) {
        int idx[4];
        ffn_params(t->m, f->layer[k], idx);
        size_t at = 0;
        for (int q = 0; q < 4; q++) {
            size_t n = t->m->L.p[idx[q]].numel;
            t->be->download(t->be, g + at, upm_model_g(t->m, idx[q]), sizeof(float) * n);
            at += n;
        }
        double *dir = f->dir[k];
        if (c->pass == 0) {
            double norm = 0;
            for (size_t e = 0; e < at; e++)
                norm += (double)g[e] * g[e];
            norm = sqrt(norm);
            for (size_t e = 0; norm > 0 && e < at; e++)
                dir[(size_t)ti * at + e] += g[e] / norm / f->B;
            continue;
        }
        double dot[MAX_TASKS] = {0};
        for (int j = 0; j < f->ntasks; j++)
            for (size_t e = 0; e < at; e++)
                dot[j] += dir[(size_t)j * at + e] * g[e];
        if (dot[ti] == 0)
            return upm_errf(err, UPM_EINVAL, "block %d: a batch of task %s has no gradient along its own mean "
                            "direction (Eq. 2's denominator is 0)", f->layer[k] + 1, f->list.name[ti]);
        for (int j = 0; j < f->ntasks; j++)
            f->I[k][ti * f->ntasks + j] += dot[j] / dot[ti] / f->B;
    }
    return 0;
}

/* One pass over the batches (gradients of training passes, no update): pass 0 forms the directions, pass 1
 * the ratios. */
static int run_pass(interference *f, const upm_train_opts *o, const char *ckpt, int pass, upm_err *err)
{
    trainer t;
    int rc = upm_trainer_open(&t, o, ckpt, err);
    t.grads = 1;
    size_t most = 0;
    for (int k = 0; k < f->nlayers; k++)
        most = f->n[k] > most ? f->n[k] : most;
    pass_ctx c = {f, pass, rc ? NULL : malloc(sizeof(float) * (most ? most : 1))};
    if (!rc && !c.g)
        rc = upm_errf(err, UPM_ENOMEM, "no memory for gradients");
    if (!rc)
        rc = upm_each_task_batch(&t, &f->list, f->B, take_batch, &c, err);
    free(c.g);
    upm_trainer_close(&t);
    return rc;
}

/* The checkpoint's run (0 when it is not in this catalog) and step, from its state.json. */
static void checkpoint_run(upm_catalog *cat, const char *ckpt, int64_t *run, int64_t *step)
{
    char path[4200], *text = NULL;
    upm_err e = {0};
    *run = *step = 0;
    snprintf(path, sizeof path, "%s/state.json", ckpt);
    if (upm_read_file(path, &text, NULL, &e))
        return;
    cJSON *j = cJSON_Parse(text);
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "run_id"), *s = cJSON_GetObjectItemCaseSensitive(j, "step");
    int exists = 0;
    if (cJSON_IsNumber(s))
        *step = (int64_t)s->valuedouble;
    if (cJSON_IsNumber(r) && r->valuedouble > 0 && !upm_run_exists(cat, (int64_t)r->valuedouble, &exists, &e) && exists)
        *run = (int64_t)r->valuedouble;
    cJSON_Delete(j);
    free(text);
}

/* The matrix into the catalog's interference table, one transaction. */
static int store(const interference *f, const upm_train_opts *o, const char *ckpt, upm_err *err)
{
    char path[4096];
    upm_catalog *cat = NULL;
    int rc = upm_catalog_resolve_path(o->catalog, path, sizeof path, err);
    if (!rc)
        rc = upm_catalog_open(path, 0, &cat, err);
    size_t n = (size_t)f->nlayers * f->ntasks * f->ntasks;
    upm_interference_record *rows = rc ? NULL : calloc(n, sizeof *rows);
    if (!rc && !rows)
        rc = upm_errf(err, UPM_ENOMEM, "no memory");
    int64_t run = 0, step = 0;
    if (!rc)
        checkpoint_run(cat, ckpt, &run, &step);
    for (int k = 0, r = 0; !rc && k < f->nlayers; k++)
        for (int i = 0; i < f->ntasks; i++)
            for (int j = 0; j < f->ntasks; j++, r++) {
                upm_interference_record *x = &rows[r];
                x->run_id = run, x->step = step, x->block = f->layer[k] + 1, x->batches = f->B;
                x->value = f->I[k][i * f->ntasks + j];
                snprintf(x->checkpoint, sizeof x->checkpoint, "%s", ckpt);
                snprintf(x->mixture, sizeof x->mixture, "%s", o->mixture);
                snprintf(x->task_i, sizeof x->task_i, "%s", f->list.name[i]);
                snprintf(x->task_j, sizeof x->task_j, "%s", f->list.name[j]);
                snprintf(x->seed, sizeof x->seed, "%llu", (unsigned long long)o->seed);
            }
    if (!rc)
        rc = upm_interference_put(cat, rows, (int)n, err);
    free(rows);
    upm_catalog_close(cat);
    return rc;
}

static void print_text(const interference *f, const char *ckpt, const char *mixture)
{
    printf("task interference I(i, j) of %s on mixture %s (paper Eq. 1-2): task i's loss change along task j's\n"
           "mean normalised gradient, relative to its own; %d batches per task\n", ckpt, mixture, f->B);
    int w = 10;
    for (int i = 0; i < f->ntasks; i++)
        w = (int)strlen(f->list.name[i]) > w ? (int)strlen(f->list.name[i]) : w;
    for (int k = 0; k < f->nlayers; k++) {
        printf("\nblock %d FFN (%zu parameters)\n%-*s", f->layer[k] + 1, f->n[k], w + 2, "i \\ j");
        for (int j = 0; j < f->ntasks; j++)
            printf(" %*s", w, f->list.name[j]);
        printf("\n");
        for (int i = 0; i < f->ntasks; i++) {
            printf("%-*s", w + 2, f->list.name[i]);
            for (int j = 0; j < f->ntasks; j++)
                printf(" %*.2f", w, f->I[k][i * f->ntasks + j]);
            printf("\n");
        }
    }
}

static void print_json(const interference *f, const char *ckpt, const char *mixture, uint64_t seed)
{
    cJSON *j = cJSON_CreateObject(), *ta = cJSON_AddArrayToObject(j, "tasks"), *la = cJSON_AddArrayToObject(j, "layers");
    cJSON_AddStringToObject(j, "checkpoint", ckpt);
    cJSON_AddStringToObject(j, "mixture", mixture);
    cJSON_AddNumberToObject(j, "batches", f->B);
    char sb[32];
    snprintf(sb, sizeof sb, "%llu", (unsigned long long)seed);
    cJSON_AddStringToObject(j, "seed", sb);
    for (int i = 0; i < f->ntasks; i++)
        cJSON_AddItemToArray(ta, cJSON_CreateString(f->list.name[i]));
    for (int k = 0; k < f->nlayers; k++) {
        cJSON *o = cJSON_CreateObject(), *mat = cJSON_AddArrayToObject(o, "matrix");
        cJSON_AddNumberToObject(o, "block", f->layer[k] + 1);
        cJSON_AddNumberToObject(o, "parameters", (double)f->n[k]);
        for (int i = 0; i < f->ntasks; i++) {
            cJSON *row = cJSON_CreateArray();
            for (int jj = 0; jj < f->ntasks; jj++)
                cJSON_AddItemToArray(row, cJSON_CreateNumber(f->I[k][i * f->ntasks + jj]));
            cJSON_AddItemToArray(mat, row);
        }
        cJSON_AddItemToArray(la, o);
    }
    char *s = cJSON_Print(j);
    printf("%s\n", s ? s : "{}");
    free(s);
    cJSON_Delete(j);
}

int upm_analyze_interference(int argc, char **argv)
{
    const char *ckpt_arg = NULL, *mixture = NULL, *layers = "4,12", *dump = NULL;
    upm_train_opts o;
    upm_train_opts_default(&o);
    static char bpe_path[4096];
    o.image_size = 160, o.bpe_vocab = upm_bpe_default_path(bpe_path, sizeof bpe_path);
    int json = 0, no_store = 0;
    interference f;
    memset(&f, 0, sizeof f);
    f.B = 100;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage_text, stdout);
            return 0;
        } else if (!strcmp(a, "--json"))
            json = 1;
        else if (!strcmp(a, "--no-store"))
            no_store = 1;
        else if (!v)
            return usage_error("unknown or incomplete option");
        else if (!strcmp(a, "--checkpoint"))
            ckpt_arg = v, i++;
        else if (!strcmp(a, "--mixture"))
            mixture = o.mixture = v, i++;
        else if (!strcmp(a, "--layers"))
            layers = v, i++;
        else if (!strcmp(a, "--dump"))
            dump = v, i++;
        else if (!strcmp(a, "--catalog"))
            o.catalog = v, i++;
        else if (!strcmp(a, "--backend"))
            o.backend = v, i++;
        else if (!strcmp(a, "--bpe-vocab"))
            o.bpe_vocab = v, i++;
        else if (!strcmp(a, "--vocab-targets")) {
            upm_err e;
            if (upm_vocab_targets_parse(v, &o.vocab_sampled, &e)) {
                fprintf(stderr, PROG ": error: %s\n", e.msg);
                return 2;
            }
            i++;
        }
        else if (!strcmp(a, "--seed") && (o.seed = strtoull(v, &end, 10), *end == 0))
            i++;
        else if (!strcmp(a, "--batches") && (f.B = (int)strtol(v, &end, 10), *end == 0 && f.B >= 1 && f.B <= 100000))
            i++;
        else if (!strcmp(a, "--batch") && (o.batch = (int)strtol(v, &end, 10), *end == 0 && o.batch >= 1))
            i++;
        else if (!strcmp(a, "--threads") && (o.threads = (int)strtol(v, &end, 10), *end == 0 && o.threads >= 0))
            i++;
        else if (!strcmp(a, "--image-size") &&
                 (o.image_size = (int)strtol(v, &end, 10), *end == 0 && o.image_size >= 16 && o.image_size % 16 == 0))
            i++;
        else {
            fprintf(stderr, PROG ": error: bad option or value: %s %s (see " PROG " interference --help)\n", a, v);
            return 2;
        }
    }
    if (!ckpt_arg || !mixture)
        return usage_error("interference needs --checkpoint and --mixture");
    upm_err err = {0};
    char ckpt[4096];
    upm_model_config cfg;
    int rc = upm_checkpoint_config(ckpt_arg, ckpt, sizeof ckpt, &cfg, &err);
    for (const char *p = layers; !rc && *p;) { /* 1-based blocks, comma-separated */
        char *end = NULL;
        long l = strtol(p, &end, 10);
        if (end == p || l < 1 || l > cfg.layers || f.nlayers == MAX_LAYERS || (*end && *end != ','))
            rc = upm_errf(&err, UPM_EUSAGE, "--layers takes blocks 1..%d of this model, comma-separated, not '%s'",
                          cfg.layers, layers);
        else
            f.layer[f.nlayers++] = (int)l - 1, p = *end ? end + 1 : end;
    }
    if (!rc && !f.nlayers)
        rc = upm_errf(&err, UPM_EUSAGE, "--layers names no block");
    if (!rc) { /* the mixture's tasks, in the plan's order */
        trainer t;
        if (!(rc = upm_trainer_open(&t, &o, ckpt, &err))) {
            if (!(rc = upm_task_list_load(t.cat, mixture, &f.list, &err)))
                f.ntasks = f.list.n;
            for (int k = 0; !rc && k < f.nlayers; k++) {
                int idx[4];
                ffn_params(t.m, f.layer[k], idx);
                for (int q = 0; q < 4; q++)
                    f.n[k] += t.m->L.p[idx[q]].numel;
            }
            upm_trainer_close(&t);
        }
    }
    if (!rc && f.ntasks < 2)
        rc = upm_errf(&err, UPM_EUSAGE, "mixture %s has %d task%s: interference needs two or more", mixture,
                      f.ntasks, f.ntasks == 1 ? "" : "s");
    for (int k = 0; !rc && k < f.nlayers; k++)
        if (!(f.dir[k] = calloc((size_t)f.ntasks * f.n[k], sizeof(double))) ||
            !(f.I[k] = calloc((size_t)f.ntasks * f.ntasks, sizeof(double))))
            rc = upm_errf(&err, UPM_ENOMEM, "no memory for %d tasks' directions", f.ntasks);
    if (!rc && dump)
        rc = upm_mkdirs(dump, &err);
    upm_train_opts first = o;
    first.dump_dir = dump; /* the first pass's batches, for a replay */
    if (!rc)
        rc = run_pass(&f, &first, ckpt, 0, &err);
    if (!rc)
        rc = run_pass(&f, &o, ckpt, 1, &err);
    if (!rc && !no_store)
        rc = store(&f, &o, ckpt, &err);
    if (!rc && json)
        print_json(&f, ckpt, mixture, o.seed);
    else if (!rc)
        print_text(&f, ckpt, mixture);
    for (int k = 0; k < f.nlayers; k++)
        free(f.dir[k]), free(f.I[k]);
    if (rc)
        fprintf(stderr, PROG ": error: %s\n", err.msg);
    return rc ? (err.code == UPM_EUSAGE ? 2 : 1) : 0;
}
