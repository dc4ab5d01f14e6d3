/* upmoe-eval: evaluates a checkpoint. By default the paper's protocol: every sample of each named
 * dataset (or of each dataset of a mixture) once, in shard order, with the metrics of its formulation
 * (docs/evaluation.md). With --steps N, the sampled quick look of earlier versions: N batches drawn from
 * the mixture as training draws them. Nothing is written. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bpe.h"
#include "catalog_ops.h"
#include "checkpoint.h"
#include "clock.h"
#include "collate.h"
#include "fileio.h"
#include "queue.h"
#include "runs.h"
#include "train.h"
#include "vocab.h"

#define PROG "upmoe-eval"
#define MAX_DATASETS 256

static const char usage[] =
    "usage: " PROG " --checkpoint DIR (--dataset NAME ... | --mixture NAME) [--limit N] [--batch N]\n"
    "       [--image-size S] [--vocab-targets full|sampled:N] [--threads N] [--backend cpu|debug]\n"
    "       [--catalog PATH] [--bpe-vocab PATH]\n"
    "       [--json] [--no-store] [--predictions FILE] [--beams N] [--max-len N] [--length-penalty A]\n"
    "       [--no-cache] [--video-crops 1|3] [--video-clips N] [--steps N [--seed S]]\n"
    "Evaluates the weights of a checkpoint (a step-* directory, a run's --out directory for its newest, or\n"
    "the id of an upmoe-jobs job for its run's last checkpoint)\n"
    "on every sample of each dataset once (--dataset, repeatable, or every dataset of --mixture), in shard\n"
    "order, with evaluation transforms, and prints the metrics of each dataset's formulation next to chance:\n"
    "  label   top-1 and top-5 over the label set (label texts encoded once); two classes: also F1 of\n"
    "          class 1 and Matthews' correlation (GLUE); a cloze prompt is read at its <|spe|>; a video's\n"
    "          class probabilities averaged over its views (crops x clips)\n"
    "  pair    R@1, R@5, R@10 image->text and text->image over the whole split as the gallery, and their\n"
    "          mean (every text equal to a sample's caption counts as its ground truth)\n"
    "  vocab   teacher-forced token accuracy; perplexity with --vocab-targets full (the default)\n"
    "  caption also a generated caption per sample (beam search; the image encoded once, its keys and values\n"
    "          cached), scored with BLEU-4 and CIDEr-D against the sample's captions (one per line)\n"
    "--beams N  beam size of caption generation (default 2, as the official code; 1 = greedy)\n"
    "--max-len N  generated tokens at most, the end token included (default: the task's caption length)\n"
    "--length-penalty A  rank finished beams by log-probability / (tokens + 1)^A (default 0: none; the\n"
    "           paper's MSVD setting is 2.0)\n"
    "--no-cache  generate by re-encoding the caption so far at every step (what the cache saves; the same\n"
    "           captions, slower)\n"
    "--video-crops 1|3  spatial views of a video to classify (default 3: the two ends and the centre of its\n"
    "           longer side; 1: the centre crop)\n"
    "--video-clips N  temporal views (default 1: the centre frame of each of the clip's segments; N: N\n"
    "           offsets spread through the segments), 1 to 16\n"
    "--limit N  the first N samples of each dataset only (a quick look)\n"
    "--batch N  rows per batch (default: each dataset's catalog batch size)\n"
    "--steps N  instead: N batches drawn from --mixture as training draws them (pair: the batch is the\n"
    "           gallery), loss and top-1 only; the sampled quick look of earlier versions. Vocabulary\n"
    "           tasks also get the input-blind baseline: the accuracy of the best predictor that ignores the\n"
    "           input (MLM: one constant token; captions: one token per position), on the same targets\n"
    "--json     one JSON document on standard output; the same inputs give the same bytes\n"
    "--job ID --attempt N  set by upmoe-jobs for evaluation jobs: store only while attempt N owns job ID\n"
    "           (exit status 3 when it no longer does)\n"
    "--predictions FILE  one JSON line per sample, in pass order (to recompute any metric elsewhere):\n"
    "           label datasets: the class and the predicted class; caption datasets: the generated caption\n"
    "           and the references\n"
    "The results are stored in the catalog (upmoe-catalog results) with the checkpoint's run and step;\n"
    "--no-store leaves the catalog as it is (the sampled --steps mode never stores).\n"
    "A progress line with an ETA goes to a terminal's standard error.\n";

typedef struct progress_ctx {
    int on;
    double t0, last;
    char dataset[128];
} progress_ctx;

static void progress(void *ctx, const char *dataset, int64_t done, int64_t total)
{
    progress_ctx *p = ctx;
    double now = upm_monotonic_s();
    if (strcmp(p->dataset, dataset)) {
        snprintf(p->dataset, sizeof p->dataset, "%s", dataset);
        p->t0 = now, p->last = 0;
    }
    if (!p->on || now - p->last < 0.2)
        return;
    p->last = now;
    double rate = now > p->t0 ? (double)done / (now - p->t0) : 0;
    fprintf(stderr, "\r" PROG ": %s: %lld", dataset, (long long)done);
    if (total > 0)
        fprintf(stderr, " / %lld samples, %.1f/s, ETA %.0fs\033[K", (long long)total, rate,
                rate > 0 && total > done ? (double)(total - done) / rate : 0.0);
    else
        fprintf(stderr, " samples, %.1f/s\033[K", rate);
}

static int add_member(const upm_mixture_member *m, void *ctx)
{
    char **names = ctx;
    int n = 0;
    while (names[n])
        n++;
    if (n + 1 >= MAX_DATASETS)
        return UPM_EINVAL;
    names[n] = strdup(m->dataset);
    return names[n] ? 0 : UPM_ENOMEM;
}

/* The datasets of a mixture, in its order (upm_mixture_foreach_member). */
static int mixture_datasets(const upm_train_opts *o, const char *mixture, char **names, upm_err *err)
{
    char path[4096];
    upm_catalog *cat = NULL;
    int rc = upm_catalog_resolve_path(o->catalog, path, sizeof path, err);
    if (!rc)
        rc = upm_catalog_open(path, UPM_CAT_READONLY, &cat, err);
    if (!rc && (rc = upm_mixture_foreach_member(cat, mixture, add_member, names, err)) == UPM_EINVAL && !err->msg[0])
        upm_errf(err, UPM_EINVAL, "mixture %s has more than %d datasets", mixture, MAX_DATASETS - 1);
    upm_catalog_close(cat);
    return rc;
}

