/* upmoe-jobs metrics and plot: a job's metrics rows as a table, CSV or JSON, and its loss curves drawn by
 * gnuplot (docs/jobs.md). */
#define _XOPEN_SOURCE 700 /* mkdtemp */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "catalog.h"
#include "catalog_ops.h"
#include "cli.h"
#include "queue.h"
#include "shellword.h"
#include "gnuplot.h"
#include "results.h"
#include "runs.h"
#include "worker.h"

/* ---- metrics, plot ---- */

static int job_run(upm_catalog *cat, int64_t id, int64_t *run, upm_err *err)
{
    upm_job j;
    int rc = upm_job_get(cat, id, &j, err);
    if (!rc && !j.run_id)
        rc = upm_errf(err, UPM_EINVAL, "job %lld has no run yet (it is %s)", (long long)id, j.state);
    *run = j.run_id;
    upm_job_free(&j);
    return rc;
}

/* One stored row as JSON (NULL cells as null), CSV (the stored text) or a table line. */
static int print_metric(const upm_cell *c, void *ctx)
{
    int fmt = *(const int *)ctx;
    if (fmt == 2) {
        cJSON *o = cJSON_CreateObject();
        for (int i = 0; i < UPM_METRIC_NCOLS; i++) {
            if (c[i].type == UPM_CELL_NULL)
                cJSON_AddNullToObject(o, upm_metric_columns[i]);
            else if (c[i].type == UPM_CELL_TEXT)
                cJSON_AddStringToObject(o, upm_metric_columns[i], c[i].text);
            else
                cJSON_AddNumberToObject(o, upm_metric_columns[i], c[i].num);
        }
        char *js = cJSON_PrintUnformatted(o);
        printf("%s\n", js ? js : "{}");
        free(js);
        cJSON_Delete(o);
    } else if (fmt == 1) {
        for (int i = 0; i < UPM_METRIC_NCOLS; i++)
            printf("%s%s", i ? "," : "", c[i].text ? c[i].text : "");
        printf("\n");
    } else {
        char acc[16] = "-";
        if (c[4].type != UPM_CELL_NULL)
            snprintf(acc, sizeof acc, "%.3f", c[4].num);
        printf("%8lld  %-24s %-20s %10.4f %8s %8lld %10.3e %9.3f %10.1f\n", (long long)c[0].num, c[1].text, c[2].text,
               c[3].num, acc, (long long)c[5].num, c[6].num, c[7].num, c[8].num);
    }
    return 0;
}

int cmd_metrics(upm_catalog *cat, int argc, char **argv)
{
    int64_t id, run, since = 0;
    const char *task = NULL;
    int fmt = 0; /* 0 table, 1 csv, 2 json */
    if (argc < 2 || parse_id(argv[1], &id))
        return usage_error("usage: metrics ID [--task T] [--since STEP] [--csv|--json]%s", "");
    for (int i = 2; i < argc; i++) {
        char *end;
        if (!strcmp(argv[i], "--csv"))
            fmt = 1;
        else if (!strcmp(argv[i], "--json"))
            fmt = 2;
        else if (!strcmp(argv[i], "--task") && i + 1 < argc)
            task = argv[++i];
        else if (!strcmp(argv[i], "--since") && i + 1 < argc) {
            since = strtoll(argv[++i], &end, 10);
            if (since < 0 || *end)
                return usage_error("--since needs a step >= 0, not '%s'", argv[i]);
        } else
            return usage_error("metrics: unknown or incomplete option '%s'", argv[i]);
    }
    upm_err err = {0};
    if (job_run(cat, id, &run, &err))
        return fail(&err);
    if (fmt == 1)
        for (int i = 0; i < UPM_METRIC_NCOLS; i++)
            printf("%s%s", upm_metric_columns[i], i + 1 < UPM_METRIC_NCOLS ? "," : "\n");
    else if (fmt == 0)
        printf("%8s  %-24s %-20s %10s %8s %8s %10s %9s %10s\n", "STEP", "TASK", "DATASET", "LOSS", "ACC", "SAMPLES",
               "LR", "GNORM", "SAMPLES/S");
    return upm_metrics_foreach(cat, run, since, task, print_metric, &fmt, &err) ? fail(&err) : 0;
}

static int put_point(int64_t step, double value, void *f)
{
    fprintf(f, "%lld %.9g\n", (long long)step, value);
    return 0;
}

/* Evaluation results of the run as series (dataset, metric) -> (step, value), the newest row of a step
 * winning; losses and perplexities are left out (another scale). */
#define MAX_SERIES 32
typedef struct series {
    char name[160];
    int n, cap;
    int64_t *step;
    double *value;
} series;

typedef struct series_set {
    series s[MAX_SERIES];
    int n;
} series_set;

static int collect_result(const upm_eval_record *r, void *ctx)
{
    series_set *ss = ctx;
    if (!strcmp(r->metric, "loss") || !strcmp(r->metric, "perplexity"))
        return 0;
    char name[160];
    snprintf(name, sizeof name, "%s %s", r->dataset, r->metric);
    int k = 0;
    while (k < ss->n && strcmp(ss->s[k].name, name))
        k++;
    if (k == ss->n) {
        if (ss->n == MAX_SERIES)
            return 0;
        snprintf(ss->s[ss->n++].name, sizeof ss->s[0].name, "%s", name);
    }
    series *x = &ss->s[k];
    for (int i = 0; i < x->n; i++)
        if (x->step[i] == r->step) {
            x->value[i] = r->value;
            return 0;
        }
    if (x->n == x->cap) {
        int cap = x->cap ? 2 * x->cap : 16;
        int64_t *st = realloc(x->step, sizeof *st * (size_t)cap);
        if (st)
            x->step = st;
        double *v = st ? realloc(x->value, sizeof *v * (size_t)cap) : NULL;
        if (!st || !v)
            return UPM_ENOMEM;
        x->value = v, x->cap = cap;
    }
    int i = x->n++;
    while (i > 0 && x->step[i - 1] > r->step) /* keep the steps sorted */
        x->step[i] = x->step[i - 1], x->value[i] = x->value[i - 1], i--;
    x->step[i] = r->step, x->value[i] = r->value;
    return 0;
}

