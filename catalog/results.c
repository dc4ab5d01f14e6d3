/* Evaluation results (see results.h). */
#include "results.h"

#include "sqlutil.h"

int upm_results_put(upm_catalog *cat, const upm_eval_record *rows, int n, int replace, upm_err *err)
{
    if (n <= 0)
        return 0;
    sqlite3_stmt *st = NULL;
    int rc = upm_catalog_begin(cat, err);
    if (rc)
        return rc;
    if (replace)
        rc = upm_sql_prepare(cat, "DELETE FROM eval_results WHERE run_id = ?1 AND step = ?2 AND dataset = ?3", &st, err);
    for (int i = 0; replace && !rc && i < n; i++) {
        if (rows[i].run_id <= 0)
            continue;
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, rows[i].run_id);
        sqlite3_bind_int64(st, 2, rows[i].step);
        sqlite3_bind_text(st, 3, rows[i].dataset, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = upm_catalog_sqlerr(cat, err, "replacing evaluation results");
    }
    if (st)
        sqlite3_finalize(st), st = NULL;
    if (!rc)
        rc = upm_sql_prepare(cat,
                         "INSERT INTO eval_results (run_id, checkpoint, step, dataset, task, formulation, metric, "
                         "value, chance, samples) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                         &st, err);
    for (int i = 0; !rc && i < n; i++) {
        const upm_eval_record *r = &rows[i];
        sqlite3_reset(st);
        if (r->run_id > 0)
            sqlite3_bind_int64(st, 1, r->run_id);
        else
            sqlite3_bind_null(st, 1);
        sqlite3_bind_text(st, 2, r->checkpoint, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 3, r->step);
        sqlite3_bind_text(st, 4, r->dataset, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 5, r->task, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 6, r->formulation, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 7, r->metric, -1, SQLITE_TRANSIENT);
        sqlite3_bind_double(st, 8, r->value);
        upm_sql_bind_nonneg_or_null(st, 9, r->chance);
        sqlite3_bind_int64(st, 10, r->samples);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = upm_catalog_sqlerr(cat, err, "writing evaluation results");
    }
    if (st)
        sqlite3_finalize(st);
    return upm_catalog_end(cat, rc, err);
}

int upm_results_foreach(upm_catalog *cat, const char *dataset, int64_t run_id, upm_eval_record_fn fn, void *ctx,
                        upm_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = upm_sql_prepare(cat,
                             "SELECT coalesce(run_id, 0), checkpoint, step, dataset, task, formulation, metric, value, "
                             "coalesce(chance, -1), samples, at FROM eval_results WHERE (?1 IS NULL OR dataset = ?1) "
                             "AND (?2 = 0 OR run_id = ?2) ORDER BY id",
                             &st, err);
    if (rc)
        return rc;
    upm_sql_bind_text_or_null(st, 1, dataset);
    sqlite3_bind_int64(st, 2, run_id);
    int s;
    while (!rc && (s = sqlite3_step(st)) == SQLITE_ROW) {
        upm_eval_record r;
        r.run_id = sqlite3_column_int64(st, 0);
        upm_sql_text(st, 1, r.checkpoint, sizeof r.checkpoint);
        r.step = sqlite3_column_int64(st, 2);
        upm_sql_text(st, 3, r.dataset, sizeof r.dataset);
        upm_sql_text(st, 4, r.task, sizeof r.task);
        upm_sql_text(st, 5, r.formulation, sizeof r.formulation);
        upm_sql_text(st, 6, r.metric, sizeof r.metric);
        r.value = sqlite3_column_double(st, 7);
        r.chance = sqlite3_column_double(st, 8);
        r.samples = sqlite3_column_int64(st, 9);
        upm_sql_text(st, 10, r.at, sizeof r.at);
        rc = fn(&r, ctx);
    }
    if (!rc && s != SQLITE_DONE)
        rc = upm_catalog_sqlerr(cat, err, "reading evaluation results");
    sqlite3_finalize(st);
    return rc;
}

int upm_interference_put(upm_catalog *cat, const upm_interference_record *rows, int n, upm_err *err)
{
    if (n <= 0)
        return 0;
    sqlite3_stmt *del = NULL, *ins = NULL;
    int rc = upm_catalog_begin(cat, err);
    if (rc)
        return rc;
    rc = upm_sql_prepare(cat, "DELETE FROM interference WHERE checkpoint = ?1 AND mixture = ?2 AND block = ?3 AND "
                              "batches = ?4 AND seed = ?5", &del, err);
    if (!rc)
        rc = upm_sql_prepare(cat,
                             "INSERT INTO interference (run_id, checkpoint, step, mixture, block, task_i, task_j, value, "
                             "batches, seed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                             &ins, err);
    for (int i = 0; !rc && i < n; i++) {
        const upm_interference_record *r = &rows[i];
        sqlite3_reset(del);
        sqlite3_bind_text(del, 1, r->checkpoint, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(del, 2, r->mixture, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(del, 3, r->block);
        sqlite3_bind_int(del, 4, r->batches);
        sqlite3_bind_text(del, 5, r->seed, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(del) != SQLITE_DONE) {
            rc = upm_catalog_sqlerr(cat, err, "replacing interference results");
            break;
        }
    }
    for (int i = 0; !rc && i < n; i++) {
        const upm_interference_record *r = &rows[i];
        sqlite3_reset(ins);
        if (r->run_id > 0)
            sqlite3_bind_int64(ins, 1, r->run_id);
        else
            sqlite3_bind_null(ins, 1);
        sqlite3_bind_text(ins, 2, r->checkpoint, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(ins, 3, r->step);
        sqlite3_bind_text(ins, 4, r->mixture, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(ins, 5, r->block);
        sqlite3_bind_text(ins, 6, r->task_i, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(ins, 7, r->task_j, -1, SQLITE_TRANSIENT);
        sqlite3_bind_double(ins, 8, r->value);
        sqlite3_bind_int(ins, 9, r->batches);
        sqlite3_bind_text(ins, 10, r->seed, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(ins) != SQLITE_DONE)
            rc = upm_catalog_sqlerr(cat, err, "writing interference results");
    }
    if (del)
        sqlite3_finalize(del);
    if (ins)
        sqlite3_finalize(ins);
    return upm_catalog_end(cat, rc, err);
}

int upm_verify_add(upm_catalog *cat, const upm_verify_record *r, upm_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = upm_sql_prepare(cat,
                             "INSERT INTO verifications (dataset, url_pattern, shards, samples, bytes, bad_samples, "
                             "bad_shards, undecodable) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                             &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, r->dataset, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, r->url_pattern, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, r->shards);
    sqlite3_bind_int64(st, 4, r->samples);
    sqlite3_bind_int64(st, 5, r->bytes);
    sqlite3_bind_int64(st, 6, r->bad_samples);
    sqlite3_bind_int64(st, 7, r->bad_shards);
    upm_sql_bind_count_or_null(st, 8, r->undecodable); /* NULL: a pass without --decode */
    return upm_sql_run(cat, st, "storing a dataset verification", err);
}

int upm_verify_last(upm_catalog *cat, const char *dataset, upm_verify_record *r, upm_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = upm_sql_prepare(cat,
                             "SELECT dataset, url_pattern, shards, samples, bytes, bad_samples, bad_shards, "
                             "coalesce(undecodable, -1), at FROM verifications WHERE dataset = ?1 "
                             "ORDER BY id DESC LIMIT 1",
                             &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, dataset, -1, SQLITE_TRANSIENT);
    int s = sqlite3_step(st), found = 0;
    if (s == SQLITE_ROW) {
        upm_sql_text(st, 0, r->dataset, sizeof r->dataset);
        upm_sql_text(st, 1, r->url_pattern, sizeof r->url_pattern);
        r->shards = sqlite3_column_int64(st, 2);
        r->samples = sqlite3_column_int64(st, 3);
        r->bytes = sqlite3_column_int64(st, 4);
        r->bad_samples = sqlite3_column_int64(st, 5);
        r->bad_shards = sqlite3_column_int64(st, 6);
        r->undecodable = sqlite3_column_int64(st, 7);
        upm_sql_text(st, 8, r->at, sizeof r->at);
        found = 1;
    } else if (s != SQLITE_DONE) {
        rc = upm_catalog_sqlerr(cat, err, "reading dataset verifications");
    }
    sqlite3_finalize(st);
    return rc ? rc : found;
}
