/* Records -> JSON. Absent values are JSON null, never missing keys, so scripts can rely on the keys. */
#include <stdio.h>
#include <string.h>

#include "json.h"

static void add_str_or_null(cJSON *o, const char *key, const char *s)
{
    if (s && *s)
        cJSON_AddStringToObject(o, key, s);
    else
        cJSON_AddNullToObject(o, key);
}

static void add_num_or_null(cJSON *o, const char *key, double v, int present)
{
    if (present)
        cJSON_AddNumberToObject(o, key, v);
    else
        cJSON_AddNullToObject(o, key);
}

cJSON *upm_task_to_json(const upm_task *t)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", t->name);
    cJSON_AddStringToObject(o, "formulation", upm_formulation_name(t->formulation));
    cJSON_AddBoolToObject(o, "causal", t->causal);
    cJSON *inputs = cJSON_AddArrayToObject(o, "inputs");
    for (int i = 0; i < t->n_inputs; i++) {
        cJSON *in = cJSON_CreateObject();
        cJSON_AddStringToObject(in, "field", t->inputs[i].field);
        cJSON_AddStringToObject(in, "modality", upm_modality_name(t->inputs[i].modality));
        cJSON_AddItemToArray(inputs, in);
    }
    add_str_or_null(o, "target_field", t->target_field);
    cJSON_AddStringToObject(o, "target_modality", upm_modality_name(t->target_modality));
    add_str_or_null(o, "label_set", t->label_set);
    add_str_or_null(o, "prompt", t->prompt);
    cJSON_AddNumberToObject(o, "max_text_len", t->max_text_len);
    cJSON_AddNumberToObject(o, "max_target_len", t->max_target_len);
    cJSON_AddNumberToObject(o, "loss_weight", t->loss_weight);
    cJSON_AddStringToObject(o, "notes", t->notes);
    return o;
}

cJSON *upm_dataset_to_json(const upm_dataset *d)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", d->name);
    cJSON_AddStringToObject(o, "task", d->task);
    cJSON_AddStringToObject(o, "split", upm_split_name(d->split));
    add_str_or_null(o, "url", d->url_pattern);
    add_num_or_null(o, "num_samples", (double)d->num_samples, d->num_samples >= 0);
    add_num_or_null(o, "num_shards", (double)d->num_shards, d->num_shards >= 0);
    cJSON_AddNumberToObject(o, "sampling_weight", d->sampling_weight);
    add_num_or_null(o, "loss_weight", d->loss_weight, d->loss_weight >= 0);
    cJSON_AddNumberToObject(o, "batch_size", d->batch_size);
    add_str_or_null(o, "label_set", d->label_set);
    add_str_or_null(o, "augment", upm_augment_name(d->augment)); /* null = the run's */
    cJSON_AddStringToObject(o, "license", d->license);
    cJSON_AddStringToObject(o, "notes", d->notes);
    return o;
}

cJSON *upm_labelset_to_json(const upm_labelset *ls)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", ls->name);
    cJSON_AddBoolToObject(o, "synonyms", ls->synonyms);
    cJSON_AddStringToObject(o, "notes", ls->notes);
    cJSON *labels = cJSON_AddArrayToObject(o, "labels");
    for (size_t i = 0; i < ls->n; i++) {
        cJSON *l = cJSON_CreateObject();
        add_str_or_null(l, "key", ls->labels[i].key);
        cJSON_AddItemToObject(l, "names",
                              cJSON_CreateStringArray((const char *const *)ls->labels[i].names, ls->labels[i].n_names));
        cJSON_AddItemToArray(labels, l);
    }
    return o;
}

static int member_json(const upm_mixture_member *m, void *ctx)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "dataset", m->dataset);
    add_num_or_null(o, "sampling_weight", m->sampling_weight, m->sampling_weight >= 0);
    add_num_or_null(o, "loss_weight", m->loss_weight, m->loss_weight >= 0);
    cJSON_AddItemToArray(ctx, o);
    return 0;
}

cJSON *upm_mixture_to_json(upm_catalog *cat, const char *name, upm_err *err)
{
    char notes[UPM_NOTES_MAX + 1];
    if (upm_mixture_get_notes(cat, name, notes, sizeof notes, err))
        return NULL;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", name);
    cJSON_AddStringToObject(o, "notes", notes);
    cJSON *members = cJSON_AddArrayToObject(o, "datasets");
    if (upm_mixture_foreach_member(cat, name, member_json, members, err)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static int export_task(const upm_task *t, void *arr)
{
    cJSON_AddItemToArray(arr, upm_task_to_json(t));
    return 0;
}

static int export_dataset(const upm_dataset *d, void *arr)
{
    cJSON_AddItemToArray(arr, upm_dataset_to_json(d));
    return 0;
}

typedef struct export_ctx {
    upm_catalog *cat;
    cJSON *arr;
    upm_err *err;
} export_ctx;

static int export_labelset(const upm_labelset_info *info, void *p)
{
    export_ctx *x = p;
    upm_labelset ls;
    int rc = upm_labelset_get(x->cat, info->name, &ls, x->err);
    if (rc)
        return rc;
    cJSON_AddItemToArray(x->arr, upm_labelset_to_json(&ls));
    upm_labelset_free(&ls);
    return 0;
}

static int export_mixture(const char *name, const char *notes, long long members, void *p)
{
    (void)notes, (void)members;
    export_ctx *x = p;
    cJSON *m = upm_mixture_to_json(x->cat, name, x->err);
    if (!m)
        return x->err->code ? x->err->code : UPM_EDB;
    cJSON_AddItemToArray(x->arr, m);
    return 0;
}

cJSON *upm_catalog_export(upm_catalog *cat, upm_err *err)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "format", UPM_EXPORT_FORMAT);
    cJSON_AddNumberToObject(doc, "schema_version", UPM_CATALOG_SCHEMA_VERSION);
    export_ctx lx = {cat, cJSON_AddArrayToObject(doc, "label_sets"), err};
    int rc = upm_labelset_foreach(cat, export_labelset, &lx, err);
    if (!rc)
        rc = upm_task_foreach(cat, export_task, cJSON_AddArrayToObject(doc, "tasks"), err);
    if (!rc)
        rc = upm_dataset_foreach(cat, export_dataset, cJSON_AddArrayToObject(doc, "datasets"), err);
    export_ctx mx = {cat, cJSON_AddArrayToObject(doc, "mixtures"), err};
    if (!rc)
        rc = upm_mixture_foreach(cat, export_mixture, &mx, err);
    if (rc) {
        cJSON_Delete(doc);
        return NULL;
    }
    return doc;
}
