/* Runs and metrics rows (see runs.h). */
#include "runs.h"

#include "sqlutil.h"

int upm_run_create(upm_catalog *cat, const char *name, const char *mixture, const char *model, const char *config_json,
                   const char *out_dir, int64_t total_steps, int64_t *id, upm_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = upm_catalog_begin(cat, err);
    if (rc)
        return rc;
    rc = upm_sql_prepare(cat,
                         "INSERT INTO runs (name, mixture, model, config, out_dir, state, total_steps) "
                         "VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6)",
                         &st, err);
    if (!rc) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, mixture, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 3, model, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 4, config_json, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 5, out_dir, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 6, total_steps);
        rc = upm_sql_run(cat, st, "creating a run", err);
    }
    if (!rc) {
        *id = sqlite3_last_insert_rowid(cat->db);
        rc = upm_catalog_commit(cat, err);
    } else
        upm_catalog_rollback(cat);
    return rc;
}

int upm_run_update(upm_catalog *cat, int64_t id, const char *state, int64_t step, const char *checkpoint,
                   const char *message, upm_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = upm_catalog_begin(cat, err);
    if (rc)
        return rc;
    rc = upm_sql_prepare(cat,
                         "UPDATE runs SET state = ?2, step = ?3, last_checkpoint = coalesce(?4, last_checkpoint), "
                         "message = coalesce(?5, message), updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
                         "WHERE id = ?1",
                         &st, err);
    if (!rc) {
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_text(st, 2, state, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 3, step);
        upm_sql_bind_text_or_null(st, 4, checkpoint);
        upm_sql_bind_text_or_null(st, 5, message);
        rc = upm_sql_run(cat, st, "updating a run", err);
    }
    if (!rc && sqlite3_changes(cat->db) != 1)
        rc = upm_errf(err, UPM_EINVAL, "%s: no run %lld", cat->path, (long long)id);
    return upm_catalog_end(cat, rc, err);
}

int upm_metrics_put(upm_catalog *cat, int64_t run_id, const upm_metric_row *rows, int n, upm_err *err)
{
    if (n <= 0)
        return 0;
    sqlite3_stmt *st = NULL;
    int rc = upm_catalog_begin(cat, err);
    if (rc)
        return rc;
    rc = upm_sql_prepare(cat,
                         "INSERT OR REPLACE INTO metrics (run_id, step, task, dataset, loss, weighted_loss, accuracy, "
                         "samples, lr, grad_norm, samples_per_s, ranks, balance_loss, dropped) "
                         "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                         &st, err);
    for (int i = 0; !rc && i < n; i++) {
        const upm_metric_row *r = &rows[i];
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, run_id);
        sqlite3_bind_int64(st, 2, r->step);
        sqlite3_bind_text(st, 3, r->task, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 4, r->dataset, -1, SQLITE_TRANSIENT);
        sqlite3_bind_double(st, 5, r->loss);
        sqlite3_bind_double(st, 6, r->weighted_loss);
        upm_sql_bind_nonneg_or_null(st, 7, r->accuracy);
        sqlite3_bind_int64(st, 8, r->samples);
        sqlite3_bind_double(st, 9, r->lr);
        sqlite3_bind_double(st, 10, r->grad_norm);
        sqlite3_bind_double(st, 11, r->samples_per_s);
        if (r->ranks[0])
            sqlite3_bind_text(st, 12, r->ranks, -1, SQLITE_TRANSIENT);
        else
            sqlite3_bind_null(st, 12);
        if (r->has_route)
            sqlite3_bind_double(st, 13, r->balance_loss), sqlite3_bind_double(st, 14, r->dropped);
        else
            sqlite3_bind_null(st, 13), sqlite3_bind_null(st, 14);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = upm_catalog_sqlerr(cat, err, "writing metrics");
    }
    if (st)
        sqlite3_finalize(st);
    return upm_catalog_end(cat, rc, err);
}

int upm_run_exists(upm_catalog *cat, int64_t id, int *exists, upm_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = upm_sql_prepare(cat, "SELECT 1 FROM runs WHERE id = ?1", &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, id);
    int s = sqlite3_step(st);
    *exists = s == SQLITE_ROW;
    sqlite3_finalize(st);
    return s == SQLITE_ROW || s == SQLITE_DONE ? 0 : upm_catalog_sqlerr(cat, err, "reading runs");
}

