/* upmoe-analyze: analyses of a trained checkpoint (issue 18).
 *
 *   upmoe-analyze gates --checkpoint C (--mixture M | --task T ...) [--catalog PATH] [--json] [--plot F.png|F.svg]
 *   upmoe-analyze interference --checkpoint C --mixture M [--layers 4,12] [--batches 100] (interference.c)
 *
 * Gate maps (paper Fig. 3): for each task, each kind of token it has (its input and target fields and their
 * <|spe|>, i.e. its attribute patterns, paper Table 2) and each routed block, the expert the gate ranks first
 * and the kept gate values, evaluated from the checkpoint's weights (attribute routing depends on the pattern
 * alone, so no data is read). Text by default, JSON with --json, and a heat map of the top-1 experts (one
 * column per block and gate, one row per task and token kind) drawn by gnuplot with --plot. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "bpe.h"
#include "attributes.h"
#include "catalog_ops.h"
#include "checkpoint.h"
#include "gnuplot.h"
#include "interference.h"
#include "token_gates.h"
#include "merge.h"
#include "plan.h"
#include "train.h"
#include "vocab.h"

#define PROG "upmoe-analyze"
#define MAX_TASKS 64
#define MAX_KINDS 16

static const char *gate_names[UPM_NGATES] = {"attn", "fc1", "fc2"};

static const char usage_text[] =
    "usage: " PROG " gates --checkpoint DIR (--mixture M | --task T ...) [--catalog PATH] [--json]\n"
    "                     [--plot FILE.png|FILE.svg] [--backend cpu|debug|cuda]\n"
    "                     token routing: --mixture M [--batches 20] [--image-size 160] [--batch N]\n"
    "                     [--vocab-targets full|sampled:N] [--seed S] (the shares of tokens per expert, measured)\n"
    "Gate maps of an attribute-routed checkpoint (paper Fig. 3): for each task of the mixture (or each --task),\n"
    "each kind of its tokens and each routed block and gate, the expert ranked first and the kept gate values.\n"
    "--checkpoint is a step-* directory or a run's --out directory (its newest checkpoint).\n"
    "       " PROG " interference --checkpoint DIR --mixture M [--layers 4,12] [--batches 100] [--json] ...\n"
    "The task-interference metric of paper Eq. 1-2 (Table 1); see '" PROG " interference --help'.\n";

typedef struct task_map {
    upm_task task;
    upm_token_kind kinds[MAX_KINDS];
    int nkinds;
    int id; /* its id in the model's task table (0: not met in training) */
} task_map;

static int usage_error(const char *msg)
{
    fprintf(stderr, PROG ": error: %s (see --help)\n", msg);
    return 2;
}

static int add_task(task_map *t, int *n, upm_catalog *cat, const char *name, upm_err *err)
{
    for (int i = 0; i < *n; i++)
        if (!strcmp(t[i].task.name, name))
            return 0;
    if (*n == MAX_TASKS)
        return upm_errf(err, UPM_EUSAGE, "more than %d tasks", MAX_TASKS);
    task_map *m = &t[*n];
    int rc = upm_task_get(cat, name, &m->task, err);
    if (rc)
        return rc;
    m->nkinds = upm_task_token_kinds(&m->task, m->kinds, MAX_KINDS);
    if (m->nkinds > MAX_KINDS)
        m->nkinds = MAX_KINDS;
    (*n)++;
    return 0;
}

/* The label of a row of the heat map, safe inside gnuplot's single quotes. */
static void label_of(const task_map *t, const upm_token_kind *k, char *buf, size_t n)
{
    snprintf(buf, n, "%s: %s %s", t->task.name, k->side == UPM_SIDE_INPUT ? "input" : "target", k->what);
    for (char *c = buf; *c; c++)
        if (*c == '\'' || *c == '\n' || *c == '\\')
            *c = '"';
}

