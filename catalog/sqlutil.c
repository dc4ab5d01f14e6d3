/* Internal SQL helpers (see sqlutil.h). */
#include "sqlutil.h"

#include <stdio.h>
#include <string.h>

int upm_sql_prepare(upm_catalog *cat, const char *sql, sqlite3_stmt **st, upm_err *err)
{
    if (sqlite3_prepare_v2(cat->db, sql, -1, st, NULL) != SQLITE_OK)
        return upm_catalog_sqlerr(cat, err, "preparing a query");
    return 0;
}

int upm_sql_run(upm_catalog *cat, sqlite3_stmt *st, const char *doing, upm_err *err)
{
    int rc = sqlite3_step(st);
    int out = 0;
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        out = upm_catalog_sqlerr(cat, err, doing);
    sqlite3_finalize(st);
    return out;
}

void upm_sql_text(sqlite3_stmt *st, int col, char *buf, size_t bufsize)
{
    const unsigned char *s = sqlite3_column_text(st, col);
    snprintf(buf, bufsize, "%s", s ? (const char *)s : "");
}

void upm_sql_bind_text_or_null(sqlite3_stmt *st, int idx, const char *s)
{
    if (s && *s)
        sqlite3_bind_text(st, idx, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, idx);
}

int upm_sql_id(upm_catalog *cat, const char *table, const char *what, const char *name, sqlite3_int64 *id,
               upm_err *err)
{
    char sql[128];
    sqlite3_stmt *st = NULL;
    snprintf(sql, sizeof sql, "SELECT id FROM %s WHERE name = ?", table);
    int rc = upm_sql_prepare(cat, sql, &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
        rc = 0;
    } else if (step == SQLITE_DONE) {
        rc = upm_errf(err, UPM_EINVAL, "unknown %s '%s'", what, name);
    } else {
        rc = upm_catalog_sqlerr(cat, err, "looking up a name");
    }
    sqlite3_finalize(st);
    return rc;
}

void upm_sql_bind_nonneg_or_null(sqlite3_stmt *st, int idx, double v)
{
    if (v >= 0)
        sqlite3_bind_double(st, idx, v);
    else
        sqlite3_bind_null(st, idx);
}

void upm_sql_bind_count_or_null(sqlite3_stmt *st, int idx, sqlite3_int64 v)
{
    if (v >= 0)
        sqlite3_bind_int64(st, idx, v);
    else
        sqlite3_bind_null(st, idx);
}