/* Every dataset must exist and have shard URLs (upm_eval_check_datasets), before the model is loaded. */
static int check_datasets(const upm_train_opts *o, char **names, int n, upm_err *err)
{
    char path[4096];
    upm_catalog *cat = NULL;
    int rc = upm_catalog_resolve_path(o->catalog, path, sizeof path, err);
    if (!rc)
        rc = upm_catalog_open(path, UPM_CAT_READONLY, &cat, err);
    if (!rc)
        rc = upm_eval_check_datasets(cat, (const char *const *)names, n, err);
    upm_catalog_close(cat);
    return rc;
}

/* A caption dataset's line: {"dataset", "index", "caption", "references": [...]} (cJSON escapes the text). */
static char bpe_path[4096]; /* the merges file found by default (bpe.h) */

static char *caption_line(const upm_eval_result *r, int64_t k)
{
    cJSON *o = cJSON_CreateObject(), *refs = cJSON_CreateArray();
    if (!o || !refs) {
        cJSON_Delete(o), cJSON_Delete(refs);
        return NULL;
    }
    cJSON_AddStringToObject(o, "dataset", r->dataset);
    cJSON_AddNumberToObject(o, "index", (double)k);
    cJSON_AddStringToObject(o, "caption", r->generated[k]);
    upm_text_span lines[64];
    int nl = upm_caption_lines(r->references[k], strlen(r->references[k]), lines, 64);
    for (int i = 0; i < nl; i++) {
        char *t = strndup(lines[i].s, lines[i].n);
        if (t)
            cJSON_AddItemToArray(refs, cJSON_CreateString(t));
        free(t);
    }
    cJSON_AddItemToObject(o, "references", refs);
    char *line = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return line;
}

/* --predictions FILE: one JSON line per sample of each caption dataset (caption_line) and per scored
 * sample of each label dataset ({"dataset", "index", "label", "prediction"}), in pass order, written
 * atomically. */
