/* The job queue (see queue.h). Each operation is one short BEGIN IMMEDIATE transaction. */
#include "queue.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sqlutil.h"

#define JOB_COLUMNS                                                                                           \
    "id, name, kind, state, priority, backend, ranks, argv, out_dir, log_path, run_id, attempt, max_attempts, " \
    "owner, lease_until, pid, slurm_job, cancel_requested, message, submitted_at, started_at, finished_at, " \
    "backend_opts"

double upm_job_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void upm_job_free(upm_job *j)
{
    free(j->argv_json);
    free(j->backend_opts);
    j->argv_json = j->backend_opts = NULL;
}

static int read_row(sqlite3_stmt *st, upm_job *j)
{
    memset(j, 0, sizeof *j);
    j->id = sqlite3_column_int64(st, 0);
    upm_sql_text(st, 1, j->name, sizeof j->name);
    upm_sql_text(st, 2, j->kind, sizeof j->kind);
    upm_sql_text(st, 3, j->state, sizeof j->state);
    j->priority = sqlite3_column_int64(st, 4);
    upm_sql_text(st, 5, j->backend, sizeof j->backend);
    j->ranks = sqlite3_column_int(st, 6);
    const unsigned char *a = sqlite3_column_text(st, 7);
    if (!(j->argv_json = strdup(a ? (const char *)a : "[]")))
        return UPM_ENOMEM;
    upm_sql_text(st, 8, j->out_dir, sizeof j->out_dir);
    upm_sql_text(st, 9, j->log_path, sizeof j->log_path);
    j->run_id = sqlite3_column_int64(st, 10);
    j->attempt = sqlite3_column_int64(st, 11);
    j->max_attempts = sqlite3_column_int64(st, 12);
    upm_sql_text(st, 13, j->owner, sizeof j->owner);
    j->lease_until = sqlite3_column_double(st, 14);
    j->pid = sqlite3_column_int64(st, 15);
    upm_sql_text(st, 16, j->slurm_job, sizeof j->slurm_job);
    j->cancel_requested = sqlite3_column_int(st, 17);
    upm_sql_text(st, 18, j->message, sizeof j->message);
    upm_sql_text(st, 19, j->submitted_at, sizeof j->submitted_at);
    upm_sql_text(st, 20, j->started_at, sizeof j->started_at);
    upm_sql_text(st, 21, j->finished_at, sizeof j->finished_at);
    const unsigned char *b = sqlite3_column_text(st, 22);
    if (!(j->backend_opts = strdup(b ? (const char *)b : "{}")))
        return UPM_ENOMEM;
    return 0;
}

/* An event inside the caller's transaction. */
static int add_event(upm_catalog *cat, int64_t id, int64_t attempt, const char *event, const char *detail,
                     upm_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = upm_sql_prepare(cat, "INSERT INTO job_events (job_id, attempt, event, detail) VALUES (?1, ?2, ?3, ?4)",
                             &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, attempt);
    sqlite3_bind_text(st, 3, event, -1, SQLITE_TRANSIENT);
    upm_sql_bind_text_or_null(st, 4, detail);
    return upm_sql_run(cat, st, "recording a job event", err);
}

static int finish_tx(upm_catalog *cat, int rc, upm_err *err)
{
    if (rc) {
        upm_catalog_rollback(cat);
        return rc;
    }
    return upm_catalog_commit(cat, err);
}

int upm_job_event(upm_catalog *cat, int64_t id, int64_t attempt, const char *event, const char *detail, upm_err *err)
{
    int rc = upm_catalog_begin(cat, err);
    if (rc)
        return rc;
    return finish_tx(cat, add_event(cat, id, attempt, event, detail, err), err);
}

/* Where a job's checkpoints and log go by default: next to the catalog, runs/job-<id>. */
static void default_out_dir(const upm_catalog *cat, int64_t id, char *buf, size_t n)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", cat->path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    else
        snprintf(dir, sizeof dir, ".");
    snprintf(buf, n, "%.4000s/runs/job-%lld", dir, (long long)id);
}

