/* The catalog schema as a list of forward migrations. Migration N brings a catalog from user_version
 * N-1 to N; a later issue adds a table by appending one function to `migrations` and bumping
 * UPM_CATALOG_SCHEMA_VERSION. Integrity lives here (types, CHECKs, foreign keys, triggers), so a
 * catalog stays valid whoever writes to it. Documented in docs/catalog.md. */
#include <stdio.h>

#include "sqlutil.h"

/* Names: lower-case ASCII letters, digits, '.', '_' and '-', starting with a letter or digit. */
#define NAME_CHECK(col) \
    "CHECK (length(" col ") BETWEEN 1 AND 64 AND " col " GLOB '[a-z0-9]*' AND " col \
    " NOT GLOB '*[^a-z0-9._-]*')"
/* A weight is a finite number >= 0 (NaN is stored as NULL by SQLite and fails NOT NULL). */
#define WEIGHT_CHECK(col) "CHECK (" col " >= 0 AND " col " <= 1e300)"
#define FIELD_CHECK(col) \
    "CHECK (length(" col ") BETWEEN 1 AND 64 AND " col " GLOB '[a-z0-9]*' AND " col \
    " NOT GLOB '*[^A-Za-z0-9._:-]*')"
#define MODALITY_CHECK(col) "CHECK (" col " IN ('image', 'video', 'text'))"

