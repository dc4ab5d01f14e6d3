/* Opening a catalog: finding its path, refusing files that are not (or no longer) upmoe catalogs, the
 * connection settings every process uses (WAL, foreign keys, busy timeout), and transactions. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fileio.h"
#include "sqlutil.h"

/* Long enough for a writer that holds the lock for a big import; readers in WAL never wait on it. */
#define BUSY_TIMEOUT_MS 15000

int upm_catalog_resolve_path(const char *explicit_path, char *buf, size_t bufsize, upm_err *err)
{
    const char *env = getenv("UPMOE_CATALOG");
    const char *home = getenv("UPMOE_HOME");
    int n;
    if (explicit_path && *explicit_path)
        n = snprintf(buf, bufsize, "%s", explicit_path);
    else if (env && *env)
        n = snprintf(buf, bufsize, "%s", env);
    else if (home && *home)
        n = snprintf(buf, bufsize, "%s/catalog.db", home);
    else {
        const char *h = getenv("HOME");
        if (!h || !*h)
            return upm_errf(err, UPM_EUSAGE,
                            "cannot find the catalog: HOME is not set; use --catalog PATH or UPMOE_CATALOG");
        n = snprintf(buf, bufsize, "%s/.upmoe/catalog.db", h);
    }
    if (n < 0 || (size_t)n >= bufsize)
        return upm_errf(err, UPM_EUSAGE, "catalog path is too long (%d bytes)", n);
    return 0;
}

/* mkdir -p of the directory part of path. */
static int make_parent_dirs(const char *path, upm_err *err)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return 0;
    *slash = '\0';
    return upm_mkdirs(dir, err);
}

int upm_catalog_sqlerr(upm_catalog *cat, upm_err *err, const char *doing)
{
    int ext = sqlite3_extended_errcode(cat->db);
    if ((ext & 0xff) == SQLITE_READONLY)
        return upm_errf(err, UPM_EDB, "catalog %s is read-only (%s)", cat->path, doing);
    if ((ext & 0xff) == SQLITE_NOTADB)
        return upm_errf(err, UPM_EDB, "%s is not a SQLite database (%s)", cat->path, doing);
    return upm_errf(err, UPM_EDB, "catalog %s: %s: %s", cat->path, doing, sqlite3_errmsg(cat->db));
}

static int exec_sql(upm_catalog *cat, const char *sql, const char *doing, upm_err *err)
{
    if (sqlite3_exec(cat->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return upm_catalog_sqlerr(cat, err, doing);
    return 0;
}

/* Reads version, application id and table count in one statement: one consistent snapshot, even
 * while another process is creating the catalog. */
static int read_identity(upm_catalog *cat, int *version, int *app, int *tables, upm_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(cat->db,
                                "SELECT (SELECT user_version FROM pragma_user_version), "
                                "(SELECT application_id FROM pragma_application_id), "
                                "(SELECT count(*) FROM sqlite_schema)",
                                -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        *version = sqlite3_column_int(st, 0);
        *app = sqlite3_column_int(st, 1);
        *tables = sqlite3_column_int(st, 2);
        sqlite3_finalize(st);
        return 0;
    }
    sqlite3_finalize(st);
    return upm_catalog_sqlerr(cat, err, "reading its header");
}

/* WAL is persistent: switch only when the file is not in WAL yet. The switch needs a moment of
 * exclusive access, which SQLite does not wait for through the busy handler, so retry here. */
static int ensure_wal(upm_catalog *cat, upm_err *err)
{
    for (int waited_ms = 0;; waited_ms += 10) {
        sqlite3_stmt *st = NULL;
        int rc = sqlite3_prepare_v2(cat->db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc == SQLITE_ROW || rc == SQLITE_DONE)
            return 0;
        if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED)
            return upm_catalog_sqlerr(cat, err, "switching to WAL");
        if (waited_ms >= BUSY_TIMEOUT_MS)
            return upm_catalog_sqlerr(cat, err, "switching to WAL");
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* Checks the file's identity and version before changing anything in it (a foreign SQLite file must
 * not even be switched to WAL); then sets the write settings and migrates when writable. */
static int check_schema(upm_catalog *cat, int creating, upm_err *err)
{
    int version = 0, app = 0, tables = 0;
    int rc = read_identity(cat, &version, &app, &tables, err);
    if (rc)
        return rc;
    if ((version > 0 && app != UPM_CATALOG_APP_ID) || (version == 0 && tables > 0))
        return upm_errf(err, UPM_EDB, "%s is a SQLite database but not an upmoe catalog", cat->path);
    if (version > UPM_CATALOG_SCHEMA_VERSION)
        return upm_errf(err, UPM_EDB,
                        "catalog %s has schema version %d, newer than this program knows (%d): upgrade upmoe",
                        cat->path, version, UPM_CATALOG_SCHEMA_VERSION);
    if (version == 0 && !creating)
        return upm_errf(err, UPM_EDB, "%s is an empty database, not an upmoe catalog (create one with "
                        "'upmoe-catalog init')", cat->path);
    if (!cat->readonly && ((rc = ensure_wal(cat, err)) ||
                           (rc = exec_sql(cat, "PRAGMA synchronous = NORMAL", "setting synchronous", err))))
        return rc;
    if (version == UPM_CATALOG_SCHEMA_VERSION)
        return 0;
    if (cat->readonly)
        return upm_errf(err, UPM_EDB, "catalog %s has schema version %d and needs a migration to %d; "
                        "open it once for writing", cat->path, version, UPM_CATALOG_SCHEMA_VERSION);
    int from = 0;
    rc = upm_catalog_migrate(cat->db, cat->path, &from, err);
    cat->created = rc == 0 && from == 0;
    return rc;
}

int upm_catalog_open(const char *path, unsigned flags, upm_catalog **out, upm_err *err)
{
    *out = NULL;
    int creating = (flags & UPM_CAT_CREATE) != 0;
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno != ENOENT || !creating)
            return upm_errf(err, UPM_EDB, "no catalog at %s (%s); create one with 'upmoe-catalog init' or "
                            "point --catalog / UPMOE_CATALOG at one", path, strerror(errno));
        int rc = make_parent_dirs(path, err);
        if (rc)
            return rc;
    } else if (!S_ISREG(st.st_mode)) {
        return upm_errf(err, UPM_EDB, "catalog path %s is not a regular file", path);
    }
    upm_catalog *cat = calloc(1, sizeof *cat);
    if (!cat)
        return upm_errf(err, UPM_ENOMEM, "out of memory opening the catalog");
    snprintf(cat->path, sizeof cat->path, "%s", path);
    /* A file with no write permission bit is read-only by intent, even for root. */
    int file_ro = stat(path, &st) == 0 && ((st.st_mode & 0222) == 0 || access(path, W_OK) != 0);
    cat->readonly = (flags & UPM_CAT_READONLY) || file_ro;
    if (file_ro && !(flags & UPM_CAT_READONLY)) {
        free(cat);
        return upm_errf(err, UPM_EDB, "catalog %s is read-only; this command changes it", path);
    }
    int oflags = cat->readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | (creating ? SQLITE_OPEN_CREATE : 0);
    if (sqlite3_open_v2(path, &cat->db, oflags | SQLITE_OPEN_NOFOLLOW, NULL) != SQLITE_OK) {
        int rc = upm_errf(err, UPM_EDB, "cannot open catalog %s: %s", path,
                          cat->db ? sqlite3_errmsg(cat->db) : "out of memory");
        upm_catalog_close(cat);
        return rc;
    }
    sqlite3_busy_timeout(cat->db, BUSY_TIMEOUT_MS);
    sqlite3_extended_result_codes(cat->db, 1);
    int rc = exec_sql(cat, "PRAGMA foreign_keys = ON", "enabling foreign keys", err);
    if (!rc)
        rc = check_schema(cat, creating, err);
    if (rc) {
        upm_catalog_close(cat);
        return rc;
    }
    *out = cat;
    return 0;
}

