/* Unit test for the catalog library: path resolution, creation and migration, refusal of foreign or
 * newer files, validation of records, the record round trip, removal rules and the preset. */
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "catalog_ops.h"
#include "check.h"
#include "queue.h"
#include "runs.h"
#include "sqlutil.h" /* the connection, to make its reads fail (test_failed_reads) */

static char dir[] = "/tmp/upm-test-catalog-XXXXXX";

static const char *path_in(const char *name)
{
    static char buf[256];
    snprintf(buf, sizeof buf, "%s/%s", dir, name);
    return buf;
}

static void test_resolve(void)
{
    char buf[512];
    upm_err err;
    unsetenv("UPMOE_CATALOG");
    unsetenv("UPMOE_HOME");
    setenv("HOME", "/home/someone", 1);
    CHECK(upm_catalog_resolve_path(NULL, buf, sizeof buf, &err) == 0 && strcmp(buf, "/home/someone/.upmoe/catalog.db") == 0);
    setenv("UPMOE_HOME", "/data/upmoe", 1);
    CHECK(upm_catalog_resolve_path(NULL, buf, sizeof buf, &err) == 0 && strcmp(buf, "/data/upmoe/catalog.db") == 0);
    setenv("UPMOE_CATALOG", "/x/c.db", 1);
    CHECK(upm_catalog_resolve_path(NULL, buf, sizeof buf, &err) == 0 && strcmp(buf, "/x/c.db") == 0);
    CHECK(upm_catalog_resolve_path("/y/d.db", buf, sizeof buf, &err) == 0 && strcmp(buf, "/y/d.db") == 0);
    CHECK(upm_catalog_resolve_path("/y/d.db", buf, 4, &err) == UPM_EUSAGE);
}

static int user_version(const char *path)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    int v = -1;
    sqlite3_open(path, &db);
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static void test_open_refusals(void)
{
    upm_catalog *cat = NULL;
    upm_err err;
    CHECK(upm_catalog_open(path_in("missing.db"), 0, &cat, &err) == UPM_EDB && strstr(err.msg, "no catalog"));
    CHECK(upm_catalog_open(path_in("sub/dir/new.db"), UPM_CAT_CREATE, &cat, &err) == 0);
    upm_catalog_close(cat);
    CHECK(user_version(path_in("sub/dir/new.db")) == UPM_CATALOG_SCHEMA_VERSION);

    FILE *f = fopen(path_in("text.db"), "w");
    fputs("this is not a database, but it is long enough to have a header of a hundred bytes or more ......"
          "..............................................\n", f);
    fclose(f);
    CHECK(upm_catalog_open(path_in("text.db"), 0, &cat, &err) == UPM_EDB && strstr(err.msg, "not a SQLite database"));

    sqlite3 *db;
    sqlite3_open(path_in("other.db"), &db);
    sqlite3_exec(db, "CREATE TABLE t (x); PRAGMA user_version = 3;", NULL, NULL, NULL);
    sqlite3_close(db);
    CHECK(upm_catalog_open(path_in("other.db"), 0, &cat, &err) == UPM_EDB && strstr(err.msg, "not an upmoe catalog"));
    CHECK(upm_catalog_open(path_in("other.db"), UPM_CAT_CREATE, &cat, &err) == UPM_EDB);

    sqlite3_open(path_in("sub/dir/new.db"), &db);
    sqlite3_exec(db, "PRAGMA user_version = 42", NULL, NULL, NULL);
    sqlite3_close(db);
    CHECK(upm_catalog_open(path_in("sub/dir/new.db"), 0, &cat, &err) == UPM_EDB && strstr(err.msg, "newer"));
    CHECK(user_version(path_in("sub/dir/new.db")) == 42); /* refused, not rewritten */
}

/* A new catalog in the test folder with the paper's preset; NULL (a failed check) if it cannot be made. */
static upm_catalog *open_preset(const char *name)
{
    upm_catalog *cat = NULL;
    upm_err err;
    CHECK(upm_catalog_open(path_in(name), UPM_CAT_CREATE, &cat, &err) == 0);
    if (cat)
        CHECK(upm_catalog_begin(cat, &err) == 0 && upm_preset_apply(cat, "uniperceiver-moe", &err) == 0 &&
              upm_catalog_commit(cat, &err) == 0);
    return cat;
}