static const char *const schema_v1 =
    "CREATE TABLE label_sets ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE " NAME_CHECK("name") ","
    "  synonyms INTEGER NOT NULL DEFAULT 0 CHECK (synonyms IN (0, 1)),"
    "  notes TEXT NOT NULL DEFAULT ''"
    ") STRICT;"
    /* names: a JSON array of one or more strings; the first is the canonical text, the others are
     * synonyms (ImageNet-21k style: one is picked per class per batch). */
    "CREATE TABLE labels ("
    "  label_set_id INTEGER NOT NULL REFERENCES label_sets(id) ON DELETE CASCADE,"
    "  idx INTEGER NOT NULL CHECK (idx >= 0),"
    "  key TEXT CHECK (key IS NULL OR length(key) > 0),"
    "  names TEXT NOT NULL CHECK (json_valid(names) AND json_type(names) = 'array'"
    "                             AND json_array_length(names) >= 1),"
    "  PRIMARY KEY (label_set_id, idx),"
    "  UNIQUE (label_set_id, key)"
    ") STRICT;"
    "CREATE TABLE tasks ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE " NAME_CHECK("name") ","
    "  formulation TEXT NOT NULL"
    "    CHECK (formulation IN ('label', 'pair', 'vocab-mlm', 'vocab-caption')),"
    "  causal INTEGER NOT NULL DEFAULT 0 CHECK (causal IN (0, 1)),"
    "  label_set_id INTEGER REFERENCES label_sets(id),"
    "  target_field TEXT " FIELD_CHECK("target_field") ","
    "  target_modality TEXT NOT NULL " MODALITY_CHECK("target_modality") ","
    "  prompt TEXT CHECK (prompt IS NULL OR length(prompt) BETWEEN 1 AND 1024),"
    "  max_text_len INTEGER NOT NULL DEFAULT 64 CHECK (max_text_len BETWEEN 2 AND 4096),"
    "  max_target_len INTEGER NOT NULL DEFAULT 32 CHECK (max_target_len BETWEEN 2 AND 4096),"
    "  loss_weight REAL NOT NULL DEFAULT 1.0 " WEIGHT_CHECK("loss_weight") ","
    "  notes TEXT NOT NULL DEFAULT '',"
    "  CHECK ((formulation = 'label') = (label_set_id IS NOT NULL)),"
    "  CHECK (formulation = 'pair' OR target_modality = 'text'),"
    "  CHECK (formulation <> 'pair' OR target_field IS NOT NULL),"
    "  CHECK (formulation <> 'vocab-caption' OR causal = 1),"
    "  CHECK (formulation <> 'vocab-mlm' OR causal = 0)"
    ") STRICT;"
    "CREATE INDEX tasks_label_set ON tasks(label_set_id);"
    "CREATE TABLE task_inputs ("
    "  task_id INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,"
    "  pos INTEGER NOT NULL CHECK (pos BETWEEN 0 AND 7),"
    "  field TEXT NOT NULL " FIELD_CHECK("field") ","
    "  modality TEXT NOT NULL " MODALITY_CHECK("modality") ","
    "  PRIMARY KEY (task_id, pos),"
    "  UNIQUE (task_id, field)"
    ") STRICT;"
    "CREATE TABLE datasets ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE " NAME_CHECK("name") ","
    "  task_id INTEGER NOT NULL REFERENCES tasks(id),"
    "  split TEXT NOT NULL DEFAULT 'train' CHECK (split IN ('train', 'val', 'test')),"
    "  url_pattern TEXT CHECK (url_pattern IS NULL OR length(url_pattern) BETWEEN 1 AND 1024),"
    "  num_samples INTEGER CHECK (num_samples IS NULL OR num_samples >= 0),"
    "  num_shards INTEGER CHECK (num_shards IS NULL OR num_shards >= 1),"
    "  sampling_weight REAL NOT NULL DEFAULT 1.0 " WEIGHT_CHECK("sampling_weight") ","
    "  loss_weight REAL CHECK (loss_weight IS NULL OR (loss_weight >= 0 AND loss_weight <= 1e300)),"
    "  batch_size INTEGER NOT NULL CHECK (batch_size BETWEEN 1 AND 1000000),"
    "  label_set_id INTEGER REFERENCES label_sets(id),"
    "  license TEXT NOT NULL DEFAULT '',"
    "  notes TEXT NOT NULL DEFAULT ''"
    ") STRICT;"
    "CREATE INDEX datasets_task ON datasets(task_id);"
    "CREATE INDEX datasets_label_set ON datasets(label_set_id);"
    /* A dataset may name its own label set (Kinetics-400 under video classification) only when its
     * task is a label task. */
    "CREATE TRIGGER datasets_label_set_insert BEFORE INSERT ON datasets"
    "  WHEN NEW.label_set_id IS NOT NULL"
    "   AND (SELECT formulation FROM tasks WHERE id = NEW.task_id) <> 'label'"
    "  BEGIN SELECT RAISE(ABORT, 'a dataset label set needs a task of formulation label'); END;"
    "CREATE TRIGGER datasets_label_set_update BEFORE UPDATE OF label_set_id, task_id ON datasets"
    "  WHEN NEW.label_set_id IS NOT NULL"
    "   AND (SELECT formulation FROM tasks WHERE id = NEW.task_id) <> 'label'"
    "  BEGIN SELECT RAISE(ABORT, 'a dataset label set needs a task of formulation label'); END;"
    "CREATE TABLE mixtures ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE " NAME_CHECK("name") ","
    "  notes TEXT NOT NULL DEFAULT ''"
    ") STRICT;"
    /* NULL weights inherit the dataset's (and, for the loss weight, then the task's). */
    "CREATE TABLE mixture_datasets ("
    "  mixture_id INTEGER NOT NULL REFERENCES mixtures(id) ON DELETE CASCADE,"
    "  dataset_id INTEGER NOT NULL REFERENCES datasets(id),"
    "  sampling_weight REAL"
    "    CHECK (sampling_weight IS NULL OR (sampling_weight >= 0 AND sampling_weight <= 1e300)),"
    "  loss_weight REAL CHECK (loss_weight IS NULL OR (loss_weight >= 0 AND loss_weight <= 1e300)),"
    "  PRIMARY KEY (mixture_id, dataset_id)"
    ") STRICT;"
    "CREATE INDEX mixture_datasets_dataset ON mixture_datasets(dataset_id);";

/* Training runs and their per-step, per-task metrics (upmoe-train writes them; anything can read them
 * while it trains). A step's row is keyed by (run, step, task): a resumed run that recomputes steps
 * lost since its last checkpoint replaces their rows instead of duplicating them. */
