/* Tasks in the catalog: add, read, list. A task is a formulation plus the declaration of its inputs
 * and targets; the token attributes are derived from it (tasks/attributes.c), never stored. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog_ops.h"
#include "sqlutil.h"

int upm_task_add(upm_catalog *cat, const upm_task *t, upm_err *err)
{
    int rc = upm_task_validate(t, err);
    if (rc)
        return rc;
    if ((rc = upm_exists(cat, UPM_KIND_TASK, t->name, err)) != 0)
        return rc < 0 ? rc : upm_errf(err, UPM_EINVAL, "task '%s' already exists", t->name);
    sqlite3_int64 ls = 0, task_id;
    if (t->label_set[0] && (rc = upm_sql_id(cat, "label_sets", "label set", t->label_set, &ls, err)))
        return rc;
    sqlite3_stmt *st;
    if ((rc = upm_sql_prepare(cat,
                              "INSERT INTO tasks (name, formulation, causal, label_set_id, target_field, "
                              "target_modality, prompt, max_text_len, max_target_len, loss_weight, notes) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                              &st, err)))
        return rc;
    sqlite3_bind_text(st, 1, t->name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, upm_formulation_name(t->formulation), -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, t->causal);
    if (ls)
        sqlite3_bind_int64(st, 4, ls);
    upm_sql_bind_text_or_null(st, 5, t->target_field);
    sqlite3_bind_text(st, 6, upm_modality_name(t->target_modality), -1, SQLITE_STATIC);
    upm_sql_bind_text_or_null(st, 7, t->prompt);
    sqlite3_bind_int(st, 8, t->max_text_len);
    sqlite3_bind_int(st, 9, t->max_target_len);
    sqlite3_bind_double(st, 10, t->loss_weight);
    sqlite3_bind_text(st, 11, t->notes, -1, SQLITE_TRANSIENT);
    if ((rc = upm_sql_run(cat, st, "adding a task", err)))
        return rc;
    task_id = sqlite3_last_insert_rowid(cat->db);
    for (int i = 0; i < t->n_inputs; i++) {
        if ((rc = upm_sql_prepare(cat, "INSERT INTO task_inputs (task_id, pos, field, modality) VALUES (?,?,?,?)",
                                  &st, err)))
            return rc;
        sqlite3_bind_int64(st, 1, task_id);
        sqlite3_bind_int(st, 2, i);
        sqlite3_bind_text(st, 3, t->inputs[i].field, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 4, upm_modality_name(t->inputs[i].modality), -1, SQLITE_STATIC);
        if ((rc = upm_sql_run(cat, st, "adding a task input", err)))
            return rc;
    }
    return 0;
}

static int read_inputs(upm_catalog *cat, sqlite3_int64 task_id, upm_task *t, upm_err *err)
{
    sqlite3_stmt *st;
    int rc = upm_sql_prepare(cat, "SELECT field, modality FROM task_inputs WHERE task_id = ? ORDER BY pos", &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, task_id);
    t->n_inputs = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && t->n_inputs < UPM_MAX_INPUTS) {
        upm_task_input *in = &t->inputs[t->n_inputs++];
        upm_sql_text(st, 0, in->field, sizeof in->field);
        upm_modality_parse((const char *)sqlite3_column_text(st, 1), &in->modality);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return upm_catalog_sqlerr(cat, err, "reading task inputs");
    return 0;
}

int upm_task_get(upm_catalog *cat, const char *name, upm_task *t, upm_err *err)
{
    sqlite3_stmt *st;
    int rc = upm_sql_prepare(cat,
                             "SELECT t.id, t.formulation, t.causal, l.name, t.target_field, t.target_modality, "
                             "t.prompt, t.max_text_len, t.max_target_len, t.loss_weight, t.notes "
                             "FROM tasks t LEFT JOIN label_sets l ON l.id = t.label_set_id WHERE t.name = ?",
                             &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    upm_task_init(t);
    int step = sqlite3_step(st);
    if (step != SQLITE_ROW) {
        sqlite3_finalize(st);
        return step == SQLITE_DONE ? upm_errf(err, UPM_EINVAL, "unknown task '%s'", name)
                                   : upm_catalog_sqlerr(cat, err, "reading a task");
    }
    sqlite3_int64 id = sqlite3_column_int64(st, 0);
    snprintf(t->name, sizeof t->name, "%s", name);
    upm_formulation_parse((const char *)sqlite3_column_text(st, 1), &t->formulation);
    t->causal = sqlite3_column_int(st, 2);
    upm_sql_text(st, 3, t->label_set, sizeof t->label_set);
    upm_sql_text(st, 4, t->target_field, sizeof t->target_field);
    upm_modality_parse((const char *)sqlite3_column_text(st, 5), &t->target_modality);
    upm_sql_text(st, 6, t->prompt, sizeof t->prompt);
    t->max_text_len = sqlite3_column_int(st, 7);
    t->max_target_len = sqlite3_column_int(st, 8);
    t->loss_weight = sqlite3_column_double(st, 9);
    upm_sql_text(st, 10, t->notes, sizeof t->notes);
    sqlite3_finalize(st);
    return read_inputs(cat, id, t, err);
}

int upm_sql_foreach_name(upm_catalog *cat, const char *table, int (*fn)(upm_catalog *, const char *, void *),
                         void *ctx, upm_err *err)
{
    char sql[96];
    snprintf(sql, sizeof sql, "SELECT name FROM %s ORDER BY name", table);
    sqlite3_stmt *st;
    int rc = upm_sql_prepare(cat, sql, &st, err);
    if (rc)
        return rc;
    /* Collect first: callbacks run their own queries. */
    size_t n = 0, cap = 0;
    char(*names)[UPM_NAME_MAX + 1] = NULL;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            void *p = realloc(names, cap * sizeof *names);
            if (!p) {
                free(names);
                sqlite3_finalize(st);
                return upm_errf(err, UPM_ENOMEM, "out of memory listing %s", table);
            }
            names = p;
        }
        upm_sql_text(st, 0, names[n++], sizeof names[0]);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        free(names);
        return upm_catalog_sqlerr(cat, err, "listing names");
    }
    rc = 0;
    for (size_t i = 0; i < n && !rc; i++)
        rc = fn(cat, names[i], ctx);
    free(names);
    return rc;
}

typedef struct task_iter {
    upm_task_fn fn;
    void *ctx;
    upm_err *err;
} task_iter;

static int task_iter_one(upm_catalog *cat, const char *name, void *p)
{
    task_iter *it = p;
    upm_task t;
    int rc = upm_task_get(cat, name, &t, it->err);
    return rc ? rc : it->fn(&t, it->ctx);
}

int upm_task_foreach(upm_catalog *cat, upm_task_fn fn, void *ctx, upm_err *err)
{
    task_iter it = {fn, ctx, err};
    return upm_sql_foreach_name(cat, "tasks", task_iter_one, &it, err);
}