static int write_predictions(const char *path, const upm_eval_result *res, int n, upm_err *err)
{
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (int i = 0; buf && i < n; i++)
        for (int64_t k = 0; buf && k < res[i].ngenerated; k++) {
            char *line = caption_line(&res[i], k);
            size_t ll = line ? strlen(line) : 0;
            while (line && buf && cap - len < ll + 2) {
                char *b = realloc(buf, cap *= 2);
                if (!b)
                    free(buf);
                buf = b;
            }
            if (!line || !buf) {
                free(line), free(buf);
                buf = NULL;
                break;
            }
            memcpy(buf + len, line, ll);
            len += ll, buf[len++] = '\n';
            free(line);
        }
    for (int i = 0; buf && i < n; i++)
        for (int64_t k = 0; buf && k < res[i].npredicted; k++) {
            if (cap - len < 512) {
                char *b = realloc(buf, cap *= 2);
                if (!b)
                    free(buf);
                buf = b;
                if (!buf)
                    break;
            }
            len += (size_t)snprintf(buf + len, cap - len,
                                    "{\"dataset\": \"%s\", \"index\": %lld, \"label\": %d, \"prediction\": %d}\n",
                                    res[i].dataset, (long long)k, res[i].labels[k], res[i].predicted[k]);
        }
    if (!buf)
        return upm_errf(err, UPM_ENOMEM, "no memory for the predictions");
    int rc = upm_write_file_atomic(path, buf, len, err);
    free(buf);
    return rc;
}

static void print_full(const char *ckpt, const upm_eval_result *res, int n, int json)
{
    if (json) {
        printf("{\"checkpoint\": \"%s\", \"datasets\": [", ckpt);
        for (int i = 0; i < n; i++) {
            const upm_eval_result *r = &res[i];
            printf("%s{\"dataset\": \"%s\", \"task\": \"%s\", \"formulation\": \"%s\", \"samples\": %lld, "
                   "\"skipped\": %lld, \"scored\": %lld, \"loss\": ", i ? ", " : "", r->dataset, r->task,
                   upm_formulation_name(r->formulation), (long long)r->samples, (long long)r->skipped,
                   (long long)r->scored);
            if (r->loss >= 0)
                printf("%.6f", r->loss);
            else
                printf("null");
            if (r->formulation == UPM_FORM_PAIR)
                printf(", \"captions\": %lld", (long long)r->captions);
            for (int pass = 0; pass < 2; pass++) {
                printf(", \"%s\": {", pass ? "chance" : "metrics");
                for (int k = 0, first = 1; k < r->nmetrics; k++) {
                    double v = pass ? r->metrics[k].chance : r->metrics[k].value;
                    if (pass && v < 0)
                        continue;
                    printf("%s\"%s\": %.6f", first ? "" : ", ", r->metrics[k].name, v);
                    first = 0;
                }
                printf("}");
            }
            printf("}");
        }
        printf("]}\n");
        return;
    }
    for (int i = 0; i < n; i++) {
        const upm_eval_result *r = &res[i];
        printf("%s (%s, %s): %lld samples", r->dataset, r->task, upm_formulation_name(r->formulation),
               (long long)r->samples);
        if (r->skipped)
            printf(" (%lld left out)", (long long)r->skipped);
        if (r->formulation == UPM_FORM_PAIR)
            printf(", %lld captions", (long long)r->captions);
        if (r->loss >= 0)
            printf(", loss %.4f", r->loss);
        printf(" (%.2f s", r->seconds);
        if (r->formulation == UPM_FORM_VOCAB_CAPTION)
            printf("; generating the captions %.2f s", r->generate_seconds);
        printf(")\n");
        for (int k = 0; k < r->nmetrics; k++) {
            printf("  %-20s %.4f", r->metrics[k].name, r->metrics[k].value);
            if (r->metrics[k].chance >= 0)
                printf("  (chance %.4g)", r->metrics[k].chance);
            printf("\n");
        }
    }
}