static const char *const schema_v2 =
    "CREATE TABLE runs ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),"
    "  mixture TEXT NOT NULL,"
    "  model TEXT NOT NULL,"
    "  config TEXT NOT NULL CHECK (json_valid(config)),"
    "  out_dir TEXT NOT NULL,"
    "  state TEXT NOT NULL CHECK (state IN ('running', 'finished', 'interrupted', 'failed')),"
    "  total_steps INTEGER NOT NULL CHECK (total_steps > 0),"
    "  step INTEGER NOT NULL DEFAULT 0 CHECK (step >= 0),"
    "  started_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),"
    "  updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),"
    "  last_checkpoint TEXT,"
    "  message TEXT"
    ") STRICT;"
    "CREATE TABLE metrics ("
    "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    "  step INTEGER NOT NULL CHECK (step >= 0),"
    "  task TEXT NOT NULL,"
    "  dataset TEXT NOT NULL,"
    "  loss REAL,"
    "  weighted_loss REAL,"
    "  accuracy REAL,"
    "  samples INTEGER NOT NULL CHECK (samples >= 0),"
    "  lr REAL,"
    "  grad_norm REAL,"
    "  samples_per_s REAL,"
    "  at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),"
    "  PRIMARY KEY (run_id, step, task)"
    ") STRICT;";

typedef struct migration {
    const char *what;
    const char *sql;
} migration;

/* Data-parallel runs: which ranks trained a metrics row's task in its step ("0 3 5"). */
static const char *const schema_v3 = "ALTER TABLE metrics ADD COLUMN ranks TEXT;";

/* The job queue (jobs/, upmoe-jobs): one row per job with its state machine, lease and fencing attempt,
 * and an append-only history of its events. A run knows the job that started it. */
static const char *const schema_v4 =
    "CREATE TABLE jobs ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),"
    "  kind TEXT NOT NULL CHECK (kind IN ('pretrain')),"
    "  state TEXT NOT NULL DEFAULT 'queued'"
    "    CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),"
    "  priority INTEGER NOT NULL DEFAULT 0,"
    "  backend TEXT NOT NULL DEFAULT 'local' CHECK (backend IN ('local', 'slurm')),"
    "  ranks INTEGER NOT NULL DEFAULT 1 CHECK (ranks >= 1),"
    "  argv TEXT NOT NULL CHECK (json_valid(argv) AND json_type(argv) = 'array'),"
    "  out_dir TEXT NOT NULL,"
    "  log_path TEXT,"
    "  run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,"
    "  attempt INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),"
    "  max_attempts INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),"
    "  owner TEXT,"
    "  lease_until REAL,"
    "  pid INTEGER,"
    "  slurm_job TEXT,"
    "  cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),"
    "  message TEXT,"
    "  submitted_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),"
    "  started_at TEXT,"
    "  finished_at TEXT"
    ") STRICT;"
    "CREATE INDEX jobs_queue ON jobs (state, priority DESC, id);"
    "CREATE TABLE job_events ("
    "  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
    "  at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),"
    "  attempt INTEGER NOT NULL,"
    "  event TEXT NOT NULL,"
    "  detail TEXT"
    ") STRICT;"
    "CREATE INDEX job_events_job ON job_events (job_id, at);"
    "ALTER TABLE runs ADD COLUMN job_id INTEGER REFERENCES jobs(id) ON DELETE SET NULL;";

/* Backend options of a job (the Slurm backend's partition, time limit, extra sbatch options), as a JSON
 * object, so that resume and retry resubmit the job the way it was submitted. */
static const char *const schema_v5 =
    "ALTER TABLE jobs ADD COLUMN backend_opts TEXT"
    "  CHECK (backend_opts IS NULL OR (json_valid(backend_opts) AND json_type(backend_opts) = 'object'));";

/* Per-dataset training augmentation of its images and videos (docs/training.md, "Augmentation"):
 * '' takes the run's (upmoe-train --augment), else paper, light or none. */
