/* Internal helpers for the catalog's SQL: prepare with a readable error, copy columns into fixed
 * buffers, look up ids by name. Not part of the public catalog API. */
#ifndef UPM_SQLUTIL_H
#define UPM_SQLUTIL_H

#include <sqlite3.h>
#include <stddef.h>

#include "catalog.h"

int upm_sql_prepare(upm_catalog *cat, const char *sql, sqlite3_stmt **st, upm_err *err);
/* Steps a statement that returns no rows; finalizes it. */
int upm_sql_run(upm_catalog *cat, sqlite3_stmt *st, const char *doing, upm_err *err);
/* Copies column col (NULL -> "") into buf. */
void upm_sql_text(sqlite3_stmt *st, int col, char *buf, size_t bufsize);
void upm_sql_bind_text_or_null(sqlite3_stmt *st, int idx, const char *s);
/* Id of the row of table with that name: 0 and *id on success, UPM_EINVAL "unknown <what> 'name'" if
 * none (what e.g. "task"). */
int upm_sql_id(upm_catalog *cat, const char *table, const char *what, const char *name, sqlite3_int64 *id,
               upm_err *err);

/* Calls fn for each name of table in name order (names are collected first, so fn may query). */
int upm_sql_foreach_name(upm_catalog *cat, const char *table, int (*fn)(upm_catalog *, const char *, void *),
                         void *ctx, upm_err *err);

#endif