int upm_job_submit_new(upm_catalog *cat, const upm_job_submit *s, int64_t *id, upm_err *err)
{
    *id = 0;
    int rc = upm_catalog_begin(cat, err);
    if (rc)
        return rc;
    sqlite3_stmt *st = NULL;
    rc = upm_sql_prepare(cat,
                         "INSERT INTO jobs (name, kind, priority, backend, ranks, argv, out_dir, max_attempts, backend_opts) "
                         "VALUES (?1, ?2, ?3, ?4, ?5, ?6, '', ?7, ?8) RETURNING id",
                         &st, err);
    if (!rc) {
        sqlite3_bind_text(st, 1, s->name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, s->kind, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 3, s->priority);
        sqlite3_bind_text(st, 4, s->backend, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(st, 5, s->ranks);
        sqlite3_bind_text(st, 6, s->argv_json, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 7, s->max_attempts);
        upm_sql_bind_text_or_null(st, 8, s->backend_opts);
        if (sqlite3_step(st) == SQLITE_ROW)
            *id = sqlite3_column_int64(st, 0);
        else
            rc = upm_catalog_sqlerr(cat, err, "adding the job");
        sqlite3_finalize(st);
    }
    char out[4096];
    if (!rc) {
        if (s->out_dir)
            snprintf(out, sizeof out, "%s", s->out_dir);
        else
            default_out_dir(cat, *id, out, sizeof out);
        rc = upm_sql_prepare(cat, "UPDATE jobs SET out_dir = ?2, log_path = ?2 || '/train.log' WHERE id = ?1", &st,
                             err);
        if (!rc) {
            sqlite3_bind_int64(st, 1, *id);
            sqlite3_bind_text(st, 2, out, -1, SQLITE_TRANSIENT);
            rc = upm_sql_run(cat, st, "setting the job's folder", err);
        }
    }
    if (!rc)
        rc = add_event(cat, *id, 0, "submitted", NULL, err);
    return finish_tx(cat, rc, err);
}

int upm_job_get(upm_catalog *cat, int64_t id, upm_job *out, upm_err *err)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st = NULL;
    int rc = upm_sql_prepare(cat, "SELECT " JOB_COLUMNS " FROM jobs WHERE id = ?1", &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, id);
    int s = sqlite3_step(st);
    if (s == SQLITE_ROW)
        rc = read_row(st, out) ? upm_errf(err, UPM_ENOMEM, "no memory") : 0;
    else if (s == SQLITE_DONE)
        rc = upm_errf(err, UPM_EINVAL, "no job %lld in catalog %s", (long long)id, cat->path);
    else
        rc = upm_catalog_sqlerr(cat, err, "reading the job");
    sqlite3_finalize(st);
    return rc;
}

int upm_job_foreach(upm_catalog *cat, const char *state, upm_job_fn fn, void *ctx, upm_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = upm_sql_prepare(cat, "SELECT " JOB_COLUMNS " FROM jobs WHERE ?1 IS NULL OR state = ?1 ORDER BY id", &st,
                             err);
    if (rc)
        return rc;
    upm_sql_bind_text_or_null(st, 1, state);
    int s;
    while (!rc && (s = sqlite3_step(st)) == SQLITE_ROW) {
        upm_job j;
        if (read_row(st, &j))
            rc = upm_errf(err, UPM_ENOMEM, "no memory");
        else
            rc = fn(&j, ctx);
        upm_job_free(&j);
    }
    if (!rc && s != SQLITE_DONE)
        rc = upm_catalog_sqlerr(cat, err, "listing jobs");
    sqlite3_finalize(st);
    return rc;
}

int upm_job_claim(upm_catalog *cat, const char *backend, int64_t only, const char *owner, double lease_s, upm_job *out,
                  int *got, upm_err *err)
{
    *got = 0;
    memset(out, 0, sizeof *out);
    int rc = upm_catalog_begin(cat, err);
    if (rc)
        return rc;
    sqlite3_stmt *st = NULL;
    rc = upm_sql_prepare(cat,
                         "UPDATE jobs SET state = 'running', attempt = attempt + 1, owner = ?2, lease_until = ?3, "
                         "pid = NULL, message = NULL, started_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
                         "WHERE id = (SELECT id FROM jobs WHERE state = 'queued' AND backend = ?1 AND (?4 = 0 OR id = ?4) "
                         "ORDER BY priority DESC, id LIMIT 1) RETURNING " JOB_COLUMNS,
                         &st, err);
    if (!rc) {
        sqlite3_bind_text(st, 1, backend, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, owner, -1, SQLITE_TRANSIENT);
        sqlite3_bind_double(st, 3, upm_job_now() + lease_s);
        sqlite3_bind_int64(st, 4, only);
        int s = sqlite3_step(st);
        if (s == SQLITE_ROW) {
            *got = 1;
            if (read_row(st, out))
                rc = upm_errf(err, UPM_ENOMEM, "no memory");
        } else if (s != SQLITE_DONE)
            rc = upm_catalog_sqlerr(cat, err, "claiming a job");
        sqlite3_finalize(st);
    }
    if (!rc && *got)
        rc = add_event(cat, out->id, out->attempt, "started", owner, err);
    if (rc) {
        upm_job_free(out);
        *got = 0;
    }
    return finish_tx(cat, rc, err);
}

