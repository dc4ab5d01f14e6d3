/* The catalog's SQL side: the connection behind the opaque upm_catalog, and helpers (prepare with a
 * readable error, copy columns into fixed buffers, look up ids by name). Not part of the public catalog
 * API: only the library files of the modules that own tables include this (every catalog/ library file for the
 * catalog's tables, runs and metrics; jobs/queue.c for the job queue). Programs, CLIs
 * and other modules call those modules' functions instead. */
#ifndef UPM_SQLUTIL_H
#define UPM_SQLUTIL_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "catalog.h"

struct upm_catalog {
    sqlite3 *db;
    char path[4096];
    int readonly;
    int created; /* this open created the schema (the file was new or empty) */
    /* A trainer started by a job worker writes only while its job is running with its attempt
     * (upm_catalog_fence): every write transaction checks this first (fencing: a worker that lost its
     * lease cannot let a stale trainer overwrite the progress of the new attempt). 0 = unfenced. */
    int64_t fence_job, fence_attempt;
};

/* Turns the latest SQLite error of cat into err, prefixed with what was being done. */
int upm_catalog_sqlerr(upm_catalog *cat, upm_err *err, const char *doing);

/* Runs the forward migrations (schema.c) from the catalog's version up to UPM_CATALOG_SCHEMA_VERSION;
 * *from_version tells the version found once the lock was held (0: this call created the schema). */
int upm_catalog_migrate(sqlite3 *db, const char *path, int *from_version, upm_err *err);

int upm_sql_prepare(upm_catalog *cat, const char *sql, sqlite3_stmt **st, upm_err *err);
/* Steps a statement that returns no rows; finalizes it. */
int upm_sql_run(upm_catalog *cat, sqlite3_stmt *st, const char *doing, upm_err *err);
/* Copies column col (NULL -> "") into buf. */
void upm_sql_text(sqlite3_stmt *st, int col, char *buf, size_t bufsize);
void upm_sql_bind_text_or_null(sqlite3_stmt *st, int idx, const char *s);
/* Binds v, or NULL when v < 0 (the "undefined" of accuracies and chances). */
void upm_sql_bind_nonneg_or_null(sqlite3_stmt *st, int idx, double v);
/* The same for counts, bound as integers. */
void upm_sql_bind_count_or_null(sqlite3_stmt *st, int idx, sqlite3_int64 v);
/* Id of the row of table with that name: 0 and *id on success, UPM_EINVAL "unknown <what> 'name'" if
 * none (what e.g. "task"). */
int upm_sql_id(upm_catalog *cat, const char *table, const char *what, const char *name, sqlite3_int64 *id,
               upm_err *err);

/* Calls fn for each name of table in name order (names are collected first, so fn may query). */
int upm_sql_foreach_name(upm_catalog *cat, const char *table, int (*fn)(upm_catalog *, const char *, void *),
                         void *ctx, upm_err *err);

#endif
