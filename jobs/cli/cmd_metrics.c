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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "catalog.h"
#include "catalog_ops.h"
#include "cli.h"
#include "queue.h"
#include "shellword.h"
#include "sqlutil.h"
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
    sqlite3_stmt *st = NULL;
    if (upm_sql_prepare(cat,
                        "SELECT step, task, dataset, loss, accuracy, samples, lr, grad_norm, samples_per_s, ranks "
                        "FROM metrics WHERE run_id = ?1 AND step >= ?2 AND (?3 IS NULL OR task = ?3) ORDER BY step, task",
                        &st, &err))
        return fail(&err);
    sqlite3_bind_int64(st, 1, run);
    sqlite3_bind_int64(st, 2, since);
    upm_sql_bind_text_or_null(st, 3, task);
    static const char *const cols[] = {"step", "task", "dataset", "loss", "accuracy", "samples", "lr", "grad_norm",
                                       "samples_per_s", "ranks"};
    if (fmt == 1)
        printf("step,task,dataset,loss,accuracy,samples,lr,grad_norm,samples_per_s,ranks\n");
    else if (fmt == 0)
        printf("%8s  %-24s %-20s %10s %8s %8s %10s %9s %10s\n", "STEP", "TASK", "DATASET", "LOSS", "ACC", "SAMPLES",
               "LR", "GNORM", "SAMPLES/S");
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        if (fmt == 2) {
            cJSON *o = cJSON_CreateObject();
            for (int c = 0; c < 10; c++) {
                int t = sqlite3_column_type(st, c);
                if (t == SQLITE_NULL)
                    cJSON_AddNullToObject(o, cols[c]);
                else if (t == SQLITE_TEXT)
                    cJSON_AddStringToObject(o, cols[c], (const char *)sqlite3_column_text(st, c));
                else
                    cJSON_AddNumberToObject(o, cols[c], sqlite3_column_double(st, c));
            }
            char *js = cJSON_PrintUnformatted(o);
            printf("%s\n", js ? js : "{}");
            free(js);
            cJSON_Delete(o);
        } else if (fmt == 1) {
            for (int c = 0; c < 10; c++) {
                const unsigned char *v = sqlite3_column_text(st, c);
                printf("%s%s", c ? "," : "", v ? (const char *)v : "");
            }
            printf("\n");
        } else {
            char acc[16] = "-";
            if (sqlite3_column_type(st, 4) != SQLITE_NULL)
                snprintf(acc, sizeof acc, "%.3f", sqlite3_column_double(st, 4));
            printf("%8lld  %-24s %-20s %10.4f %8s %8lld %10.3e %9.3f %10.1f\n", (long long)sqlite3_column_int64(st, 0),
                   (const char *)sqlite3_column_text(st, 1), (const char *)sqlite3_column_text(st, 2),
                   sqlite3_column_double(st, 3), acc, (long long)sqlite3_column_int64(st, 5),
                   sqlite3_column_double(st, 6), sqlite3_column_double(st, 7), sqlite3_column_double(st, 8));
        }
    }
    int rc = s == SQLITE_DONE ? 0 : upm_catalog_sqlerr(cat, &err, "reading metrics");
    sqlite3_finalize(st);
    return rc ? fail(&err) : 0;
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
    sqlite3_stmt *st = NULL;
    int rc = f ? 0 : 1, ntasks = 0;
    char tasks[64][128];
    if (!rc && upm_sql_prepare(cat, "SELECT DISTINCT task FROM metrics WHERE run_id = ?1 ORDER BY task", &st, &err))
        rc = 1;
    if (!rc) {
        sqlite3_bind_int64(st, 1, run);
        while (sqlite3_step(st) == SQLITE_ROW && ntasks < 64)
            upm_sql_text(st, 0, tasks[ntasks++], sizeof tasks[0]);
        sqlite3_finalize(st);
    }
    /* one block per task (gnuplot 'index'), then the learning rate per step */
    for (int t = 0; !rc && t <= ntasks; t++) {
        const char *q = t < ntasks ? "SELECT step, loss FROM metrics WHERE run_id = ?1 AND task = ?2 ORDER BY step"
                                   : "SELECT step, max(lr) FROM metrics WHERE run_id = ?1 GROUP BY step ORDER BY step";
        if (upm_sql_prepare(cat, q, &st, &err)) {
            rc = 1;
            break;
        }
        sqlite3_bind_int64(st, 1, run);
        if (t < ntasks)
            sqlite3_bind_text(st, 2, tasks[t], -1, SQLITE_TRANSIENT);
        while (sqlite3_step(st) == SQLITE_ROW)
            fprintf(f, "%lld %.9g\n", (long long)sqlite3_column_int64(st, 0), sqlite3_column_double(st, 1));
        fprintf(f, "\n\n");
        sqlite3_finalize(st);
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
            fprintf(g, "set terminal %s\nset output '%s'\nset title 'job %lld'\nset xlabel 'step'\n"
                       "set ylabel 'loss'\nset y2label 'learning rate'\nset y2tics\nset ytics nomirror\n"
                       "set key outside right\nplot ", term, out, (long long)id);
            for (int t = 0; t < ntasks; t++)
                fprintf(g, "'%s' index %d using 1:2 with lines title '%s', ", data, t, tasks[t]);
            fprintf(g, "'%s' index %d using 1:2 axes x1y2 with lines dashtype 2 title 'learning rate'\n", data, ntasks);
            fclose(g);
            int st2 = -1;
            pid_t p = fork(); /* gnuplot SCRIPT, no shell */
            if (p == 0) {
                execlp("gnuplot", "gnuplot", script, (char *)NULL);
                _exit(127);
            }
            if (p > 0)
                waitpid(p, &st2, 0);
            if (st2 != 0) {
                fprintf(stderr, PROG ": error: gnuplot failed (status %d; is it installed? tools/setup installs "
                        "gnuplot-nox)\n", st2);
                rc = 1;
            } else
                printf("%s\n", out);
        }
    } else if (err.msg[0])
        fprintf(stderr, PROG ": error: %s\n", err.msg);
    unlink(data);
    unlink(script);
    rmdir(dir);
    return rc;
}
