/* Datasets in the catalog: add, read, update, list. A dataset is one task's view of a set of
 * WebDataset shards, with the batch size and weights the mixture samples it by (paper Table 7). */
#include <stdio.h>
#include <string.h>

#include "catalog_ops.h"
#include "sqlutil.h"

/* Binds every column but the name, in the order of the INSERT / UPDATE statements below. */
static int bind_dataset(upm_catalog *cat, sqlite3_stmt *st, const upm_dataset *d, upm_err *err)
{
    sqlite3_int64 task_id, ls = 0;
    int rc = upm_sql_id(cat, "tasks", "task", d->task, &task_id, err);
    if (!rc && d->label_set[0])
        rc = upm_sql_id(cat, "label_sets", "label set", d->label_set, &ls, err);
    if (rc)
        return rc;
    if (d->label_set[0]) {
        upm_task t;
        if ((rc = upm_task_get(cat, d->task, &t, err)))
            return rc;
        if (t.formulation != UPM_FORM_LABEL)
            return upm_errf(err, UPM_EINVAL, "dataset '%s': a label set is only for datasets of label tasks, and "
                            "task '%s' is %s", d->name, d->task, upm_formulation_name(t.formulation));
    }
    sqlite3_bind_int64(st, 1, task_id);
    sqlite3_bind_text(st, 2, upm_split_name(d->split), -1, SQLITE_STATIC);
    upm_sql_bind_text_or_null(st, 3, d->url_pattern);
    if (d->num_samples >= 0)
        sqlite3_bind_int64(st, 4, d->num_samples);
    else
        sqlite3_bind_null(st, 4);
    if (d->num_shards >= 0)
        sqlite3_bind_int64(st, 5, d->num_shards);
    else
        sqlite3_bind_null(st, 5);
    sqlite3_bind_double(st, 6, d->sampling_weight);
    if (d->loss_weight >= 0)
        sqlite3_bind_double(st, 7, d->loss_weight);
    else
        sqlite3_bind_null(st, 7);
    sqlite3_bind_int(st, 8, d->batch_size);
    if (ls)
        sqlite3_bind_int64(st, 9, ls);
    else
        sqlite3_bind_null(st, 9);
    sqlite3_bind_text(st, 10, d->license, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 11, d->notes, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 12, upm_augment_name(d->augment), -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 13, d->name, -1, SQLITE_TRANSIENT);
    return 0;
}

static int write_dataset(upm_catalog *cat, upm_dataset *d, int insert, upm_err *err)
{
    int rc = upm_dataset_validate(d, err);
    if (rc)
        return rc;
    int exists = upm_exists(cat, UPM_KIND_DATASET, d->name, err);
    if (exists < 0)
        return exists;
    if (insert && exists)
        return upm_errf(err, UPM_EINVAL, "dataset '%s' already exists", d->name);
    if (!insert && !exists)
        return upm_errf(err, UPM_EINVAL, "unknown dataset '%s'", d->name);
    const char *sql = insert ? "INSERT INTO datasets (task_id, split, url_pattern, num_samples, num_shards, "
                               "sampling_weight, loss_weight, batch_size, label_set_id, license, notes, augment, name) "
                               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                             : "UPDATE datasets SET task_id = ?, split = ?, url_pattern = ?, num_samples = ?, "
                               "num_shards = ?, sampling_weight = ?, loss_weight = ?, batch_size = ?, "
                               "label_set_id = ?, license = ?, notes = ?, augment = ? WHERE name = ?";
    sqlite3_stmt *st;
    if ((rc = upm_sql_prepare(cat, sql, &st, err)))
        return rc;
    if ((rc = bind_dataset(cat, st, d, err))) {
        sqlite3_finalize(st);
        return rc;
    }
    return upm_sql_run(cat, st, insert ? "adding a dataset" : "updating a dataset", err);
}

int upm_dataset_add(upm_catalog *cat, upm_dataset *d, upm_err *err) { return write_dataset(cat, d, 1, err); }
int upm_dataset_update(upm_catalog *cat, upm_dataset *d, upm_err *err) { return write_dataset(cat, d, 0, err); }

int upm_dataset_get(upm_catalog *cat, const char *name, upm_dataset *d, upm_err *err)
{
    sqlite3_stmt *st;
    int rc = upm_sql_prepare(cat,
                             "SELECT t.name, d.split, d.url_pattern, d.num_samples, d.num_shards, "
                             "d.sampling_weight, d.loss_weight, d.batch_size, l.name, d.license, d.notes, d.augment "
                             "FROM datasets d JOIN tasks t ON t.id = d.task_id "
                             "LEFT JOIN label_sets l ON l.id = d.label_set_id WHERE d.name = ?",
                             &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    int step = sqlite3_step(st);
    if (step != SQLITE_ROW) {
        sqlite3_finalize(st);
        return step == SQLITE_DONE ? upm_errf(err, UPM_EINVAL, "unknown dataset '%s'", name)
                                   : upm_catalog_sqlerr(cat, err, "reading a dataset");
    }
    upm_dataset_init(d);
    snprintf(d->name, sizeof d->name, "%s", name);
    upm_sql_text(st, 0, d->task, sizeof d->task);
    upm_split_parse((const char *)sqlite3_column_text(st, 1), &d->split);
    upm_sql_text(st, 2, d->url_pattern, sizeof d->url_pattern);
    d->num_samples = sqlite3_column_type(st, 3) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 3);
    d->num_shards = sqlite3_column_type(st, 4) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 4);
    d->sampling_weight = sqlite3_column_double(st, 5);
    d->loss_weight = sqlite3_column_type(st, 6) == SQLITE_NULL ? -1 : sqlite3_column_double(st, 6);
    d->batch_size = sqlite3_column_int(st, 7);
    upm_sql_text(st, 8, d->label_set, sizeof d->label_set);
    upm_sql_text(st, 9, d->license, sizeof d->license);
    upm_sql_text(st, 10, d->notes, sizeof d->notes);
    upm_augment_parse((const char *)sqlite3_column_text(st, 11), &d->augment);
    sqlite3_finalize(st);
    return 0;
}

int upm_dataset_effective_loss_weight(upm_catalog *cat, const upm_dataset *d, double *out, upm_err *err)
{
    if (d->loss_weight >= 0) {
        *out = d->loss_weight;
        return 0;
    }
    upm_task t;
    int rc = upm_task_get(cat, d->task, &t, err);
    if (!rc)
        *out = t.loss_weight;
    return rc;
}

typedef struct ds_iter {
    upm_dataset_fn fn;
    void *ctx;
    upm_err *err;
} ds_iter;

static int ds_iter_one(upm_catalog *cat, const char *name, void *p)
{
    ds_iter *it = p;
    upm_dataset d;
    int rc = upm_dataset_get(cat, name, &d, it->err);
    return rc ? rc : it->fn(&d, it->ctx);
}

int upm_dataset_foreach(upm_catalog *cat, upm_dataset_fn fn, void *ctx, upm_err *err)
{
    ds_iter it = {fn, ctx, err};
    return upm_sql_foreach_name(cat, "datasets", ds_iter_one, &it, err);
}
