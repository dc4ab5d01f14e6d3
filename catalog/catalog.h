/* The upmoe catalog: one SQLite file holding tasks, datasets, label sets and mixtures, the trainer's runs
 * and metrics, and the job queue. This header opens it, finds it, and runs transactions; the record-level
 * functions are in catalog_ops.h, runs and metrics in runs.h.
 *
 * The handle is opaque and SQL stays inside the modules that own the tables: catalog/ for the catalog's
 * tables, runs and metrics, jobs/queue.c for the job queue. Only those library files
 * include sqlutil.h, which holds the SQLite handle; programs and other modules call functions. */
#ifndef UPM_CATALOG_H
#define UPM_CATALOG_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Newest schema this program knows; PRAGMA user_version of a catalog. */
#define UPM_CATALOG_SCHEMA_VERSION 11
/* PRAGMA application_id of every upmoe catalog ("UPMo"), so another SQLite file is not mistaken for one. */
#define UPM_CATALOG_APP_ID 0x55504d6f

enum {
    UPM_CAT_CREATE = 1 << 0,   /* create the file (and its directory) if missing */
    UPM_CAT_READONLY = 1 << 1, /* open for reading only */
};

typedef struct upm_catalog upm_catalog;

/* Where the catalog lives: --catalog (explicit, may be NULL), else $UPMOE_CATALOG, else
 * $UPMOE_HOME/catalog.db, else ~/.upmoe/catalog.db. */
int upm_catalog_resolve_path(const char *explicit_path, char *buf, size_t bufsize, upm_err *err);

/* Opens (and with UPM_CAT_CREATE creates) a catalog, refusing files that are not SQLite, not an upmoe
 * catalog, or of a newer schema; migrates an older schema forward when opened for writing. */
int upm_catalog_open(const char *path, unsigned flags, upm_catalog **out, upm_err *err);
void upm_catalog_close(upm_catalog *cat);

/* Write transactions are BEGIN IMMEDIATE, so concurrent writers queue on the busy timeout instead of
 * failing when a read would have to be upgraded to a write. On a fenced connection the transaction
 * starts only while the job is running with the fenced attempt; else UPM_ELEASE (nothing written). */
int upm_catalog_begin(upm_catalog *cat, upm_err *err);
/* Fences every later write of this connection to job `job` attempt `attempt` (see upm_catalog). */
void upm_catalog_fence(upm_catalog *cat, int64_t job, int64_t attempt);
int upm_catalog_commit(upm_catalog *cat, upm_err *err);
void upm_catalog_rollback(upm_catalog *cat);
/* Ends a write transaction: commits when rc is 0, else rolls back; returns rc, or the commit's error. */
int upm_catalog_end(upm_catalog *cat, int rc, upm_err *err);

/* The catalog's file, as opened. */
const char *upm_catalog_path(const upm_catalog *cat);
/* 1 when this open created the schema (the file was new or empty). */
int upm_catalog_created(const upm_catalog *cat);

#endif