static void print_sampled(const char *path, const upm_eval_row *rows, int n, int json)
{
    int wd = 0, wt = 0; /* the columns as wide as the longest names, so long dataset names stay aligned */
    for (int i = 0; i < n; i++) {
        int ld = (int)strlen(rows[i].dataset), lt = (int)strlen(rows[i].task);
        wd = ld > wd ? ld : wd;
        wt = lt > wt ? lt : wt;
    }
    if (json)
        printf("{\"checkpoint\": \"%s\", \"datasets\": [", path);
    for (int i = 0; i < n; i++) {
        const upm_eval_row *r = &rows[i];
        if (json) {
            printf("%s{\"dataset\": \"%s\", \"task\": \"%s\", \"batches\": %lld, \"samples\": %lld, \"scored\": %lld, "
                   "\"loss\": %.6f, \"accuracy\": ", i ? ", " : "", r->dataset, r->task, (long long)r->batches,
                   (long long)r->samples, (long long)r->scored, r->loss);
            if (r->accuracy >= 0)
                printf("%.6f, \"chance\": %.6f", r->accuracy, r->chance);
            else
                printf("null");
            if (r->accuracy_t2i >= 0)
                printf(", \"accuracy_t2i\": %.6f", r->accuracy_t2i);
            if (r->blind >= 0)
                printf(", \"blind\": %.6f", r->blind);
            printf("}");
        } else {
            printf("%-*s  %-*s %6lld samples  loss %.4f", wd, r->dataset, wt, r->task, (long long)r->samples,
                   r->loss);
            if (r->accuracy_t2i >= 0)
                printf("  R@1 image->text %.4f, text->image %.4f (chance %.3g, %.1fx and %.1fx)", r->accuracy,
                       r->accuracy_t2i, r->chance, r->chance > 0 ? r->accuracy / r->chance : 0.0,
                       r->chance > 0 ? r->accuracy_t2i / r->chance : 0.0);
            else if (r->accuracy >= 0)
                printf("  accuracy %.4f (chance %.3g, %.1fx", r->accuracy, r->chance,
                       r->chance > 0 ? r->accuracy / r->chance : 0.0);
            if (r->accuracy_t2i < 0 && r->accuracy >= 0 && r->blind >= 0) /* vocab: what ignoring the input gets */
                printf("; input-blind %.4f)", r->blind);
            else if (r->accuracy_t2i < 0 && r->accuracy >= 0)
                printf(")");
            printf("\n");
        }
    }
    if (json)
        printf("]}\n");
}

/* --checkpoint: a step directory, a run's --out directory (its newest step), or a job id of this catalog
 * (its run's last checkpoint). */
static int resolve_checkpoint(const upm_train_opts *o, const char *arg, char *path, size_t n, upm_err *err)
{
    struct stat st;
    if (stat(arg, &st) == 0 || strspn(arg, "0123456789") != strlen(arg) || !arg[0]) {
        if (upm_checkpoint_latest(arg, path, n, err) != 0) /* not a run directory: the step directory itself */
            snprintf(path, n, "%s", arg);
        upm_err_clear(err);
        return 0;
    }
    char cp[4096];
    upm_catalog *cat = NULL;
    upm_job j;
    int have_job = 0, rc = upm_catalog_resolve_path(o->catalog, cp, sizeof cp, err);
    if (!rc)
        rc = upm_catalog_open(cp, UPM_CAT_READONLY, &cat, err);
    if (!rc && !(rc = upm_job_get(cat, strtoll(arg, NULL, 10), &j, err)))
        have_job = 1;
    upm_run_progress p = {0};
    if (!rc && j.run_id > 0)
        rc = upm_run_progress_get(cat, j.run_id, &p, err);
    if (!rc && !p.last_checkpoint[0])
        rc = upm_errf(err, UPM_EINVAL, "job %s has no checkpoint yet (it is %s)", arg, j.state);
    if (!rc)
        snprintf(path, n, "%s", p.last_checkpoint);
    if (have_job)
        upm_job_free(&j);
    upm_catalog_close(cat);
    return rc;
}

/* The evaluation's rows in the catalog: the checkpoint's run (when this catalog has it) and step from its
 * state.json, one row per dataset and metric (and its loss), in one transaction. */
static int store(const upm_train_opts *o, const char *ckpt, const upm_eval_result *res, int n, int *stored,
                 upm_err *err)
{
    char sp[4200], path[4096], *state = NULL;
    snprintf(sp, sizeof sp, "%s/state.json", ckpt);
    int rc = upm_read_file(sp, &state, NULL, err);
    cJSON *js = rc ? NULL : cJSON_Parse(state);
    free(state);
    if (!rc && !js)
        rc = upm_errf(err, UPM_EBADDATA, "%s is not JSON", sp);
    const cJSON *run = cJSON_GetObjectItemCaseSensitive(js, "run_id"), *step = cJSON_GetObjectItemCaseSensitive(js, "step");
    int64_t run_id = cJSON_IsNumber(run) ? (int64_t)run->valuedouble : 0;
    int64_t at = cJSON_IsNumber(step) ? (int64_t)step->valuedouble : 0;
    cJSON_Delete(js);
    upm_catalog *cat = NULL;
    if (!rc)
        rc = upm_catalog_resolve_path(o->catalog, path, sizeof path, err);
    if (!rc)
        rc = upm_catalog_open(path, 0, &cat, err);
    if (!rc && o->job > 0) /* an evaluation job: stored only while this attempt owns it (jobs.md, fencing) */
        upm_catalog_fence(cat, o->job, o->attempt);
    int exists = 0;
    if (!rc && run_id > 0 && !(rc = upm_run_exists(cat, run_id, &exists, err)) && !exists)
        run_id = 0; /* a checkpoint trained against another catalog */
    if (!rc)
        rc = upm_eval_results_store(cat, run_id, at, ckpt, res, n, 0, stored, err);
    upm_catalog_close(cat);
    return rc;
}