static void test_records(void)
{
    upm_err err;
    upm_catalog *cat = open_preset("rec.db");
    if (!cat)
        return;

    upm_dataset d;
    CHECK(upm_dataset_get(cat, "cc3m-caption", &d, &err) == 0);
    CHECK(d.batch_size == 100 && d.sampling_weight == 0.026295 && d.loss_weight == 1.0 && !d.url_pattern[0]);
    CHECK(strcmp(d.task, "image-caption") == 0);

    /* A dataset update round-trips and derives the shard count from its pattern. */
    snprintf(d.url_pattern, sizeof d.url_pattern, "https://example.org/cc3m/{00000..00575}.tar");
    d.num_shards = -1;
    CHECK(upm_catalog_begin(cat, &err) == 0 && upm_dataset_update(cat, &d, &err) == 0 && upm_catalog_commit(cat, &err) == 0);
    upm_dataset e;
    CHECK(upm_dataset_get(cat, "cc3m-caption", &e, &err) == 0 && e.num_shards == 576);

    /* The augmentation: inherit by default, each mode round-trips, an out-of-range value is refused. */
    CHECK(e.augment == UPM_AUGMENT_INHERIT);
    upm_dataset_init(&e);
    CHECK(e.augment == UPM_AUGMENT_INHERIT);
    static const upm_augment modes[] = {UPM_AUGMENT_PAPER, UPM_AUGMENT_LIGHT, UPM_AUGMENT_NONE, UPM_AUGMENT_INHERIT};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        d.augment = modes[i];
        CHECK(upm_catalog_begin(cat, &err) == 0 && upm_dataset_update(cat, &d, &err) == 0 &&
              upm_catalog_commit(cat, &err) == 0);
        CHECK(upm_dataset_get(cat, "cc3m-caption", &e, &err) == 0 && e.augment == modes[i]);
    }
    d.augment = (upm_augment)(UPM_AUGMENT_NONE + 1);
    CHECK(upm_dataset_validate(&d, &err) == UPM_EUSAGE && strstr(err.msg, "cc3m-caption") &&
          strstr(err.msg, "paper, light or none"));
    d.augment = UPM_AUGMENT_INHERIT;

    /* Validation names the problem. */
    upm_task t;
    CHECK(upm_task_get(cat, "glue-sst2", &t, &err) == 0 && t.n_inputs == 1 && t.formulation == UPM_FORM_LABEL);
    snprintf(t.prompt, sizeof t.prompt, "{json:nope} <|spe|>");
    CHECK(upm_task_validate(&t, &err) == UPM_EUSAGE && strstr(err.msg, "json:nope"));
    snprintf(t.prompt, sizeof t.prompt, "{json:sentence} <|spe|> <|spe|>");
    CHECK(upm_task_validate(&t, &err) == UPM_EUSAGE && strstr(err.msg, "at most one"));
    snprintf(t.prompt, sizeof t.prompt, "{json:sentence} <|what|>");
    CHECK(upm_task_validate(&t, &err) == UPM_EUSAGE && strstr(err.msg, "unknown special token"));
    t.formulation = UPM_FORM_VOCAB_MLM;
    t.prompt[0] = '\0';
    CHECK(upm_task_validate(&t, &err) == UPM_EUSAGE && strstr(err.msg, "label set"));
    CHECK(upm_name_check("task", "Bad Name", &err) == UPM_EUSAGE);
    CHECK(upm_field_check("json:label", &err) == 0 && upm_field_check("JPG", &err) == UPM_EUSAGE);

    /* Removal refuses dependents without cascade and leaves no orphan with it. */
    CHECK(upm_catalog_begin(cat, &err) == 0);
    CHECK(upm_remove(cat, UPM_KIND_TASK, "image-caption", 0, &err) == UPM_EINVAL && strstr(err.msg, "cc3m-caption"));
    CHECK(upm_remove(cat, UPM_KIND_TASK, "image-caption", 1, &err) == 0);
    CHECK(upm_exists(cat, UPM_KIND_DATASET, "cc3m-caption", &err) == 0);
    CHECK(upm_exists(cat, UPM_KIND_DATASET, "cc3m-retrieval", &err) == 1);
    upm_catalog_rollback(cat);
    CHECK(upm_exists(cat, UPM_KIND_DATASET, "cc3m-caption", &err) == 1); /* rolled back: nothing lost */

    /* The preset cannot be applied twice. */
    CHECK(upm_catalog_begin(cat, &err) == 0);
    CHECK(upm_preset_apply(cat, "uniperceiver-moe", &err) == UPM_EINVAL && strstr(err.msg, "already exists"));
    upm_catalog_rollback(cat);
    CHECK(upm_preset_apply(cat, "nope", &err) == UPM_EUSAGE);
    upm_catalog_close(cat);
}

/* SQLite's progress handler on the catalog's own connection interrupts a statement after a chosen number of
 * virtual-machine steps: a read that fails part-way, as a busy, corrupt or vanished file would make it. */
static long ops_seen, interrupt_at;
static int progress(void *unused)
{
    (void)unused;
    return ++ops_seen == interrupt_at;
}

static void interrupt_after(upm_catalog *cat, long ops)
{
    ops_seen = 0;
    interrupt_at = ops;
    sqlite3_progress_handler(cat->db, ops ? 1 : 0, ops ? progress : NULL, NULL);
}

