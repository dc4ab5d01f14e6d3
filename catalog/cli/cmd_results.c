/* upmoe-catalog results [--dataset D] [--run N] [--csv] [--json]: the evaluation results upmoe-eval stored
 * (schema v7), oldest first: a table for people, CSV, or JSON objects. */
#include <inttypes.h>
#include <string.h>

#include "cli.h"
#include "results.h"

typedef struct results_ctx {
    cli_table *table;
    cJSON *arr;
    int csv, n;
} results_ctx;

static int result_row(const upm_eval_record *r, void *p)
{
    results_ctx *x = p;
    x->n++;
    if (x->arr) {
        cJSON *o = cJSON_CreateObject();
        if (r->run_id > 0)
            cJSON_AddNumberToObject(o, "run", (double)r->run_id);
        else
            cJSON_AddNullToObject(o, "run");
        cJSON_AddNumberToObject(o, "step", (double)r->step);
        cJSON_AddStringToObject(o, "checkpoint", r->checkpoint);
        cJSON_AddStringToObject(o, "dataset", r->dataset);
        cJSON_AddStringToObject(o, "task", r->task);
        cJSON_AddStringToObject(o, "formulation", r->formulation);
        cJSON_AddStringToObject(o, "metric", r->metric);
        cJSON_AddNumberToObject(o, "value", r->value);
        if (r->chance >= 0)
            cJSON_AddNumberToObject(o, "chance", r->chance);
        else
            cJSON_AddNullToObject(o, "chance");
        cJSON_AddNumberToObject(o, "samples", (double)r->samples);
        cJSON_AddStringToObject(o, "at", r->at);
        cJSON_AddItemToArray(x->arr, o);
        return 0;
    }
    char run[32] = "-", step[32], value[32], chance[32] = "-", samples[32];
    if (r->run_id > 0)
        snprintf(run, sizeof run, "%" PRId64, r->run_id);
    snprintf(step, sizeof step, "%" PRId64, r->step);
    snprintf(value, sizeof value, "%.6g", r->value);
    if (r->chance >= 0)
        snprintf(chance, sizeof chance, "%.6g", r->chance);
    snprintf(samples, sizeof samples, "%" PRId64, r->samples);
    if (x->csv) {
        printf("%s,%s,%s,%s,%s,%s,%s,%s,%s\n", r->run_id > 0 ? run : "", step, r->dataset, r->task, r->metric, value,
               r->chance >= 0 ? chance : "", samples, r->at);
        return 0;
    }
    const char *cells[] = {run, step, r->dataset, r->metric, value, chance, samples, r->at};
    cli_table_add(x->table, cells);
    return 0;
}

int cmd_results(cli *c, int argc, char **argv)
{
    const char *dataset = NULL, *run = NULL;
    int csv = 0;
    const cli_opt opts[] = {{"dataset", 1, &dataset, NULL, NULL, NULL, 0}, {"run", 1, &run, NULL, NULL, NULL, 0},
                            {"csv", 0, NULL, &csv, NULL, NULL, 0}, {0}};
    int npos, rc = cli_parse(argc - 1, argv + 1, opts, NULL, 0, &npos, "results");
    if (rc)
        return rc;
    long long run_id = 0;
    if (run && (rc = cli_int("results", "--run", run, 1, INT64_MAX, &run_id)))
        return rc;
    if (csv && c->json)
        return cli_usage_error("results", "--csv and --json exclude each other");
    upm_catalog *cat;
    if ((rc = cli_open(c, UPM_CAT_READONLY, &cat)))
        return rc;
    static const char *const headers[] = {"RUN", "STEP", "DATASET", "METRIC", "VALUE", "CHANCE", "SAMPLES", "AT"};
    results_ctx x = {.csv = csv};
    if (c->json)
        x.arr = cJSON_CreateArray();
    else if (csv)
        printf("run,step,dataset,task,metric,value,chance,samples,at\n");
    else
        x.table = cli_table_new(8, headers, "01001110");
    rc = upm_results_foreach(cat, dataset, run_id, result_row, &x, &c->err);
    upm_catalog_close(cat);
    if (rc) {
        cJSON_Delete(x.arr);
        cli_table_free(x.table);
        return cli_fail(&c->err);
    }
    if (x.arr)
        cli_print_json(x.arr);
    else if (x.table)
        cli_table_print(x.table, stdout);
    return 0;
}