static int plot(const char *out, const task_map *tm, int nt, const upm_model *m, const int *top, int ncols,
                const int *col_block, const int *col_gate)
{
    const char *ext = strrchr(out, '.');
    const char *term = ext && !strcmp(ext, ".png") ? "pngcairo size 1100,800" : ext && !strcmp(ext, ".svg") ? "svg size 1100,800" : NULL;
    if (!term || strpbrk(out, "'\n"))
        return usage_error("--plot needs a .png or .svg path without quotes or newlines");
    const char *tmp = getenv("TMPDIR");
    char dir[4096], data[4200], script[4200];
    snprintf(dir, sizeof dir, "%s/upmoe-gates-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        fprintf(stderr, PROG ": error: cannot make a temporary folder: %s\n", strerror(errno));
        return 1;
    }
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(script, sizeof script, "%s/plot.gp", dir);
    FILE *f = fopen(data, "w"), *g = fopen(script, "w");
    int rows = 0, rc = f && g ? 0 : 1;
    for (int t = 0; !rc && t < nt; t++)
        for (int k = 0; k < tm[t].nkinds; k++, rows++) {
            for (int c = 0; c < ncols; c++)
                fprintf(f, "%s%d", c ? " " : "", top[(size_t)rows * ncols + c]);
            fputc('\n', f);
        }
    if (!rc) {
        fprintf(g, "set terminal %s\nset output '%s'\nset termoption noenhanced\n", term, out);
        fprintf(g, "set title 'top-1 expert per routed block and gate (%d experts)'\n", m->cfg.experts);
        fprintf(g, "set cbrange [-0.5:%d.5]\nset cbtics 1\nset palette maxcolors %d\n", m->cfg.experts - 1, m->cfg.experts);
        fprintf(g, "set xrange [-0.5:%d.5]\nset yrange [%d.5:-0.5]\nset xtics (", ncols - 1, rows - 1);
        for (int c = 0; c < ncols; c++) /* "block\ngate": digits and fixed names only, safe in double quotes */
            fprintf(g, "%s\"%d\\n%s\" %d", c ? ", " : "", col_block[c], gate_names[col_gate[c]], c);
        fprintf(g, ")\nset ytics (");
        int r = 0;
        for (int t = 0; t < nt; t++)
            for (int k = 0; k < tm[t].nkinds; k++, r++) {
                char lab[300];
                label_of(&tm[t], &tm[t].kinds[k], lab, sizeof lab);
                fprintf(g, "%s'%s' %d", r ? ", " : "", lab, r);
            }
        fprintf(g, ")\nset xlabel 'block, gate' offset 0,-1\nset lmargin 40\nset bmargin 5\nplot '%s' matrix with image notitle\n", data);
    }
    if (f && fclose(f))
        rc = 1;
    if (g && fclose(g))
        rc = 1;
    upm_err gerr = {0};
    if (!rc && upm_gnuplot_run(script, &gerr)) {
        fprintf(stderr, PROG ": error: %s\n", gerr.msg);
        rc = 1;
    } else if (rc)
        fprintf(stderr, PROG ": error: cannot write the plot's files in %s\n", dir);
    unlink(data);
    unlink(script);
    rmdir(dir);
    return rc;
}