int upm_run_resume(upm_catalog *cat, int64_t id, int64_t step, upm_err *err)
{
    int rc = upm_catalog_begin(cat, err);
    sqlite3_stmt *st = NULL;
    if (!rc)
        rc = upm_sql_prepare(cat, "DELETE FROM metrics WHERE run_id = ?1 AND step >= ?2", &st, err);
    if (!rc) {
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_int64(st, 2, step);
        rc = upm_sql_run(cat, st, "removing the metrics after the checkpoint", err);
    }
    if (!rc)
        rc = upm_sql_prepare(cat,
                             "UPDATE runs SET state = 'running', step = ?2, message = 'resumed', "
                             "updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?1",
                             &st, err);
    if (!rc) {
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_int64(st, 2, step);
        rc = upm_sql_run(cat, st, "updating a run", err);
    }
    if (!rc && sqlite3_changes(cat->db) != 1)
        rc = upm_errf(err, UPM_EINVAL, "%s: no run %lld", cat->path, (long long)id);
    return upm_catalog_end(cat, rc, err);
}

int upm_run_link_job(upm_catalog *cat, int64_t id, int64_t job, upm_err *err)
{
    int rc = upm_catalog_begin(cat, err);
    sqlite3_stmt *st = NULL;
    if (!rc)
        rc = upm_sql_prepare(cat, "UPDATE runs SET job_id = ?2 WHERE id = ?1", &st, err);
    if (!rc) {
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_int64(st, 2, job);
        rc = upm_sql_run(cat, st, "linking the run to its job", err);
    }
    if (!rc)
        rc = upm_sql_prepare(cat, "UPDATE jobs SET run_id = ?1 WHERE id = ?2", &st, err);
    if (!rc) {
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_int64(st, 2, job);
        rc = upm_sql_run(cat, st, "linking the job to its run", err);
    }
    return upm_catalog_end(cat, rc, err);
}

/* ---- reading ---- */

int upm_run_progress_get(upm_catalog *cat, int64_t run_id, upm_run_progress *p, upm_err *err)
{
    *p = (upm_run_progress){.samples_per_s = -1, .s_per_step = -1};
    sqlite3_stmt *st = NULL;
    int rc = upm_sql_prepare(cat, "SELECT state, step, total_steps, last_checkpoint FROM runs WHERE id = ?1", &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, run_id);
    int s = sqlite3_step(st);
    if (s == SQLITE_ROW) {
        p->found = 1;
        upm_sql_text(st, 0, p->state, sizeof p->state);
        p->step = sqlite3_column_int64(st, 1), p->total_steps = sqlite3_column_int64(st, 2);
        upm_sql_text(st, 3, p->last_checkpoint, sizeof p->last_checkpoint);
    } else if (s != SQLITE_DONE) {
        rc = upm_catalog_sqlerr(cat, err, "reading the run"); /* not "no such run" */
    }
    sqlite3_finalize(st);
    if (rc || !p->found)
        return rc;
    /* one row per step over the newest 20 steps with a rate: its samples and the step's rate */
    rc = upm_sql_prepare(cat,
                         "SELECT sum(samples), sum(samples / samples_per_s), avg(samples / samples_per_s) FROM "
                         "(SELECT step, sum(samples) AS samples, max(samples_per_s) AS samples_per_s FROM metrics "
                         "WHERE run_id = ?1 AND samples_per_s > 0 GROUP BY step ORDER BY step DESC LIMIT 20)",
                         &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, run_id);
    if ((s = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_double(st, 1) > 0)
            p->samples_per_s = sqlite3_column_double(st, 0) / sqlite3_column_double(st, 1);
        if (sqlite3_column_double(st, 2) > 0)
            p->s_per_step = sqlite3_column_double(st, 2);
    } else {
        rc = upm_catalog_sqlerr(cat, err, "reading the run's rates"); /* an aggregate: always one row */
    }
    sqlite3_finalize(st);
    return rc;
}

