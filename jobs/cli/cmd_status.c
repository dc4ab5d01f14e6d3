/* upmoe-jobs status ID [--json]: the job, its run's progress (from the catalog's runs and metrics) and the
 * exact command. */
#include <cjson/cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "results.h"
#include "runs.h"
#include "shellword.h"

/* "eval": {dataset: {"step": N, metric: value, ...}}, each dataset's newest evaluated step. */
static int add_result(const upm_eval_record *r, void *evals)
{
    cJSON *d = cJSON_GetObjectItemCaseSensitive(evals, r->dataset);
    const cJSON *st = d ? cJSON_GetObjectItemCaseSensitive(d, "step") : NULL;
    if (d && st && st->valuedouble > (double)r->step)
        return 0; /* an older step (rows come in storage order) */
    if (d && st && st->valuedouble < (double)r->step)
        cJSON_DeleteItemFromObjectCaseSensitive(evals, r->dataset), d = NULL;
    if (!d) {
        d = cJSON_AddObjectToObject(evals, r->dataset);
        cJSON_AddNumberToObject(d, "step", (double)r->step);
    }
    cJSON_DeleteItemFromObjectCaseSensitive(d, r->metric); /* a re-evaluation of the step replaces it */
    cJSON_AddNumberToObject(d, r->metric, r->value);
    return 0;
}

static int add_loss(const char *task, double loss, void *losses)
{
    cJSON_AddNumberToObject(losses, task, loss);
    return 0;
}

/* A read of the catalog that failed: the status shows what it could read and says what it could not. */
static int warn_unread(int rc, const upm_err *e)
{
    if (rc)
        fprintf(stderr, PROG ": warning: status: %s\n", e->msg);
    return rc;
}

/* The run's progress: step/total, state, checkpoint, latest loss per task, samples/s and ETA from the
 * last 20 steps' rows. */
static cJSON *progress(upm_catalog *cat, int64_t run_id)
{
    cJSON *o = cJSON_CreateObject();
    upm_run_progress p;
    upm_err e = {0};
    if (!run_id || warn_unread(upm_run_progress_get(cat, run_id, &p, &e), &e))
        return o;
    if (p.found) {
        cJSON_AddStringToObject(o, "run_state", p.state);
        cJSON_AddNumberToObject(o, "step", (double)p.step);
        cJSON_AddNumberToObject(o, "total_steps", (double)p.total_steps);
        cJSON_AddStringToObject(o, "last_checkpoint", p.last_checkpoint);
    }
    warn_unread(upm_run_latest_losses(cat, run_id, add_loss, cJSON_AddObjectToObject(o, "loss"), &e), &e);
    cJSON *evals = cJSON_CreateObject();
    warn_unread(upm_results_foreach(cat, NULL, run_id, add_result, evals, &e), &e);
    if (cJSON_GetArraySize(evals) > 0)
        cJSON_AddItemToObject(o, "eval", evals);
    else
        cJSON_Delete(evals);
    if (p.samples_per_s > 0)
        cJSON_AddNumberToObject(o, "samples_per_s", p.samples_per_s);
    if (p.s_per_step > 0 && p.total_steps > p.step)
        cJSON_AddNumberToObject(o, "eta_s", p.s_per_step * (double)(p.total_steps - p.step));
    return o;
}