static int cmd_gates(int argc, char **argv)
{
    const char *ckpt_arg = NULL, *mixture = NULL, *catalog = NULL, *plot_out = NULL, *backend = NULL;
    const char *tasks[MAX_TASKS];
    int ntasks_arg = 0, json = 0, batches = 20;
    upm_train_opts o; /* token routing's gates read the data: the batches they are measured on */
    upm_train_opts_default(&o);
    static char bpe_path[4096];
    o.image_size = 160, o.bpe_vocab = upm_bpe_default_path(bpe_path, sizeof bpe_path);
    static const struct option opts[] = {{"checkpoint", 1, 0, 'c'}, {"mixture", 1, 0, 'm'}, {"task", 1, 0, 't'},
                                         {"catalog", 1, 0, 'C'},    {"json", 0, 0, 'j'},    {"plot", 1, 0, 'p'},
                                         {"backend", 1, 0, 'B'},    {"batches", 1, 0, 'n'}, {"image-size", 1, 0, 'i'},
                                         {"batch", 1, 0, 'b'},      {"vocab-targets", 1, 0, 'v'},
                                         {"seed", 1, 0, 's'},       {"help", 0, 0, 'h'},    {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': ckpt_arg = optarg; break;
        case 'm': mixture = optarg; break;
        case 't':
            if (ntasks_arg == MAX_TASKS)
                return usage_error("too many --task");
            tasks[ntasks_arg++] = optarg;
            break;
        case 'C': catalog = optarg; break;
        case 'j': json = 1; break;
        case 'p': plot_out = optarg; break;
        case 'B': backend = optarg; break;
        case 'n': batches = atoi(optarg); break;
        case 'i': o.image_size = atoi(optarg); break;
        case 'b': o.batch = atoi(optarg); break;
        case 's': o.seed = strtoull(optarg, NULL, 10); break;
        case 'v': {
            upm_err e;
            if (upm_vocab_targets_parse(optarg, &o.vocab_sampled, &e))
                return usage_error(e.msg);
            break;
        }
        case 'h': fputs(usage_text, stdout); return 0;
        default: return 2;
        }
    }
    if (optind < argc)
        return usage_error("unexpected arguments");
    if (!ckpt_arg || (!mixture && !ntasks_arg) || (mixture && ntasks_arg))
        return usage_error("gates needs --checkpoint and either --mixture or --task");
    upm_err err = {0};
    char ckpt[4096], catpath[4096];
    upm_model_config cfg;
    int rc = upm_checkpoint_config(ckpt_arg, ckpt, sizeof ckpt, &cfg, &err);
    if (!rc && upm_moe_token_routed(cfg.moe)) { /* measured on data */
        if (!mixture || plot_out)
            return usage_error("gate maps of token routing are measured on batches: give --mixture (no --task, no --plot)");
        if (batches < 1 || o.image_size < 16 || o.image_size % 16)
            return usage_error("--batches needs a positive count and --image-size a multiple of 16");
        o.mixture = mixture, o.catalog = catalog, o.backend = backend;
        rc = upm_analyze_token_gates(&o, ckpt, batches, json, &err);
        if (rc)
            fprintf(stderr, PROG ": error: %s\n", err.msg);
        return rc ? 1 : 0;
    }
    if (!rc && !upm_moe_routed(cfg.moe))
        rc = upm_errf(&err, UPM_EUSAGE,
                      "%s: gate maps need a routed model, attribute, modality, task or task-specific (this one is %s)",
                      ckpt, upm_moe_kind_name(cfg.moe));
    task_map *tm = calloc(MAX_TASKS, sizeof *tm);
    int nt = 0;
    upm_catalog *cat = NULL;
    if (!rc && !tm)
        rc = upm_errf(&err, UPM_ENOMEM, "no memory");
    if (!rc && !(rc = upm_catalog_resolve_path(catalog, catpath, sizeof catpath, &err)))
        rc = upm_catalog_open(catpath, UPM_CAT_READONLY, &cat, &err);
    if (!rc && mixture) {
        upm_plan plan;
        if (!(rc = upm_plan_load(cat, mixture, &plan, &err))) {
            for (int i = 0; !rc && i < plan.n; i++)
                rc = add_task(tm, &nt, cat, plan.members[i].task.name, &err);
            upm_plan_free(&plan);
        }
    }
    for (int i = 0; !rc && i < ntasks_arg; i++)
        rc = add_task(tm, &nt, cat, tasks[i], &err);
    upm_catalog_close(cat);
    upm_backend *be = NULL;
    upm_model *m = NULL;
    if (!rc)
        rc = upm_backend_open(backend, NULL, &be, &err);
    if (!rc)
        rc = upm_model_new(&cfg, be, 0, &m, &err);
    if (!rc)
        rc = upm_checkpoint_load(ckpt, m, NULL, NULL, &err);
    /* the columns: every routed (block, gate) */
    int col_block[3 * 256], col_gate[3 * 256], ncols = 0;
    for (int l = 0; !rc && l < m->L.nblocks && ncols < 3 * 256; l++)
        for (int gi = 0; gi < UPM_NGATES; gi++)
            if (upm_block_routes(&m->L.blocks[l], gi))
                col_block[ncols] = l, col_gate[ncols++] = gi;
    int rows = 0;
    for (int t = 0; t < nt; t++)
        rows += tm[t].nkinds;
    int E = rc ? 0 : m->cfg.experts;
    float *G = rc ? NULL : calloc((size_t)rows * ncols * E + 1, sizeof *G); /* [row][col][E] */
    int *top = rc ? NULL : calloc((size_t)rows * ncols + 1, sizeof *top);
    if (!rc && (!G || !top))
        rc = upm_errf(&err, UPM_ENOMEM, "no memory");
    uint8_t pats[MAX_TASKS * MAX_KINDS];
    for (int t = 0, r = 0; t < nt; t++)
        for (int k = 0; k < tm[t].nkinds; k++)
            pats[r++] = tm[t].kinds[k].attr;
    float *one = rc ? NULL : malloc(sizeof(float) * (size_t)(rows ? rows : 1) * E);
    if (!rc && !one)
        rc = upm_errf(&err, UPM_ENOMEM, "no memory");
    /* per task: its visual inputs are video or images (modality routing tells them apart by that), and its id
     * in the model's task table (task routing; a task the model never met has no trained embedding) */
    for (int t = 0; !rc && t < nt; t++) {
        tm[t].id = upm_model_task_id(&cfg, tm[t].task.name);
        char names[512];
        if (upm_moe_needs_task(cfg.moe) && !tm[t].id)
            rc = upm_errf(&err, UPM_EUSAGE, "task '%s' was not met in training by this %s model (its tasks: %s): it "
                          "has no routing to show", tm[t].task.name, upm_moe_kind_name(cfg.moe),
                          upm_model_task_list(&cfg, names, sizeof names));
    }
    for (int col = 0; !rc && col < ncols && rows; col++) {
        for (int t = 0, r0 = 0; !rc && t < nt; r0 += tm[t].nkinds, t++) {
            int video = 0;
            for (int i = 0; i < tm[t].task.n_inputs; i++)
                video |= tm[t].task.inputs[i].modality == UPM_MOD_VIDEO;
            rc = upm_model_gate_map(m, col_block[col], col_gate[col], pats + r0, tm[t].nkinds, video, tm[t].id,
                                    one + (size_t)r0 * E, &err);
        }
        if (rc)
            break;
        for (int r = 0; r < rows; r++) {
            const float *v = one + (size_t)r * E;
            int best = 0;
            for (int e = 1; e < E; e++)
                if (v[e] > v[best])
                    best = e; /* ties: the lower index, as the gate's top-k */
            top[(size_t)r * ncols + col] = best;
            memcpy(G + ((size_t)r * ncols + col) * E, v, sizeof(float) * E);
        }
    }
    if (!rc && json) {
        cJSON *j = cJSON_CreateObject(), *ta = cJSON_AddArrayToObject(j, "tasks");
        cJSON_AddStringToObject(j, "checkpoint", ckpt);
        cJSON_AddNumberToObject(j, "experts", E);
        cJSON_AddNumberToObject(j, "topk", m->cfg.topk);
        for (int t = 0, r = 0; t < nt; t++) {
            cJSON *to = cJSON_CreateObject(), *ka = cJSON_AddArrayToObject(to, "kinds");
            cJSON_AddStringToObject(to, "task", tm[t].task.name);
            cJSON_AddItemToArray(ta, to);
            for (int k = 0; k < tm[t].nkinds; k++, r++) {
                const upm_token_kind *kd = &tm[t].kinds[k];
                cJSON *ko = cJSON_CreateObject(), *ga = cJSON_AddArrayToObject(ko, "gates");
                char bits[16];
                upm_attr_format_bits(kd->attr, bits, sizeof bits);
                cJSON_AddStringToObject(ko, "side", kd->side == UPM_SIDE_INPUT ? "input" : "target");
                cJSON_AddStringToObject(ko, "what", kd->what);
                cJSON_AddStringToObject(ko, "attributes", bits);
                cJSON_AddNumberToObject(ko, "attr", kd->attr);
                for (int col = 0; col < ncols; col++) {
                    cJSON *go = cJSON_CreateObject(), *va = cJSON_AddArrayToObject(go, "values");
                    cJSON_AddNumberToObject(go, "block", col_block[col]);
                    cJSON_AddStringToObject(go, "gate", gate_names[col_gate[col]]);
                    cJSON_AddNumberToObject(go, "top1", top[(size_t)r * ncols + col]);
                    for (int e = 0; e < E; e++)
                        cJSON_AddItemToArray(va, cJSON_CreateNumber(G[((size_t)r * ncols + col) * E + e]));
                    cJSON_AddItemToArray(ga, go);
                }
                cJSON_AddItemToArray(ka, ko);
            }
        }
        char *s = cJSON_Print(j);
        if (s)
            printf("%s\n", s);
        free(s);
        cJSON_Delete(j);
    } else if (!rc) {
        printf("gate maps of %s: %d routed gates, %d experts, top-%d; the top-1 expert per block and gate\n", ckpt,
               ncols, E, m->cfg.topk);
        for (int t = 0, r = 0; t < nt; t++) {
            printf("task %s\n  %-34s %-8s", tm[t].task.name, "token kind", "bits");
            for (int col = 0; col < ncols; col++)
                printf(" %3s", col_gate[col] == UPM_GATE_ATTN ? "a" : col_gate[col] == UPM_GATE_FC1 ? "f1" : "f2");
            printf("   (block:");
            for (int col = 0; col < ncols; col++)
                if (!col || col_block[col] != col_block[col - 1])
                    printf(" %d", col_block[col]);
            printf(")\n");
            for (int k = 0; k < tm[t].nkinds; k++, r++) {
                char what[128], bits[16];
                snprintf(what, sizeof what, "%s %s", tm[t].kinds[k].side == UPM_SIDE_INPUT ? "input" : "target",
                         tm[t].kinds[k].what);
                upm_attr_format_bits(tm[t].kinds[k].attr, bits, sizeof bits);
                printf("  %-34s %-8s", what, bits);
                for (int col = 0; col < ncols; col++)
                    printf(" %3d", top[(size_t)r * ncols + col]);
                putchar('\n');
            }
        }
    }
    if (!rc && plot_out) {
        int prc = plot(plot_out, tm, nt, m, top, ncols, col_block, col_gate);
        if (prc == 0 && !json)
            printf("heat map: %s\n", plot_out);
        if (prc) {
            free(G), free(top), free(one), free(tm);
            upm_model_free(m);
            upm_backend_free(be);
            return prc;
        }
    }
    free(G), free(top), free(one), free(tm);
    upm_model_free(m);
    upm_backend_free(be);
    if (rc) {
        fprintf(stderr, PROG ": error: %s\n", err.msg);
        return rc == UPM_EUSAGE ? 2 : 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "gates"))
        return cmd_gates(argc - 1, argv + 1);
    if (!strcmp(argv[1], "interference"))
        return upm_analyze_interference(argc - 1, argv + 1);
    fprintf(stderr, PROG ": error: unknown command '%s' (gates, interference)\n", argv[1]);
    return 2;
}