static int count_point(int64_t step, double value, void *ctx)
{
    (void)step, (void)value;
    ++*(int *)ctx;
    return 0;
}

/* A read that fails part-way is an error naming what was read, never a shorter answer: not the loss curve
 * upmoe-jobs plots, not its list of tasks, and not the dependents that guard a removal (where "none found"
 * would let the removal go ahead). */
static void test_failed_reads(void)
{
    upm_err err;
    upm_catalog *cat = open_preset("reads.db");
    if (!cat)
        return;
    int64_t run = 0;
    CHECK(upm_run_create(cat, "r", "uniperceiver-moe-pretrain", "ti", "{}", "/tmp/r", 50, &run, &err) == 0);
    upm_metric_row rows[50];
    memset(rows, 0, sizeof rows);
    for (int i = 0; i < 50; i++) {
        rows[i].step = i;
        snprintf(rows[i].task, sizeof rows[i].task, "%s", i % 2 ? "mlm" : "image-caption");
        snprintf(rows[i].dataset, sizeof rows[i].dataset, "%s", i % 2 ? "book" : "cc3m-caption");
        rows[i].loss = 10.0 - 0.1 * i;
        rows[i].accuracy = -1;
        rows[i].samples = 8;
    }
    CHECK(upm_metrics_put(cat, run, rows, 50, &err) == 0);

    /* the whole series, counting the statement's steps; then the same read failing half-way */
    int points = 0;
    interrupt_after(cat, -1);
    CHECK(upm_metrics_series(cat, run, "mlm", count_point, &points, &err) == 0 && points == 25);
    long total = ops_seen;
    points = 0;
    interrupt_after(cat, total / 2);
    CHECK(upm_metrics_series(cat, run, "mlm", count_point, &points, &err) == UPM_EDB &&
          strstr(err.msg, "reading metrics"));
    CHECK(points > 0 && points < 25);

    /* a run's progress (upmoe-jobs status, the worker): a failed read of the run, or of its rates, is not
     * "no such run" or "no rate yet"; and not "no Slurm job active" for upmoe-jobs slurm */
    upm_run_progress prog;
    interrupt_after(cat, -1);
    CHECK(upm_run_progress_get(cat, run, &prog, &err) == 0 && prog.found && prog.total_steps == 50);
    total = ops_seen;
    interrupt_after(cat, 1);
    CHECK(upm_run_progress_get(cat, run, &prog, &err) == UPM_EDB && strstr(err.msg, "reading the run"));
    interrupt_after(cat, total);
    CHECK(upm_run_progress_get(cat, run, &prog, &err) == UPM_EDB && strstr(err.msg, "rates"));
    int any = -1;
    interrupt_after(cat, 0);
    CHECK(upm_job_slurm_active(cat, &any, &err) == 0 && any == 0);
    interrupt_after(cat, 1);
    CHECK(upm_job_slurm_active(cat, &any, &err) == UPM_EDB && strstr(err.msg, "Slurm"));

    char tasks[4][128];
    int ntasks = -1;
    interrupt_after(cat, 1);
    CHECK(upm_metrics_tasks(cat, run, tasks, 4, &ntasks, &err) == UPM_EDB && strstr(err.msg, "tasks"));
    interrupt_after(cat, 0);
    CHECK(upm_metrics_tasks(cat, run, tasks, 4, &ntasks, &err) == 0 && ntasks == 2);

    /* image-caption has datasets: the guard's read (the one after the name's lookup) fails, which refuses the
     * removal and leaves the task */
    interrupt_after(cat, -1);
    CHECK(upm_exists(cat, UPM_KIND_TASK, "image-caption", &err) == 1);
    long lookup = ops_seen;
    CHECK(upm_catalog_begin(cat, &err) == 0);
    interrupt_after(cat, lookup + 1);
    CHECK(upm_remove(cat, UPM_KIND_TASK, "image-caption", 0, &err) == UPM_EDB && strstr(err.msg, "dependent"));
    /* --cascade: its read of the datasets to remove first (the one after the guard's) fails: an error too */
    interrupt_after(cat, -1);
    CHECK(upm_remove(cat, UPM_KIND_TASK, "image-caption", 0, &err) == UPM_EINVAL);
    long guard = ops_seen;
    interrupt_after(cat, guard + 1);
    CHECK(upm_remove(cat, UPM_KIND_TASK, "image-caption", 1, &err) == UPM_EDB && strstr(err.msg, "remove first"));
    interrupt_after(cat, 0);
    upm_catalog_rollback(cat);
    CHECK(upm_exists(cat, UPM_KIND_TASK, "image-caption", &err) == 1);
    CHECK(upm_exists(cat, UPM_KIND_DATASET, "cc3m-caption", &err) == 1);
    upm_catalog_close(cat);
}

int main(void)
{
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_resolve();
    test_open_refusals();
    test_records();
    test_failed_reads();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return CHECK_RESULT("test_catalog_db");
}
