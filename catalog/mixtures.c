/* Mixtures: a named set of datasets with their sampling weights (and optional loss-weight
 * overrides): what a pretraining job trains on. NULL weights inherit the dataset's. */
#include <stdio.h>
#include <string.h>

#include "catalog_ops.h"
#include "sqlutil.h"
#include "text.h"

int upm_mixture_create(upm_catalog *cat, const char *name, const char *notes, upm_err *err)
{
    int rc = upm_name_check("mixture", name, err);
    if (rc)
        return rc;
    if (!upm_utf8_valid(notes, strlen(notes), NULL) || strlen(notes) > UPM_NOTES_MAX)
        return upm_errf(err, UPM_EUSAGE, "mixture '%s': notes must be UTF-8 of at most %d bytes", name, UPM_NOTES_MAX);
    if ((rc = upm_exists(cat, UPM_KIND_MIXTURE, name, err)) != 0)
        return rc < 0 ? rc : upm_errf(err, UPM_EINVAL, "mixture '%s' already exists", name);
    sqlite3_stmt *st;
    if ((rc = upm_sql_prepare(cat, "INSERT INTO mixtures (name, notes) VALUES (?, ?)", &st, err)))
        return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, notes, -1, SQLITE_TRANSIENT);
    return upm_sql_run(cat, st, "creating a mixture", err);
}

static void bind_weight(sqlite3_stmt *st, int idx, double w)
{
    if (w >= 0)
        sqlite3_bind_double(st, idx, w);
    else
        sqlite3_bind_null(st, idx);
}

int upm_mixture_add(upm_catalog *cat, const char *mixture, const upm_mixture_member *m, upm_err *err)
{
    sqlite3_int64 mid, did;
    int rc = upm_sql_id(cat, "mixtures", "mixture", mixture, &mid, err);
    if (!rc)
        rc = upm_sql_id(cat, "datasets", "dataset", m->dataset, &did, err);
    if (!rc && m->sampling_weight >= 0)
        rc = upm_weight_check("sampling weight", m->sampling_weight, err);
    if (!rc && m->loss_weight >= 0)
        rc = upm_weight_check("loss weight", m->loss_weight, err);
    if (rc)
        return rc;
    sqlite3_stmt *st;
    if ((rc = upm_sql_prepare(cat, "SELECT 1 FROM mixture_datasets WHERE mixture_id = ? AND dataset_id = ?", &st, err)))
        return rc;
    sqlite3_bind_int64(st, 1, mid);
    sqlite3_bind_int64(st, 2, did);
    int step = sqlite3_step(st);
    sqlite3_finalize(st);
    if (step == SQLITE_ROW)
        return upm_errf(err, UPM_EINVAL, "mixture '%s' already has dataset '%s'", mixture, m->dataset);
    if ((rc = upm_sql_prepare(cat, "INSERT INTO mixture_datasets (mixture_id, dataset_id, sampling_weight, "
                                   "loss_weight) VALUES (?, ?, ?, ?)", &st, err)))
        return rc;
    sqlite3_bind_int64(st, 1, mid);
    sqlite3_bind_int64(st, 2, did);
    bind_weight(st, 3, m->sampling_weight);
    bind_weight(st, 4, m->loss_weight);
    return upm_sql_run(cat, st, "adding to a mixture", err);
}

int upm_mixture_remove(upm_catalog *cat, const char *mixture, const char *dataset, upm_err *err)
{
    sqlite3_int64 mid, did;
    int rc = upm_sql_id(cat, "mixtures", "mixture", mixture, &mid, err);
    if (!rc)
        rc = upm_sql_id(cat, "datasets", "dataset", dataset, &did, err);
    if (rc)
        return rc;
    sqlite3_stmt *st;
    if ((rc = upm_sql_prepare(cat, "DELETE FROM mixture_datasets WHERE mixture_id = ? AND dataset_id = ?", &st, err)))
        return rc;
    sqlite3_bind_int64(st, 1, mid);
    sqlite3_bind_int64(st, 2, did);
    if ((rc = upm_sql_run(cat, st, "removing from a mixture", err)))
        return rc;
    if (sqlite3_changes(cat->db) == 0)
        return upm_errf(err, UPM_EINVAL, "mixture '%s' has no dataset '%s'", mixture, dataset);
    return 0;
}

int upm_mixture_get_notes(upm_catalog *cat, const char *mixture, char *notes, size_t n, upm_err *err)
{
    sqlite3_stmt *st;
    int rc = upm_sql_prepare(cat, "SELECT notes FROM mixtures WHERE name = ?", &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, mixture, -1, SQLITE_TRANSIENT);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        upm_sql_text(st, 0, notes, n);
    sqlite3_finalize(st);
    if (step == SQLITE_ROW)
        return 0;
    return step == SQLITE_DONE ? upm_errf(err, UPM_EINVAL, "unknown mixture '%s'", mixture)
                               : upm_catalog_sqlerr(cat, err, "reading a mixture");
}

int upm_mixture_foreach_member(upm_catalog *cat, const char *mixture, upm_member_fn fn, void *ctx, upm_err *err)
{
    sqlite3_int64 mid;
    int rc = upm_sql_id(cat, "mixtures", "mixture", mixture, &mid, err);
    sqlite3_stmt *st;
    if (rc || (rc = upm_sql_prepare(cat, "SELECT d.name, m.sampling_weight, m.loss_weight FROM mixture_datasets m "
                                         "JOIN datasets d ON d.id = m.dataset_id WHERE m.mixture_id = ? "
                                         "ORDER BY d.name", &st, err)))
        return rc;
    sqlite3_bind_int64(st, 1, mid);
    int step;
    while (!rc && (step = sqlite3_step(st)) == SQLITE_ROW) {
        upm_mixture_member m;
        upm_sql_text(st, 0, m.dataset, sizeof m.dataset);
        m.sampling_weight = sqlite3_column_type(st, 1) == SQLITE_NULL ? -1 : sqlite3_column_double(st, 1);
        m.loss_weight = sqlite3_column_type(st, 2) == SQLITE_NULL ? -1 : sqlite3_column_double(st, 2);
        rc = fn(&m, ctx);
    }
    if (!rc && step != SQLITE_DONE)
        rc = upm_catalog_sqlerr(cat, err, "reading mixture members");
    sqlite3_finalize(st);
    return rc;
}

int upm_mixture_foreach(upm_catalog *cat, upm_mixture_fn fn, void *ctx, upm_err *err)
{
    sqlite3_stmt *st;
    int rc = upm_sql_prepare(cat, "SELECT x.name, x.notes, (SELECT count(*) FROM mixture_datasets m WHERE "
                                  "m.mixture_id = x.id) FROM mixtures x ORDER BY x.name", &st, err);
    if (rc)
        return rc;
    int step;
    while (!rc && (step = sqlite3_step(st)) == SQLITE_ROW)
        rc = fn((const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1),
                sqlite3_column_int64(st, 2), ctx);
    if (!rc && step != SQLITE_DONE)
        rc = upm_catalog_sqlerr(cat, err, "listing mixtures");
    sqlite3_finalize(st);
    return rc;
}
