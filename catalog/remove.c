/* Records by kind: existence, counts, related names, and removal. Dependencies (dataset -> task,
 * task/dataset -> label set, mixture -> dataset) are foreign keys without ON DELETE, so the schema
 * itself refuses an orphan; this file says which records are in the way, and with --cascade removes
 * them first. */
#include <stdio.h>
#include <string.h>

#include "catalog_ops.h"
#include "sqlutil.h"

static const char *const kind_names[] = {"task", "dataset", "label set", "mixture"};
static const char *const kind_tables[] = {"tasks", "datasets", "label_sets", "mixtures"};

int upm_kind_parse(const char *s, upm_kind *out)
{
    static const struct { const char *word; upm_kind kind; } words[] = {
        {"task", UPM_KIND_TASK}, {"tasks", UPM_KIND_TASK}, {"dataset", UPM_KIND_DATASET},
        {"datasets", UPM_KIND_DATASET}, {"labels", UPM_KIND_LABELS}, {"label", UPM_KIND_LABELS},
        {"label-set", UPM_KIND_LABELS}, {"mixture", UPM_KIND_MIXTURE}, {"mixtures", UPM_KIND_MIXTURE},
    };
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strcmp(s, words[i].word) == 0) {
            *out = words[i].kind;
            return 0;
        }
    return -1;
}

const char *upm_kind_name(upm_kind k) { return kind_names[k]; }

int upm_exists(upm_catalog *cat, upm_kind kind, const char *name, upm_err *err)
{
    sqlite3_int64 id;
    int rc = upm_sql_id(cat, kind_tables[kind], kind_names[kind], name, &id, err);
    if (rc == UPM_EINVAL) {
        upm_err_clear(err);
        return 0;
    }
    return rc ? rc : 1;
}

int upm_count(upm_catalog *cat, upm_kind kind, long long *n, upm_err *err)
{
    char sql[64];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", kind_tables[kind]);
    sqlite3_stmt *st;
    int rc = upm_sql_prepare(cat, sql, &st, err);
    if (rc)
        return rc;
    rc = sqlite3_step(st) == SQLITE_ROW ? 0 : upm_catalog_sqlerr(cat, err, "counting records");
    *n = rc ? -1 : sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc;
}

int upm_related_names(upm_catalog *cat, upm_kind kind, const char *name, char *buf, size_t n, upm_err *err)
{
    static const char *const sql[] = {
        [UPM_KIND_TASK] = "SELECT d.name FROM datasets d JOIN tasks t ON t.id = d.task_id WHERE t.name = ? "
                          "ORDER BY d.name",
        [UPM_KIND_DATASET] = "SELECT x.name FROM mixture_datasets m JOIN mixtures x ON x.id = m.mixture_id JOIN "
                             "datasets d ON d.id = m.dataset_id WHERE d.name = ? ORDER BY x.name",
    };
    buf[0] = '\0';
    if ((kind != UPM_KIND_TASK && kind != UPM_KIND_DATASET))
        return upm_errf(err, UPM_EINVAL, "no related names for a %s", kind_names[kind]);
    sqlite3_stmt *st;
    int rc = upm_sql_prepare(cat, sql[kind], &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        size_t len = strlen(buf);
        snprintf(buf + len, n - len, "%s%s", len ? ", " : "", (const char *)sqlite3_column_text(st, 0));
    }
    rc = s == SQLITE_DONE ? 0 : upm_catalog_sqlerr(cat, err, "listing related records");
    sqlite3_finalize(st);
    return rc;
}

/* Collects up to a few dependent names for the message, and their count. */
typedef struct deps {
    int count;
    char list[512];
} deps;

static int collect(upm_catalog *cat, const char *sql, const char *name, deps *d, upm_err *err)
{
    sqlite3_stmt *st;
    int rc = upm_sql_prepare(cat, sql, &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        const char *dep = (const char *)sqlite3_column_text(st, 0);
        size_t len = strlen(d->list);
        if (d->count < 8)
            snprintf(d->list + len, sizeof d->list - len, "%s%s", d->count ? ", " : "", dep);
        else if (d->count == 8)
            snprintf(d->list + len, sizeof d->list - len, ", ...");
        d->count++;
    }
    /* a failed read must not pass for "no dependents" */
    rc = s == SQLITE_DONE ? 0 : upm_catalog_sqlerr(cat, err, "looking for dependent records");
    sqlite3_finalize(st);
    return rc;
}