int upm_job_heartbeat(upm_catalog *cat, int64_t id, int64_t attempt, double lease_s, int64_t pid, int *lost,
                      int *cancel, upm_err *err)
{
    *lost = 0, *cancel = 0;
    sqlite3_stmt *st = NULL;
    int rc = upm_sql_prepare(cat,
                             "UPDATE jobs SET lease_until = ?3, pid = coalesce(?4, pid) "
                             "WHERE id = ?1 AND attempt = ?2 AND state = 'running' RETURNING cancel_requested",
                             &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, attempt);
    sqlite3_bind_double(st, 3, upm_job_now() + lease_s);
    if (pid > 0)
        sqlite3_bind_int64(st, 4, pid);
    else
        sqlite3_bind_null(st, 4);
    int s = sqlite3_step(st); /* one statement: its own short write transaction */
    if (s == SQLITE_ROW)
        *cancel = sqlite3_column_int(st, 0);
    else if (s == SQLITE_DONE)
        *lost = 1;
    else
        rc = upm_catalog_sqlerr(cat, err, "renewing the job's lease");
    sqlite3_finalize(st);
    return rc;
}

int upm_job_finish(upm_catalog *cat, int64_t id, int64_t attempt, const char *state, const char *message, int *lost,
                   upm_err *err)
{
    *lost = 0;
    int retry = !strcmp(state, "retry");
    int rc = upm_catalog_begin(cat, err);
    if (rc)
        return rc;
    sqlite3_stmt *st = NULL;
    rc = upm_sql_prepare(cat,
                         "UPDATE jobs SET state = CASE WHEN ?3 = 'retry' THEN "
                         "  (CASE WHEN attempt < max_attempts AND cancel_requested = 0 THEN 'queued' ELSE 'failed' END) "
                         "  WHEN ?3 = 'requeue' THEN 'queued' ELSE ?3 END, "
                         "max_attempts = max_attempts + (?3 = 'requeue'), "
                         "owner = NULL, lease_until = NULL, pid = NULL, message = ?4, "
                         "finished_at = CASE WHEN ?3 = 'requeue' OR (?3 = 'retry' AND attempt < max_attempts AND "
                         "  cancel_requested = 0) THEN NULL ELSE strftime('%Y-%m-%dT%H:%M:%fZ', 'now') END "
                         "WHERE id = ?1 AND attempt = ?2 AND state = 'running' RETURNING state",
                         &st, err);
    char now_state[UPM_JOB_STATE_MAX] = "";
    if (!rc) {
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_int64(st, 2, attempt);
        sqlite3_bind_text(st, 3, state, -1, SQLITE_TRANSIENT);
        upm_sql_bind_text_or_null(st, 4, message);
        int s = sqlite3_step(st);
        if (s == SQLITE_ROW)
            upm_sql_text(st, 0, now_state, sizeof now_state);
        else if (s == SQLITE_DONE)
            *lost = 1;
        else
            rc = upm_catalog_sqlerr(cat, err, "finishing the job");
        sqlite3_finalize(st);
    }
    if (!rc && !*lost)
        rc = add_event(cat, id, attempt, (retry || !strcmp(state, "requeue")) && !strcmp(now_state, "queued") ? "requeued"
                                                                                                     : now_state,
                       message, err);
    return finish_tx(cat, rc, err);
}

