/* upmoe-catalog list tasks|datasets|mixtures|labels: aligned tables, or --json arrays of the same
 * objects that `export` writes. */
#include <string.h>

#include "cli.h"
#include "json.h"

typedef struct list_ctx {
    cli *c;
    upm_catalog *cat;
    cli_table *table;
    cJSON *arr;
    int placeholders;
} list_ctx;

/* "jpg(image) txt(text)" */
static void inputs_text(const upm_task *t, char *buf, size_t n)
{
    buf[0] = '\0';
    for (int i = 0; i < t->n_inputs; i++) {
        size_t len = strlen(buf);
        snprintf(buf + len, n - len, "%s%s(%s)", i ? " " : "", t->inputs[i].field, upm_modality_name(t->inputs[i].modality));
    }
}

void cli_target_text(const upm_task *t, char *buf, size_t n)
{
    if (t->formulation == UPM_FORM_LABEL)
        snprintf(buf, n, "labels %s (class in %s)", t->label_set, t->target_field);
    else if (t->formulation == UPM_FORM_PAIR)
        snprintf(buf, n, "%s(%s)", t->target_field, upm_modality_name(t->target_modality));
    else
        snprintf(buf, n, "vocabulary (%s)", t->target_field);
}

static int task_row(const upm_task *t, void *p)
{
    list_ctx *x = p;
    if (x->arr) {
        cJSON_AddItemToArray(x->arr, upm_task_to_json(t));
        return 0;
    }
    char inputs[512], target[256], lw[32];
    inputs_text(t, inputs, sizeof inputs);
    cli_target_text(t, target, sizeof target);
    cli_fmt_weight(t->loss_weight, lw, sizeof lw);
    const char *cells[] = {t->name, upm_formulation_name(t->formulation), inputs, target, t->causal ? "yes" : "no", lw};
    cli_table_add(x->table, cells);
    return 0;
}

static int dataset_row(const upm_dataset *d, void *p)
{
    list_ctx *x = p;
    if (x->arr) {
        cJSON_AddItemToArray(x->arr, upm_dataset_to_json(d));
        return 0;
    }
    char batch[32], w[32], lw[32], shards[32], samples[32];
    double elw;
    if (upm_dataset_effective_loss_weight(x->cat, d, &elw, &x->c->err))
        return x->c->err.code;
    snprintf(batch, sizeof batch, "%d", d->batch_size);
    cli_fmt_weight(d->sampling_weight, w, sizeof w);
    cli_fmt_weight(elw, lw, sizeof lw);
    snprintf(shards, sizeof shards, d->num_shards >= 0 ? "%lld" : "-", (long long)d->num_shards);
    snprintf(samples, sizeof samples, d->num_samples >= 0 ? "%lld" : "-", (long long)d->num_samples);
    const char *cells[] = {d->name, d->task, upm_split_name(d->split), batch, w, lw, shards, samples,
                           d->url_pattern[0] ? d->url_pattern : "(placeholder: set url=...)"};
    cli_table_add(x->table, cells);
    x->placeholders += !d->url_pattern[0];
    return 0;
}

static int labels_row(const upm_labelset_info *info, void *p)
{
    list_ctx *x = p;
    if (x->arr) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", info->name);
        cJSON_AddBoolToObject(o, "synonyms", info->synonyms);
        cJSON_AddNumberToObject(o, "count", (double)info->count);
        cJSON_AddStringToObject(o, "notes", info->notes);
        cJSON_AddItemToArray(x->arr, o);
        return 0;
    }
    char count[48];
    snprintf(count, sizeof count, info->count ? "%lld" : "%lld (empty)", info->count);
    const char *cells[] = {info->name, count, info->synonyms ? "yes" : "no", info->notes};
    cli_table_add(x->table, cells);
    return 0;
}

static int mixture_row(const char *name, const char *notes, long long members, void *p)
{
    list_ctx *x = p;
    if (x->arr) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", name);
        cJSON_AddNumberToObject(o, "datasets", (double)members);
        cJSON_AddStringToObject(o, "notes", notes);
        cJSON_AddItemToArray(x->arr, o);
        return 0;
    }
    char count[32];
    snprintf(count, sizeof count, "%lld", members);
    const char *cells[] = {name, count, notes};
    cli_table_add(x->table, cells);
    return 0;
}

int cmd_list(cli *c, int argc, char **argv)
{
    const char *pos[1];
    int npos;
    int rc = cli_parse(argc - 1, argv + 1, NULL, pos, 1, &npos, "list");
    if (rc)
        return rc;
    upm_kind kind;
    if (npos != 1 || upm_kind_parse(pos[0], &kind) != 0)
        return cli_usage_error("list", "list needs one of: tasks, datasets, mixtures, labels");
    upm_catalog *cat;
    if ((rc = cli_open(c, UPM_CAT_READONLY, &cat)))
        return rc;
    list_ctx x = {.c = c, .cat = cat};
    if (c->json)
        x.arr = cJSON_CreateArray();
    switch (kind) {
    case UPM_KIND_TASK: {
        static const char *const h[] = {"NAME", "FORMULATION", "INPUTS", "TARGET", "CAUSAL", "LOSS-W"};
        x.table = x.arr ? NULL : cli_table_new(6, h, "000001");
        rc = upm_task_foreach(cat, task_row, &x, &c->err);
        break;
    }
    case UPM_KIND_DATASET: {
        static const char *const h[] = {"NAME", "TASK", "SPLIT", "BATCH", "WEIGHT", "LOSS-W", "SHARDS", "SAMPLES", "URL"};
        x.table = x.arr ? NULL : cli_table_new(9, h, "000111110");
        rc = upm_dataset_foreach(cat, dataset_row, &x, &c->err);
        break;
    }
    case UPM_KIND_LABELS: {
        static const char *const h[] = {"NAME", "LABELS", "SYNONYMS", "NOTES"};
        x.table = x.arr ? NULL : cli_table_new(4, h, "0100");
        rc = upm_labelset_foreach(cat, labels_row, &x, &c->err);
        break;
    }
    case UPM_KIND_MIXTURE: {
        static const char *const h[] = {"NAME", "DATASETS", "NOTES"};
        x.table = x.arr ? NULL : cli_table_new(3, h, "010");
        rc = upm_mixture_foreach(cat, mixture_row, &x, &c->err);
        break;
    }
    }
    upm_catalog_close(cat);
    if (rc) {
        cJSON_Delete(x.arr);
        cli_table_free(x.table);
        return cli_fail(&c->err);
    }
    if (x.arr) {
        cli_print_json(x.arr);
        return 0;
    }
    cli_table_print(x.table, stdout);
    if (x.placeholders)
        printf("\n%d of the datasets still need%s a real shard URL (marked placeholder above): " PROG
               " set NAME url=PATTERN\n", x.placeholders, x.placeholders == 1 ? "s" : "");
    return 0;
}