static const char *const schema_v6 =
    "ALTER TABLE datasets ADD COLUMN augment TEXT NOT NULL DEFAULT ''"
    "  CHECK (augment IN ('', 'paper', 'light', 'none'));";

/* Evaluation results (upmoe-eval, docs/evaluation.md): one row per (evaluation, dataset, metric), with the
 * checkpoint's run (NULL when it is not in this catalog) and step, the samples scored, and chance. */
static const char *const schema_v7 =
    "CREATE TABLE eval_results ("
    "  id INTEGER PRIMARY KEY,"
    "  run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,"
    "  checkpoint TEXT NOT NULL CHECK (length(checkpoint) BETWEEN 1 AND 4096),"
    "  step INTEGER NOT NULL CHECK (step >= 0),"
    "  dataset TEXT NOT NULL CHECK (length(dataset) BETWEEN 1 AND 64),"
    "  task TEXT NOT NULL CHECK (length(task) BETWEEN 1 AND 64),"
    "  formulation TEXT NOT NULL"
    "    CHECK (formulation IN ('label', 'pair', 'vocab-mlm', 'vocab-caption')),"
    "  metric TEXT NOT NULL CHECK (length(metric) BETWEEN 1 AND 32),"
    "  value REAL NOT NULL,"
    "  chance REAL,"
    "  samples INTEGER NOT NULL CHECK (samples >= 0),"
    "  at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
    ") STRICT;"
    "CREATE INDEX eval_results_dataset ON eval_results (dataset, run_id, step);"
    "CREATE INDEX eval_results_run ON eval_results (run_id, step);";

/* Evaluation jobs (upmoe-jobs submit eval): jobs.kind may be 'eval'. SQLite cannot alter a CHECK; the
 * documented way for a change that leaves every stored row valid is to edit the table's definition in
 * sqlite_schema (https://sqlite.org/lang_altertable.html, "other kinds of table schema changes"); rebuilding
 * the table instead would fire the ON DELETE actions of job_events and runs. */
static const char *const schema_v8 =
    "PRAGMA writable_schema = ON;"
    "UPDATE sqlite_schema SET sql = replace(sql, 'CHECK (kind IN (''pretrain''))', "
    "  'CHECK (kind IN (''pretrain'', ''eval''))') WHERE type = 'table' AND name = 'jobs';"
    "PRAGMA writable_schema = RESET;";

/* Token routing's per-step statistics (docs/model.md, "Token routing"): the mean balance loss of the step's
 * gates and the share of (token, expert) assignments dropped past the experts' capacity; NULL for other
 * routings. */
static const char *const schema_v9 =
    "ALTER TABLE metrics ADD COLUMN balance_loss REAL;"
    "ALTER TABLE metrics ADD COLUMN dropped REAL;";

/* Task-interference matrices (upmoe-analyze interference, paper Eq. 1-2; docs/analysis.md): one row per
 * (checkpoint, mixture, block, task i, task j) with the batches and seed it was measured with. */
static const char *const schema_v10 =
    "CREATE TABLE interference ("
    "  id INTEGER PRIMARY KEY,"
    "  run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,"
    "  checkpoint TEXT NOT NULL CHECK (length(checkpoint) BETWEEN 1 AND 4096),"
    "  step INTEGER NOT NULL CHECK (step >= 0),"
    "  mixture TEXT NOT NULL CHECK (length(mixture) BETWEEN 1 AND 64),"
    "  block INTEGER NOT NULL CHECK (block >= 1),"
    "  task_i TEXT NOT NULL,"
    "  task_j TEXT NOT NULL,"
    "  value REAL NOT NULL,"
    "  batches INTEGER NOT NULL CHECK (batches >= 1),"
    "  seed TEXT NOT NULL,"
    "  at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
    ") STRICT;"
    "CREATE INDEX interference_run ON interference (run_id, step);";

/* Dataset verifications (upmoe-catalog verify --store; docs/pipeline.md): what each stored pass over a
 * dataset's shards found, structural errors (bad samples, bad shards) apart from samples whose content does
 * not decode (NULL when the pass did not decode, without --decode). */