int upm_job_reap(upm_catalog *cat, const char *backend, int *n, upm_err *err)
{
    *n = 0;
    int rc = upm_catalog_begin(cat, err);
    if (rc)
        return rc;
    sqlite3_stmt *st = NULL;
    rc = upm_sql_prepare(cat,
                         "UPDATE jobs SET state = CASE WHEN attempt < max_attempts AND cancel_requested = 0 "
                         "  THEN 'queued' ELSE (CASE WHEN cancel_requested THEN 'cancelled' ELSE 'failed' END) END, "
                         "message = 'the lease of attempt ' || attempt || ' (' || coalesce(owner, '?') || ') expired', "
                         "finished_at = CASE WHEN attempt < max_attempts AND cancel_requested = 0 THEN NULL "
                         "  ELSE strftime('%Y-%m-%dT%H:%M:%fZ', 'now') END, owner = NULL, lease_until = NULL, pid = NULL "
                         "WHERE state = 'running' AND backend = ?1 AND lease_until < ?2 RETURNING id, attempt, state, message",
                         &st, err);
    if (rc) {
        upm_catalog_rollback(cat);
        return rc;
    }
    sqlite3_bind_text(st, 1, backend, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(st, 2, upm_job_now());
    struct reaped { int64_t id, attempt; char state[UPM_JOB_STATE_MAX], msg[256]; } *r = NULL;
    int s;
    while (!rc && (s = sqlite3_step(st)) == SQLITE_ROW) {
        struct reaped *g = realloc(r, sizeof *r * (size_t)(*n + 1));
        if (!g) {
            rc = upm_errf(err, UPM_ENOMEM, "no memory");
            break;
        }
        r = g;
        r[*n].id = sqlite3_column_int64(st, 0), r[*n].attempt = sqlite3_column_int64(st, 1);
        upm_sql_text(st, 2, r[*n].state, sizeof r[*n].state);
        upm_sql_text(st, 3, r[*n].msg, sizeof r[*n].msg);
        (*n)++;
    }
    if (!rc && s != SQLITE_DONE)
        rc = upm_catalog_sqlerr(cat, err, "reaping expired leases");
    sqlite3_finalize(st);
    for (int i = 0; !rc && i < *n; i++)
        rc = add_event(cat, r[i].id, r[i].attempt, !strcmp(r[i].state, "queued") ? "requeued" : r[i].state, r[i].msg,
                       err);
    free(r);
    return finish_tx(cat, rc, err);
}

int upm_job_cancel(upm_catalog *cat, int64_t id, const char *why, upm_err *err)
{
    int rc = upm_catalog_begin(cat, err);
    if (rc)
        return rc;
    upm_job j;
    rc = upm_job_get(cat, id, &j, err);
    sqlite3_stmt *st = NULL;
    if (!rc && strcmp(j.state, "queued") && strcmp(j.state, "running"))
        rc = upm_errf(err, UPM_EINVAL, "job %lld is %s: only a queued or running job can be cancelled",
                      (long long)id, j.state);
    else if (!rc && j.cancel_requested)
        rc = upm_errf(err, UPM_EINVAL, "job %lld is already being cancelled", (long long)id);
    if (!rc)
        rc = upm_sql_prepare(cat,
                             !strcmp(j.state, "queued")
                                 ? "UPDATE jobs SET state = 'cancelled', message = ?2, "
                                   "finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?1"
                                 : "UPDATE jobs SET cancel_requested = 1, message = ?2 WHERE id = ?1",
                             &st, err);
    if (!rc) {
        sqlite3_bind_int64(st, 1, id);
        upm_sql_bind_text_or_null(st, 2, why);
        rc = upm_sql_run(cat, st, "cancelling the job", err);
    }
    if (!rc)
        rc = add_event(cat, id, j.attempt, !strcmp(j.state, "queued") ? "cancelled" : "cancel requested", why, err);
    upm_job_free(&j);
    return finish_tx(cat, rc, err);
}

/* Inside a transaction: a cancelled or failed job back to the queue (fresh_attempts: with a new attempt
 * budget); with slurm_job, as that Slurm job. */
static int requeue_tx(upm_catalog *cat, int64_t id, int fresh_attempts, const char *slurm_job, int64_t *attempt,
                      upm_err *err)
{
    upm_job j;
    int rc = upm_job_get(cat, id, &j, err);
    *attempt = j.attempt;
    sqlite3_stmt *st = NULL;
    if (!rc && strcmp(j.state, "cancelled") && strcmp(j.state, "failed"))
        rc = upm_errf(err, UPM_EINVAL, "job %lld is %s: only a cancelled or failed job can be %s", (long long)id,
                      j.state, fresh_attempts ? "retried" : "resumed");
    if (!rc)
        rc = upm_sql_prepare(cat,
                             "UPDATE jobs SET state = 'queued', cancel_requested = 0, message = NULL, finished_at = NULL, "
                             "max_attempts = CASE WHEN ?2 THEN attempt + max_attempts ELSE max(max_attempts, attempt + 1) "
                             "END, slurm_job = coalesce(?3, slurm_job) WHERE id = ?1",
                             &st, err);
    if (!rc) {
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_int(st, 2, fresh_attempts);
        upm_sql_bind_text_or_null(st, 3, slurm_job);
        rc = upm_sql_run(cat, st, "requeueing the job", err);
    }
    if (!rc)
        rc = add_event(cat, id, j.attempt, fresh_attempts ? "retried" : "resumed", NULL, err);
    upm_job_free(&j);
    return rc;
}

int upm_job_requeue(upm_catalog *cat, int64_t id, int fresh_attempts, upm_err *err)
{
    int64_t attempt;
    int rc = upm_catalog_begin(cat, err);
    return rc ? rc : finish_tx(cat, requeue_tx(cat, id, fresh_attempts, NULL, &attempt, err), err);
}

int upm_job_set_slurm(upm_catalog *cat, int64_t id, const char *slurm_job, int requeue, upm_err *err)
{
    int64_t attempt = 0;
    int rc = upm_catalog_begin(cat, err);
    if (rc)
        return rc;
    if (requeue)
        rc = requeue_tx(cat, id, requeue == 2, slurm_job, &attempt, err);
    else { /* a new job: still queued, no Slurm job yet */
        sqlite3_stmt *st = NULL;
        rc = upm_sql_prepare(cat, "UPDATE jobs SET slurm_job = ?2 WHERE id = ?1 AND state = 'queued' AND slurm_job IS NULL",
                             &st, err);
        if (!rc) {
            sqlite3_bind_int64(st, 1, id);
            sqlite3_bind_text(st, 2, slurm_job, -1, SQLITE_TRANSIENT);
            rc = upm_sql_run(cat, st, "recording the Slurm job", err);
        }
        if (!rc && sqlite3_changes(cat->db) != 1)
            rc = upm_errf(err, UPM_EINVAL, "job %lld is no longer a new queued job", (long long)id);
    }
    char detail[128];
    snprintf(detail, sizeof detail, "Slurm job %s", slurm_job);
    if (!rc)
        rc = add_event(cat, id, attempt, "submitted to Slurm", detail, err);
    return finish_tx(cat, rc, err);
}

int upm_job_end_outside(upm_catalog *cat, int64_t id, const char *slurm_job, const char *state, const char *message,
                        int *changed, upm_err *err)
{
    *changed = 0;
    int rc = upm_catalog_begin(cat, err);
    if (rc)
        return rc;
    sqlite3_stmt *st = NULL;
    rc = upm_sql_prepare(cat,
                         "UPDATE jobs SET state = ?3, message = ?4, owner = NULL, lease_until = NULL, pid = NULL, "
                         "finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?1 AND slurm_job = ?2 AND "
                         "(state = 'queued' OR (state = 'running' AND lease_until < ?5)) RETURNING attempt",
                         &st, err);
    int64_t attempt = 0;
    if (!rc) {
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_text(st, 2, slurm_job, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 3, state, -1, SQLITE_TRANSIENT);
        upm_sql_bind_text_or_null(st, 4, message);
        sqlite3_bind_double(st, 5, upm_job_now());
        int s = sqlite3_step(st);
        if (s == SQLITE_ROW)
            *changed = 1, attempt = sqlite3_column_int64(st, 0);
        else if (s != SQLITE_DONE)
            rc = upm_catalog_sqlerr(cat, err, "recording the job's end");
        sqlite3_finalize(st);
    }
    if (!rc && *changed)
        rc = add_event(cat, id, attempt, state, message, err);
    return finish_tx(cat, rc, err);
}

int upm_job_withdraw(upm_catalog *cat, int64_t id, upm_err *err)
{
    int rc = upm_catalog_begin(cat, err);
    if (rc)
        return rc;
    sqlite3_stmt *st = NULL;
    rc = upm_sql_prepare(cat, "DELETE FROM job_events WHERE job_id = ?1 AND EXISTS (SELECT 1 FROM jobs WHERE id = ?1 "
                              "AND state = 'queued' AND attempt = 0)", &st, err);
    if (!rc) {
        sqlite3_bind_int64(st, 1, id);
        rc = upm_sql_run(cat, st, "withdrawing the job", err);
    }
    if (!rc)
        rc = upm_sql_prepare(cat, "DELETE FROM jobs WHERE id = ?1 AND state = 'queued' AND attempt = 0", &st, err);
    if (!rc) {
        sqlite3_bind_int64(st, 1, id);
        rc = upm_sql_run(cat, st, "withdrawing the job", err);
    }
    return finish_tx(cat, rc, err);
}

int upm_job_slurm_active(upm_catalog *cat, int *any, upm_err *err)
{
    sqlite3_stmt *st = NULL;
    *any = 0;
    int rc = upm_sql_prepare(cat, "SELECT 1 FROM jobs WHERE backend = 'slurm' AND state IN ('queued', 'running') AND "
                                  "slurm_job IS NOT NULL LIMIT 1", &st, err);
    if (rc)
        return rc;
    int s = sqlite3_step(st);
    *any = s == SQLITE_ROW;
    rc = s == SQLITE_ROW || s == SQLITE_DONE ? 0 : upm_catalog_sqlerr(cat, err, "looking for Slurm jobs");
    sqlite3_finalize(st);
    return rc;
}