int main(int argc, char **argv)
{
    upm_train_opts o;
    upm_train_opts_default(&o);
    const char *ckpt = NULL;
    long long steps = 0, limit = 0;
    int json = 0, ndatasets = 0, no_store = 0;
    const char *predictions = NULL;
    char *datasets[MAX_DATASETS] = {0};
    int beams = 0, max_len = 0, no_cache = 0, crops = 0, clips = 0;
    double length_penalty = 0;
    enum { O_MIX = 256, O_CKPT, O_STEPS, O_BATCH, O_IMAGE, O_VOCAB, O_SEED, O_THREADS, O_CAT, O_JSON, O_VERSION, O_BPE,
           O_DATASET, O_LIMIT, O_NO_STORE, O_PRED, O_JOB, O_ATTEMPT, O_BEAMS, O_MAXLEN, O_LENPEN, O_NOCACHE,
           O_CROPS, O_CLIPS, O_BACKEND };
    static const struct option opts[] = {
        {"mixture", 1, 0, O_MIX}, {"checkpoint", 1, 0, O_CKPT}, {"steps", 1, 0, O_STEPS}, {"batch", 1, 0, O_BATCH},
        {"image-size", 1, 0, O_IMAGE}, {"vocab-targets", 1, 0, O_VOCAB}, {"seed", 1, 0, O_SEED},
        {"threads", 1, 0, O_THREADS}, {"catalog", 1, 0, O_CAT}, {"json", 0, 0, O_JSON}, {"bpe-vocab", 1, 0, O_BPE},
        {"dataset", 1, 0, O_DATASET}, {"limit", 1, 0, O_LIMIT}, {"no-store", 0, 0, O_NO_STORE}, {"predictions", 1, 0, O_PRED},
        {"job", 1, 0, O_JOB}, {"attempt", 1, 0, O_ATTEMPT}, {"beams", 1, 0, O_BEAMS}, {"max-len", 1, 0, O_MAXLEN},
        {"length-penalty", 1, 0, O_LENPEN}, {"no-cache", 0, 0, O_NOCACHE}, {"video-crops", 1, 0, O_CROPS},
        {"video-clips", 1, 0, O_CLIPS}, {"backend", 1, 0, O_BACKEND},
        {"help", 0, 0, 'h'},
        {"version", 0, 0, O_VERSION},
        {0, 0, 0, 0}};
    int c;
    upm_err verr;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end = NULL;
        long long v = optarg ? strtoll(optarg, &end, 10) : 0;
        int bad_int = optarg && (!*optarg || *end || v < 0);
        switch (c) {
        case O_MIX: o.mixture = optarg; bad_int = 0; break;
        case O_BACKEND: o.backend = optarg; bad_int = 0; break;
        case O_CKPT: ckpt = optarg; bad_int = 0; break;
        case O_DATASET:
            bad_int = 0;
            if (ndatasets == MAX_DATASETS - 1) {
                fprintf(stderr, PROG ": error: at most %d --dataset options\n", MAX_DATASETS - 1);
                return 2;
            }
            datasets[ndatasets++] = optarg; /* argv's own string: only a mixture's names are allocated */
            break;
        case O_STEPS: steps = v; break;
        case O_LIMIT: limit = v; break;
        case O_BATCH: o.batch = (int)v; break;
        case O_IMAGE: o.image_size = (int)v; break;
        case O_SEED: o.seed = (uint64_t)v; break;
        case O_THREADS: o.threads = (int)v; break;
        case O_CAT: o.catalog = optarg; bad_int = 0; break;
        case O_BPE: o.bpe_vocab = optarg; bad_int = 0; break;
        case O_JSON: json = 1; break;
        case O_NO_STORE: no_store = 1; break;
        case O_PRED: predictions = optarg; bad_int = 0; break;
        case O_BEAMS: beams = (int)v; bad_int |= v < 1 || v > 64; break;
        case O_MAXLEN: max_len = (int)v; bad_int |= v < 1 || v > 1024; break;
        case O_LENPEN:
            bad_int = 0;
            length_penalty = strtod(optarg, &end);
            if (!*optarg || *end || !(length_penalty >= 0 && length_penalty <= 100)) {
                fprintf(stderr, PROG ": error: --length-penalty needs a number from 0 to 100, not '%s'\n", optarg);
                return 2;
            }
            break;
        case O_NOCACHE: no_cache = 1; break;
        case O_CROPS: crops = (int)v; bad_int |= v != 1 && v != 3; break;
        case O_CLIPS: clips = (int)v; bad_int |= v < 1 || v > 16; break;
        case O_JOB: o.job = v; break;
        case O_ATTEMPT: o.attempt = v; break;
        case O_VOCAB:
            bad_int = 0;
            if (upm_vocab_targets_parse(optarg, &o.vocab_sampled, &verr)) {
                fprintf(stderr, PROG ": error: %s\n", verr.msg);
                return 2;
            }
            break;
        case 'h': fputs(usage, stdout); return 0;
        case O_VERSION: printf(PROG " %s\n", UPMOE_VERSION); return 0;
        default: fprintf(stderr, PROG ": error: unknown or incomplete option '%s' (see --help)\n", argv[optind - 1]); return 2;
        }
        if (bad_int) {
            fprintf(stderr, PROG ": error: %s needs a non-negative integer%s, not '%s'\n", argv[optind - 2],
                    c == O_BEAMS    ? " from 1 to 64"
                    : c == O_MAXLEN ? " from 1 to 1024"
                    : c == O_CROPS  ? " (1 or 3)"
                    : c == O_CLIPS  ? " from 1 to 16"
                                    : "",
                    optarg);
            return 2;
        }
    }
    int sampled = steps > 0;
    if (!ckpt || optind < argc || (!o.mixture && !ndatasets) || (o.mixture && ndatasets) ||
        (sampled && (ndatasets || limit))) {
        fprintf(stderr, PROG ": error: --checkpoint and one of --mixture or --dataset are required; --steps goes "
                "with --mixture alone (see --help)\n");
        return 2;
    }
    if (!o.bpe_vocab)
        o.bpe_vocab = upm_bpe_default_path(bpe_path, sizeof bpe_path);
    upm_err err = {0};
    char path[4096];
    int rc = resolve_checkpoint(&o, ckpt, path, sizeof path, &err);
    if (!rc && sampled) {
        upm_eval_row *rows;
        int n;
        if (!(rc = upm_evaluate(&o, path, steps, &rows, &n, &err))) {
            print_sampled(path, rows, n, json);
            free(rows);
        }
    } else if (!rc) {
        if (o.mixture)
            rc = mixture_datasets(&o, o.mixture, datasets, &err);
        for (ndatasets = 0; datasets[ndatasets]; ndatasets++)
            ;
        if (!rc)
            rc = check_datasets(&o, datasets, ndatasets, &err);
        progress_ctx pc = {.on = isatty(2) && !json};
        upm_eval_opts eo = {(const char *const *)datasets, ndatasets, limit, progress, &pc, predictions != NULL,
                            beams, max_len, length_penalty, no_cache, crops, clips};
        upm_eval_result *res = NULL;
        int n = 0;
        if (!rc)
            rc = upm_evaluate_full(&o, path, &eo, &res, &n, &err);
        if (pc.on)
            fprintf(stderr, "\r\033[K");
        int stored = 0;
        if (!rc && !no_store)
            rc = store(&o, path, res, n, &stored, &err);
        if (!rc && predictions)
            rc = write_predictions(predictions, res, n, &err);
        if (!rc)
            print_full(path, res, n, json);
        if (!rc && stored && !json)
            printf("stored %d results in the catalog ('upmoe-catalog results')\n", stored);
        upm_eval_results_free(res, n);
    }
    for (int i = 0; o.mixture && datasets[i]; i++)
        free(datasets[i]);
    if (rc) {
        fprintf(stderr, PROG ": error: %s\n", err.msg);
        return err.code == UPM_EUSAGE ? 2 : err.code == UPM_ELEASE ? 3 : 1; /* 3: as upmoe-train, for the worker */
    }
    return 0;
}