void upm_catalog_close(upm_catalog *cat)
{
    if (!cat)
        return;
    sqlite3_close(cat->db);
    free(cat);
}

void upm_catalog_fence(upm_catalog *cat, int64_t job, int64_t attempt)
{
    cat->fence_job = job, cat->fence_attempt = attempt;
}

int upm_catalog_begin(upm_catalog *cat, upm_err *err)
{
    int rc = exec_sql(cat, "BEGIN IMMEDIATE", "starting a write transaction", err);
    if (rc || !cat->fence_job)
        return rc;
    sqlite3_stmt *st = NULL;
    rc = sqlite3_prepare_v2(cat->db, "SELECT state, attempt FROM jobs WHERE id = ?1", -1, &st, NULL);
    if (rc != SQLITE_OK) {
        upm_catalog_rollback(cat);
        return upm_catalog_sqlerr(cat, err, "checking the job's lease");
    }
    sqlite3_bind_int64(st, 1, cat->fence_job);
    int s = sqlite3_step(st), ok = 0;
    char state[32] = "gone";
    int64_t attempt = 0;
    if (s == SQLITE_ROW) {
        snprintf(state, sizeof state, "%s", (const char *)sqlite3_column_text(st, 0));
        attempt = sqlite3_column_int64(st, 1);
        ok = !strcmp(state, "running") && attempt == cat->fence_attempt;
    }
    sqlite3_finalize(st);
    if (ok)
        return 0;
    upm_catalog_rollback(cat);
    return upm_errf(err, UPM_ELEASE, "job %lld attempt %lld no longer owns the job (it is %s, attempt %lld): "
                    "stopping without writing", (long long)cat->fence_job, (long long)cat->fence_attempt, state,
                    (long long)attempt);
}

int upm_catalog_commit(upm_catalog *cat, upm_err *err)
{
    int rc = exec_sql(cat, "COMMIT", "committing", err);
    if (rc)
        upm_catalog_rollback(cat);
    return rc;
}

void upm_catalog_rollback(upm_catalog *cat)
{
    if (!sqlite3_get_autocommit(cat->db))
        sqlite3_exec(cat->db, "ROLLBACK", NULL, NULL, NULL);
}

const char *upm_catalog_path(const upm_catalog *cat)
{
    return cat->path;
}

int upm_catalog_created(const upm_catalog *cat)
{
    return cat->created;
}

int upm_catalog_end(upm_catalog *cat, int rc, upm_err *err)
{
    if (!rc)
        return upm_catalog_commit(cat, err);
    upm_catalog_rollback(cat);
    return rc;
}