/* Per-task loss against step (left axis) and the learning rate (right axis), drawn by gnuplot from a
 * data file of the run's rows; the terminal follows the output's extension. */
int cmd_plot(upm_catalog *cat, int argc, char **argv)
{
    int64_t id, run;
    const char *out = NULL;
    if (argc != 4 || parse_id(argv[1], &id) || strcmp(argv[2], "-o"))
        return usage_error("usage: plot ID -o FILE.png|FILE.svg%s", "");
    out = argv[3];
    const char *ext = strrchr(out, '.');
    const char *term = ext && !strcmp(ext, ".png") ? "pngcairo size 1000,600" : ext && !strcmp(ext, ".svg") ? "svg size 1000,600" : NULL;
    if (!term)
        return usage_error("plot: the output must end in .png or .svg, not '%s'", out);
    if (strpbrk(out, "'\n"))
        return usage_error("plot: the output path may not contain a quote or a newline: '%s'", out);
    upm_err err = {0};
    if (job_run(cat, id, &run, &err))
        return fail(&err);
    /* gnuplot reads its data and script from files in a private temporary folder */
    const char *tmp = getenv("TMPDIR");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/upmoe-plot-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        fprintf(stderr, PROG ": error: cannot make a temporary folder: %s\n", strerror(errno));
        return 1;
    }
    char data[4200], script[4200];
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(script, sizeof script, "%s/plot.gp", dir);
    FILE *f = fopen(data, "w");
    int rc = f ? 0 : 1, ntasks = 0;
    char tasks[64][128];
    if (!rc && upm_metrics_tasks(cat, run, tasks, 64, &ntasks, &err))
        rc = 1;
    /* one block per task (gnuplot 'index'), then the learning rate per step, then each evaluation series */
    for (int t = 0; !rc && t <= ntasks; t++) {
        if (upm_metrics_series(cat, run, t < ntasks ? tasks[t] : NULL, put_point, f, &err)) {
            rc = 1;
            break;
        }
        fprintf(f, "\n\n");
    }
    series_set *ss = calloc(1, sizeof *ss);
    if (!rc && (!ss || upm_results_foreach(cat, NULL, run, collect_result, ss, &err)))
        rc = 1;
    for (int k = 0; !rc && k < ss->n; k++) {
        for (int i = 0; i < ss->s[k].n; i++)
            fprintf(f, "%lld %.9g\n", (long long)ss->s[k].step[i], ss->s[k].value[i]);
        fprintf(f, "\n\n");
    }
    if (f && fclose(f))
        rc = 1;
    if (!rc && !ntasks) {
        fprintf(stderr, PROG ": error: job %lld has no metrics yet\n", (long long)id);
        rc = 1;
    } else if (!rc) {
        FILE *g = fopen(script, "w");
        if (!g)
            rc = 1;
        else {
            /* the chart takes the width: the x axis ends at the last step (not the next round tic), the
             * legend sits below in columns, the learning rate has the right-hand axis */
            fprintf(g, "set terminal %s\nset output '%s'\nset termoption noenhanced\nset xrange [0:*]\n"
                       "set autoscale xfixmax\nset grid xtics ytics lc rgb '#dddddd'\n", term, out);
            if (ss->n) /* evaluation results under the losses, on the same steps */
                fprintf(g, "set multiplot layout 2,1\n");
            fprintf(g, "set title 'job %lld'\nset xlabel 'step'\n"
                       "set ylabel 'loss'\nset y2label 'learning rate'\nset y2tics format '%%.1e'\n"
                       "set ytics nomirror\nset y2range [0:*]\n"
                       "set key below horizontal maxrows 2\nplot ", (long long)id);
            for (int t = 0; t < ntasks; t++)
                fprintf(g, "'%s' index %d using 1:2 with lines title '%s', ", data, t, tasks[t]);
            fprintf(g, "'%s' index %d using 1:2 axes x1y2 with lines dashtype 2 title 'learning rate'\n", data, ntasks);
            if (ss->n) {
                fprintf(g, "set title 'evaluation'\nset ylabel 'metric'\nunset y2label\nunset y2tics\n"
                           "set ytics mirror\nset yrange [0:1]\nplot ");
                for (int k = 0; k < ss->n; k++)
                    fprintf(g, "%s'%s' index %d using 1:2 with linespoints title '%s'", k ? ", " : "", data,
                            ntasks + 1 + k, ss->s[k].name);
                fprintf(g, "\nunset multiplot\n");
            }
            fclose(g);
            upm_err gerr = {0};
            if (upm_gnuplot_run(script, &gerr)) {
                fprintf(stderr, PROG ": error: %s\n", gerr.msg);
                rc = 1;
            } else
                printf("%s\n", out);
        }
    } else if (err.msg[0])
        fprintf(stderr, PROG ": error: %s\n", err.msg);
    for (int k = 0; ss && k < ss->n; k++)
        free(ss->s[k].step), free(ss->s[k].value);
    free(ss);
    unlink(data);
    unlink(script);
    rmdir(dir);
    return rc;
}