int upm_run_latest_losses(upm_catalog *cat, int64_t run_id, upm_task_loss_fn fn, void *ctx, upm_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = upm_sql_prepare(cat,
                             "SELECT m.task, m.loss FROM metrics m JOIN (SELECT task, max(step) AS s FROM metrics "
                             "WHERE run_id = ?1 GROUP BY task) l ON l.task = m.task AND l.s = m.step "
                             "WHERE m.run_id = ?1 ORDER BY m.task",
                             &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, run_id);
    int s;
    while (!rc && (s = sqlite3_step(st)) == SQLITE_ROW)
        rc = fn((const char *)sqlite3_column_text(st, 0), sqlite3_column_double(st, 1), ctx);
    if (!rc && s != SQLITE_DONE)
        rc = upm_catalog_sqlerr(cat, err, "reading losses");
    sqlite3_finalize(st);
    return rc;
}

const char *const upm_metric_columns[UPM_METRIC_NCOLS] = {"step", "task", "dataset", "loss", "accuracy", "samples",
                                                          "lr", "grad_norm", "samples_per_s", "ranks",
                                                          "balance_loss", "dropped"};

int upm_metrics_foreach(upm_catalog *cat, int64_t run_id, int64_t since, const char *task, upm_metric_cells_fn fn,
                        void *ctx, upm_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = upm_sql_prepare(cat,
                             "SELECT step, task, dataset, loss, accuracy, samples, lr, grad_norm, samples_per_s, ranks, "
                             "balance_loss, dropped FROM metrics WHERE run_id = ?1 AND step >= ?2 AND (?3 IS NULL OR task = ?3) "
                             "ORDER BY step, task",
                             &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, run_id);
    sqlite3_bind_int64(st, 2, since);
    upm_sql_bind_text_or_null(st, 3, task);
    int s;
    while (!rc && (s = sqlite3_step(st)) == SQLITE_ROW) {
        upm_cell cells[UPM_METRIC_NCOLS];
        for (int c = 0; c < UPM_METRIC_NCOLS; c++) {
            int t = sqlite3_column_type(st, c);
            cells[c].type = t == SQLITE_NULL ? UPM_CELL_NULL : t == SQLITE_TEXT ? UPM_CELL_TEXT : UPM_CELL_NUMBER;
            cells[c].num = sqlite3_column_double(st, c);
            cells[c].text = (const char *)sqlite3_column_text(st, c); /* after the number: a text read converts */
        }
        rc = fn(cells, ctx);
    }
    if (!rc && s != SQLITE_DONE)
        rc = upm_catalog_sqlerr(cat, err, "reading metrics");
    sqlite3_finalize(st);
    return rc;
}

int upm_metrics_tasks(upm_catalog *cat, int64_t run_id, char (*tasks)[128], int max, int *n, upm_err *err)
{
    sqlite3_stmt *st = NULL;
    *n = 0;
    int rc = upm_sql_prepare(cat, "SELECT DISTINCT task FROM metrics WHERE run_id = ?1 ORDER BY task", &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, run_id);
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW && *n < max)
        upm_sql_text(st, 0, tasks[(*n)++], sizeof tasks[0]);
    rc = s == SQLITE_ROW || s == SQLITE_DONE ? 0 : upm_catalog_sqlerr(cat, err, "reading the metrics' tasks");
    sqlite3_finalize(st);
    return rc;
}

int upm_metrics_series(upm_catalog *cat, int64_t run_id, const char *task, upm_step_value_fn fn, void *ctx,
                       upm_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = upm_sql_prepare(cat,
                             task ? "SELECT step, loss FROM metrics WHERE run_id = ?1 AND task = ?2 ORDER BY step"
                                  : "SELECT step, max(lr) FROM metrics WHERE run_id = ?1 GROUP BY step ORDER BY step",
                             &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, run_id);
    if (task)
        sqlite3_bind_text(st, 2, task, -1, SQLITE_TRANSIENT);
    int s;
    while (!rc && (s = sqlite3_step(st)) == SQLITE_ROW)
        rc = fn(sqlite3_column_int64(st, 0), sqlite3_column_double(st, 1), ctx);
    if (!rc && s != SQLITE_DONE)
        rc = upm_catalog_sqlerr(cat, err, "reading metrics");
    sqlite3_finalize(st);
    return rc;
}