static const char *const schema_v11 =
    "CREATE TABLE verifications ("
    "  id INTEGER PRIMARY KEY,"
    "  dataset TEXT NOT NULL CHECK (length(dataset) BETWEEN 1 AND 64),"
    "  url_pattern TEXT NOT NULL,"
    "  shards INTEGER NOT NULL CHECK (shards >= 0),"
    "  samples INTEGER NOT NULL CHECK (samples >= 0),"
    "  bytes INTEGER NOT NULL CHECK (bytes >= 0),"
    "  bad_samples INTEGER NOT NULL CHECK (bad_samples >= 0),"
    "  bad_shards INTEGER NOT NULL CHECK (bad_shards >= 0),"
    "  undecodable INTEGER CHECK (undecodable IS NULL OR undecodable >= 0),"
    "  at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
    ") STRICT;"
    "CREATE INDEX verifications_dataset ON verifications (dataset, id);";

/* migrations[i] brings user_version i to i + 1. Append here; never edit a released step. */
static const migration migrations[] = {
    {"tasks, datasets, label sets, mixtures", schema_v1},
    {"training runs and metrics", schema_v2},
    {"ranks of data-parallel metrics", schema_v3},
    {"job queue", schema_v4},
    {"job backend options", schema_v5},
    {"dataset augmentation", schema_v6},
    {"evaluation results", schema_v7},
    {"evaluation jobs", schema_v8},
    {"token routing statistics", schema_v9},
    {"task interference", schema_v10},
    {"dataset verifications", schema_v11},
};
_Static_assert(sizeof migrations / sizeof migrations[0] == UPM_CATALOG_SCHEMA_VERSION,
               "one migration per schema version");

static int exec(sqlite3 *db, const char *sql, const char *path, const char *doing, upm_err *err)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        upm_errf(err, UPM_EDB, "catalog %s: %s: %s", path, doing, msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return UPM_EDB;
    }
    return 0;
}

static int read_int_pragma(sqlite3 *db, const char *pragma, int *out)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, pragma, -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        *out = sqlite3_column_int(st, 0);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

int upm_catalog_migrate(sqlite3 *db, const char *path, int *from_version, upm_err *err)
{
    /* EXCLUSIVE, then re-read the version: processes starting together must not both migrate. */
    int rc = exec(db, "BEGIN EXCLUSIVE", path, "locking for migration", err);
    if (rc)
        return rc;
    int version = 0;
    if (read_int_pragma(db, "PRAGMA user_version", &version) != SQLITE_OK) {
        exec(db, "ROLLBACK", path, "rollback", NULL);
        return upm_errf(err, UPM_EDB, "catalog %s: reading the schema version: %s", path, sqlite3_errmsg(db));
    }
    *from_version = version;
    if (version > UPM_CATALOG_SCHEMA_VERSION) {
        exec(db, "ROLLBACK", path, "rollback", NULL);
        return upm_errf(err, UPM_EDB,
                        "catalog %s has schema version %d, newer than this program knows (%d): "
                        "upgrade upmoe",
                        path, version, UPM_CATALOG_SCHEMA_VERSION);
    }
    for (int v = version; v < UPM_CATALOG_SCHEMA_VERSION; v++) {
        char doing[128], set[64];
        snprintf(doing, sizeof doing, "migrating to schema version %d (%s)", v + 1, migrations[v].what);
        snprintf(set, sizeof set, "PRAGMA user_version = %d", v + 1);
        if ((rc = exec(db, migrations[v].sql, path, doing, err)) ||
            (rc = exec(db, set, path, doing, err))) {
            exec(db, "ROLLBACK", path, "rollback", NULL);
            return rc;
        }
    }
    char app[64];
    snprintf(app, sizeof app, "PRAGMA application_id = %d", UPM_CATALOG_APP_ID);
    if ((rc = exec(db, app, path, "marking the file as an upmoe catalog", err))) {
        exec(db, "ROLLBACK", path, "rollback", NULL);
        return rc;
    }
    return exec(db, "COMMIT", path, "committing the migration", err);
}