static const char *const dependents_sql[][2] = {
    [UPM_KIND_TASK] = {"SELECT 'dataset ' || d.name FROM datasets d JOIN tasks t ON t.id = d.task_id "
                       "WHERE t.name = ? ORDER BY d.name", NULL},
    [UPM_KIND_DATASET] = {"SELECT 'mixture ' || x.name FROM mixture_datasets m JOIN mixtures x ON x.id = "
                          "m.mixture_id JOIN datasets d ON d.id = m.dataset_id WHERE d.name = ? ORDER BY x.name",
                          NULL},
    [UPM_KIND_LABELS] = {"SELECT 'task ' || t.name FROM tasks t JOIN label_sets s ON s.id = t.label_set_id "
                         "WHERE s.name = ? ORDER BY t.name",
                         "SELECT 'dataset ' || d.name FROM datasets d JOIN label_sets s ON s.id = d.label_set_id "
                         "WHERE s.name = ? ORDER BY d.name"},
    [UPM_KIND_MIXTURE] = {NULL, NULL},
};

/* Names of the records that must go first, for --cascade. */
static const char *const cascade_sql[][3] = {
    [UPM_KIND_TASK] = {"SELECT d.name FROM datasets d JOIN tasks t ON t.id = d.task_id WHERE t.name = ?", NULL, NULL},
    [UPM_KIND_DATASET] = {NULL, NULL, NULL},
    [UPM_KIND_LABELS] = {"SELECT d.name FROM datasets d JOIN label_sets s ON s.id = d.label_set_id WHERE s.name = ?",
                         "SELECT t.name FROM tasks t JOIN label_sets s ON s.id = t.label_set_id WHERE s.name = ?",
                         NULL},
    [UPM_KIND_MIXTURE] = {NULL, NULL, NULL},
};

static int remove_rows(upm_catalog *cat, upm_kind kind, const char *name, upm_err *err);

/* Removes every record the query names (of kind dep_kind), recursively. */
static int cascade(upm_catalog *cat, const char *sql, upm_kind dep_kind, const char *name, upm_err *err)
{
    sqlite3_stmt *st;
    int rc = upm_sql_prepare(cat, sql, &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    char names[256][UPM_NAME_MAX + 1];
    int n = 0, step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW && n < 256)
        upm_sql_text(st, 0, names[n++], sizeof names[0]);
    if (step != SQLITE_ROW && step != SQLITE_DONE)
        rc = upm_catalog_sqlerr(cat, err, "listing the records to remove first");
    sqlite3_finalize(st);
    for (int i = 0; i < n && !rc; i++)
        rc = remove_rows(cat, dep_kind, names[i], err);
    /* More than 256 dependents: go round again until none is left. */
    if (!rc && n == 256)
        rc = cascade(cat, sql, dep_kind, name, err);
    return rc;
}

static int remove_rows(upm_catalog *cat, upm_kind kind, const char *name, upm_err *err)
{
    int rc = 0;
    if (kind == UPM_KIND_TASK)
        rc = cascade(cat, cascade_sql[kind][0], UPM_KIND_DATASET, name, err);
    else if (kind == UPM_KIND_LABELS && !(rc = cascade(cat, cascade_sql[kind][0], UPM_KIND_DATASET, name, err)))
        rc = cascade(cat, cascade_sql[kind][1], UPM_KIND_TASK, name, err);
    sqlite3_stmt *st;
    if (!rc && kind == UPM_KIND_DATASET &&
        !(rc = upm_sql_prepare(cat, "DELETE FROM mixture_datasets WHERE dataset_id = "
                                    "(SELECT id FROM datasets WHERE name = ?)", &st, err))) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
        rc = upm_sql_run(cat, st, "removing mixture memberships", err);
    }
    if (rc)
        return rc;
    char sql[96];
    snprintf(sql, sizeof sql, "DELETE FROM %s WHERE name = ?", kind_tables[kind]);
    if ((rc = upm_sql_prepare(cat, sql, &st, err)))
        return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    return upm_sql_run(cat, st, "removing", err);
}

int upm_remove(upm_catalog *cat, upm_kind kind, const char *name, int do_cascade, upm_err *err)
{
    int rc = upm_exists(cat, kind, name, err);
    if (rc <= 0)
        return rc < 0 ? rc : upm_errf(err, UPM_EINVAL, "unknown %s '%s'", kind_names[kind], name);
    rc = 0;
    deps d = {0, ""};
    for (int i = 0; i < 2 && !rc; i++)
        if (dependents_sql[kind][i])
            rc = collect(cat, dependents_sql[kind][i], name, &d, err);
    if (rc)
        return rc;
    if (d.count && !do_cascade)
        return upm_errf(err, UPM_EINVAL, "cannot remove %s '%s': %d record%s depend%s on it (%s); use --cascade to "
                        "remove %s too", kind_names[kind], name, d.count, d.count == 1 ? "" : "s",
                        d.count == 1 ? "s" : "", d.list, d.count == 1 ? "it" : "them");
    return remove_rows(cat, kind, name, err);
}