int cmd_status(upm_catalog *cat, int argc, char **argv)
{
    int64_t id;
    int json = argc > 2 && !strcmp(argv[2], "--json");
    if (argc < 2 || parse_id(argv[1], &id) || argc > 3 || (argc == 3 && !json))
        return usage_error("usage: status ID [--json]%s", "");
    upm_err err = {0};
    upm_job j;
    if (upm_job_get(cat, id, &j, &err))
        return fail(&err);
    cJSON *o = progress(cat, j.run_id);
    cJSON_AddNumberToObject(o, "id", (double)j.id);
    cJSON_AddStringToObject(o, "name", j.name);
    cJSON_AddStringToObject(o, "kind", j.kind);
    cJSON_AddStringToObject(o, "state", j.state);
    cJSON_AddNumberToObject(o, "attempt", (double)j.attempt);
    cJSON_AddNumberToObject(o, "max_attempts", (double)j.max_attempts);
    cJSON_AddNumberToObject(o, "run_id", (double)j.run_id);
    cJSON_AddStringToObject(o, "out_dir", j.out_dir);
    cJSON_AddStringToObject(o, "log", j.log_path);
    cJSON_AddStringToObject(o, "message", j.message);
    cJSON_AddStringToObject(o, "backend", j.backend);
    char slurm[512];
    slurm_state_line(&j, slurm, sizeof slurm);
    if (j.slurm_job[0]) {
        cJSON_AddStringToObject(o, "slurm_job", j.slurm_job);
        cJSON_AddStringToObject(o, "slurm", slurm);
    }
    char train[PATH_MAX];
    int eval = !strcmp(j.kind, "eval"); /* upmoe-eval, without an output folder (jobs/worker.c) */
    sibling(eval ? "upmoe-eval" : "upmoe-train", train, sizeof train);
    char cmd[16384], ids[2][32];
    size_t n = 0;
    snprintf(ids[0], sizeof ids[0], "%lld", (long long)j.id);
    snprintf(ids[1], sizeof ids[1], "%lld", (long long)(j.attempt > 0 ? j.attempt : 1));
    const char *head[] = {train, "--catalog", upm_catalog_path(cat), "--job", ids[0], "--attempt", ids[1], "--out", j.out_dir};
    cmd[0] = 0;
    for (size_t i = 0; i < sizeof head / sizeof head[0] - (eval ? 2 : 0); i++)
        upm_shell_append(cmd, sizeof cmd, &n, head[i]);
    cJSON *a = cJSON_Parse(j.argv_json);
    for (int i = 0; i < cJSON_GetArraySize(a); i++)
        upm_shell_append(cmd, sizeof cmd, &n, cJSON_GetArrayItem(a, i)->valuestring);
    cJSON_Delete(a);
    cJSON_AddStringToObject(o, "command", cmd);
    if (json) {
        char *s = cJSON_PrintUnformatted(o);
        printf("%s\n", s ? s : "{}");
        free(s);
    } else {
        const cJSON *step = cJSON_GetObjectItem(o, "step"), *total = cJSON_GetObjectItem(o, "total_steps");
        printf("job %lld (%s): %s, attempt %lld of %lld\n", (long long)j.id, j.name, j.state, (long long)j.attempt,
               (long long)j.max_attempts);
        if (cJSON_IsNumber(step))
            printf("  step %.0f / %.0f\n", step->valuedouble, total->valuedouble);
        const cJSON *l;
        int w = 0; /* as wide as the longest task name */
        cJSON_ArrayForEach(l, cJSON_GetObjectItem(o, "loss"))
            w = (int)strlen(l->string) > w ? (int)strlen(l->string) : w;
        cJSON_ArrayForEach(l, cJSON_GetObjectItem(o, "loss"))
            printf("  loss %-*s  %.4f\n", w, l->string, l->valuedouble);
        const cJSON *sps = cJSON_GetObjectItem(o, "samples_per_s"), *eta = cJSON_GetObjectItem(o, "eta_s");
        if (cJSON_IsNumber(sps))
            printf("  %.1f samples/s\n", sps->valuedouble);
        if (cJSON_IsNumber(eta))
            printf("  ETA %dm%02ds\n", (int)(eta->valuedouble / 60), (int)eta->valuedouble % 60);
        const cJSON *ev, *mv;
        cJSON_ArrayForEach(ev, cJSON_GetObjectItem(o, "eval")) {
            printf("  eval %s (step %.0f):", ev->string, cJSON_GetObjectItem(ev, "step")->valuedouble);
            int first = 1;
            cJSON_ArrayForEach(mv, ev)
                if (strcmp(mv->string, "step"))
                    printf("%s %s %.4f", first ? "" : ",", mv->string, mv->valuedouble), first = 0;
            printf("\n");
        }
        const cJSON *ck = cJSON_GetObjectItem(o, "last_checkpoint");
        if (cJSON_IsString(ck) && ck->valuestring[0])
            printf("  last checkpoint %s\n", ck->valuestring);
        if (j.message[0])
            printf("  %s\n", j.message);
        if (slurm[0])
            printf("  %s\n", slurm);
        printf("  log %s\n  command %s\n", j.log_path, cmd);
    }
    cJSON_Delete(o);
    upm_job_free(&j);
    return 0;
}

