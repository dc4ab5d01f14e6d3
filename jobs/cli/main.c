/* upmoe-jobs: queues pretraining jobs in the catalog, runs them with a local worker, and answers "how
 * is my run doing?" from the catalog (docs/jobs.md). It starts upmoe-train as a child process and meets
 * it only in the catalog; it does not link the trainer. */
#define _XOPEN_SOURCE 700 /* realpath */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "catalog.h"
#include "catalog_ops.h"
#include "cli.h"
#include "queue.h"
#include "shellword.h"
#include "sqlutil.h"
#include "worker.h"

static const char usage[] =
    "usage: " PROG " [--catalog PATH] COMMAND ...\n"
    "Queues pretraining jobs in the catalog and runs them (docs/jobs.md).\n"
    "\n"
    "  submit pretrain [--mixture M] [--model ti|s|b|l] [--moe attribute|none] [--steps N] [--batch-scale F]\n"
    "                  [--ranks N] [--priority P] [--name NAME] [--backend local|slurm] [--max-attempts N]\n"
    "                  [--out DIR] [--dry-run] [-- extra upmoe-train arguments]\n"
    "                         checks the mixture (every dataset needs a real URL) and options, prints the job id\n"
    "                         (--dry-run: the exact command the worker would run, nothing queued)\n"
    "         Slurm only: [--partition P] [--time LIMIT] [--signal-lead S] [--cpus-per-rank N] [--sbatch-arg A]...\n"
    "                         sbatch runs the job; S seconds (120) before the time limit it checkpoints and is\n"
    "                         requeued; --sbatch-arg passes one more option to sbatch as it is\n"
    "  worker [--slots N] [--once] [--lease S]   runs queued jobs (local backend) until stopped\n"
    "  list [--state S] [--json]                 jobs, newest last\n"
    "  status ID [--json]                        state, step / total, latest loss per task, samples/s, ETA,\n"
    "                                            last checkpoint, attempts, the exact command\n"
    "  cancel ID                                 a queued job at once; a running one checkpoints and stops\n"
    "  resume ID | retry ID                      a cancelled or failed job back to the queue (retry: with a\n"
    "                                            fresh attempt budget); it continues from its last checkpoint\n"
    "  metrics ID [--task T] [--since STEP] [--csv|--json]   the run's rows: step, task, loss, accuracy, lr\n"
    "  plot ID -o FILE.png|FILE.svg              per-task loss curves and the learning rate, by gnuplot\n"
    "  logs ID [-f]                              the job's log (-f: follow it until the job ends)\n"
    "  slurm-run ID                              the batch step of a Slurm job (sbatch runs it)\n"
    "\n"
    "  --catalog PATH   the catalog (default: $UPMOE_CATALOG, $UPMOE_HOME/catalog.db, ~/.upmoe/catalog.db)\n"
    "  -h, --help, --version\n";

static volatile sig_atomic_t stop;
static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

int fail(const upm_err *e)
{
    fprintf(stderr, PROG ": error: %s\n", e->msg);
    return e->code == UPM_EUSAGE ? 2 : 1;
}

int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, PROG ": error: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see " PROG " --help)\n");
    return 2;
}

int parse_id(const char *s, int64_t *id)
{
    char *end;
    errno = 0;
    long long v = s ? strtoll(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || v <= 0)
        return -1;
    *id = v;
    return 0;
}

/* A program next to this one (upmoe-train: or $UPMOE_TRAIN; "" = this program itself). */
void sibling(const char *name, char *buf, size_t n)
{
    const char *env = getenv("UPMOE_TRAIN");
    if (env && *env && !strcmp(name, "upmoe-train")) {
        snprintf(buf, n, "%s", env);
        return;
    }
    char exe[PATH_MAX - 64];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (k <= 0) {
        snprintf(buf, n, "%s", name);
        return;
    }
    exe[k] = 0;
    if (!*name) {
        snprintf(buf, n, "%s", exe);
        return;
    }
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = 0;
    snprintf(buf, n, "%s/%s", exe, name);
}

/* ---- submit ---- */

typedef struct check_ctx {
    upm_catalog *cat;
    int members;
    char missing[1024];
    upm_err *err;
} check_ctx;

static int check_member(const upm_mixture_member *m, void *vctx)
{
    check_ctx *c = vctx;
    upm_dataset d;
    int rc = upm_dataset_get(c->cat, m->dataset, &d, c->err);
    if (rc)
        return rc;
    c->members++;
    if (!d.url_pattern[0]) {
        size_t len = strlen(c->missing);
        snprintf(c->missing + len, sizeof c->missing - len, "%s%s", len ? ", " : "", m->dataset);
    }
    return 0;
}

static int cmd_submit(upm_catalog *cat, int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "pretrain"))
        return usage_error("submit needs a job kind: 'pretrain'%s", "");
    const char *mixture = "uniperceiver-moe-pretrain", *model = "ti", *moe = "attribute", *name = NULL;
    const char *backend = "local", *out = NULL, *steps = "1000", *scale = NULL;
    long long ranks = 1, priority = 0, attempts = 3;
    int dry = 0, slurm_only = 0;
    slurm_cli sl = {.signal_lead = 120};
    enum { O_MIX = 256, O_MODEL, O_MOE, O_STEPS, O_SCALE, O_RANKS, O_PRIO, O_NAME, O_BACKEND, O_ATT, O_OUT, O_DRY,
           O_PART, O_TIME, O_LEAD, O_CPUS, O_SBATCH };
    static const struct option opts[] = {
        {"mixture", 1, 0, O_MIX}, {"model", 1, 0, O_MODEL}, {"moe", 1, 0, O_MOE}, {"steps", 1, 0, O_STEPS},
        {"batch-scale", 1, 0, O_SCALE}, {"ranks", 1, 0, O_RANKS}, {"priority", 1, 0, O_PRIO}, {"name", 1, 0, O_NAME},
        {"backend", 1, 0, O_BACKEND}, {"max-attempts", 1, 0, O_ATT}, {"out", 1, 0, O_OUT}, {"dry-run", 0, 0, O_DRY},
        {"partition", 1, 0, O_PART}, {"time", 1, 0, O_TIME}, {"signal-lead", 1, 0, O_LEAD},
        {"cpus-per-rank", 1, 0, O_CPUS}, {"sbatch-arg", 1, 0, O_SBATCH}, {0, 0, 0, 0}};
    optind = 2;
    opterr = 0;
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        switch (c) {
        case O_MIX: mixture = optarg; break;
        case O_MODEL: model = optarg; break;
        case O_MOE: moe = optarg; break;
        case O_STEPS:
            if (strtoll(optarg, &end, 10) <= 0 || *end)
                return usage_error("--steps needs a positive integer, not '%s'", optarg);
            steps = optarg;
            break;
        case O_SCALE:
            if (!(strtod(optarg, &end) > 0) || *end)
                return usage_error("--batch-scale needs a factor > 0, not '%s'", optarg);
            scale = optarg;
            break;
        case O_RANKS:
            if ((ranks = strtoll(optarg, &end, 10)) < 1 || *end || ranks > 65536)
                return usage_error("--ranks needs an integer in [1, 65536], not '%s'", optarg);
            break;
        case O_PRIO:
            priority = strtoll(optarg, &end, 10);
            if (!*optarg || *end)
                return usage_error("--priority needs an integer, not '%s'", optarg);
            break;
        case O_ATT:
            if ((attempts = strtoll(optarg, &end, 10)) < 1 || *end || attempts > 1000)
                return usage_error("--max-attempts needs an integer in [1, 1000], not '%s'", optarg);
            break;
        case O_NAME: name = optarg; break;
        case O_BACKEND: backend = optarg; break;
        case O_OUT: out = optarg; break;
        case O_DRY: dry = 1; break;
        case O_PART: sl.partition = optarg, slurm_only = 1; break;
        case O_TIME:
            if (!*optarg || strspn(optarg, "0123456789:-") != strlen(optarg))
                return usage_error("--time needs a Slurm time limit (MM, HH:MM:SS, D-HH:MM, ...), not '%s'", optarg);
            sl.time_limit = optarg, slurm_only = 1;
            break;
        case O_LEAD:
            if ((sl.signal_lead = strtol(optarg, &end, 10)) < 1 || *end || sl.signal_lead > 65535)
                return usage_error("--signal-lead needs seconds in [1, 65535], not '%s'", optarg);
            slurm_only = 1;
            break;
        case O_CPUS:
            if ((sl.cpus_per_rank = strtol(optarg, &end, 10)) < 1 || *end || sl.cpus_per_rank > 4096)
                return usage_error("--cpus-per-rank needs an integer in [1, 4096], not '%s'", optarg);
            slurm_only = 1;
            break;
        case O_SBATCH:
            if (optarg[0] != '-')
                return usage_error("--sbatch-arg takes one sbatch option (starting with -), not '%s'", optarg);
            if (sl.nextra == (int)(sizeof sl.extra / sizeof sl.extra[0]))
                return usage_error("at most 64 --sbatch-arg options%s", "");
            sl.extra[sl.nextra++] = optarg, slurm_only = 1;
            break;
        default: return usage_error("unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (strcmp(model, "ti") && strcmp(model, "s") && strcmp(model, "b") && strcmp(model, "l"))
        return usage_error("--model must be ti, s, b or l, not '%s'", model);
    if (strcmp(moe, "attribute") && strcmp(moe, "none"))
        return usage_error("--moe must be attribute or none, not '%s'", moe);
    if (strcmp(backend, "local") && strcmp(backend, "slurm"))
        return usage_error("--backend must be local or slurm, not '%s'", backend);
    int slurm = !strcmp(backend, "slurm");
    if (slurm_only && !slurm)
        return usage_error("--partition, --time, --signal-lead, --cpus-per-rank and --sbatch-arg need --backend slurm%s",
                           "");
    char out_abs[PATH_MAX];
    if (out && out[0] != '/') { /* the worker or the batch step may run elsewhere */
        char cwd[PATH_MAX - 256];
        if (!getcwd(cwd, sizeof cwd) || snprintf(out_abs, sizeof out_abs, "%s/%s", cwd, out) >= (int)sizeof out_abs)
            return usage_error("--out: cannot make '%s' an absolute path", out);
        out = out_abs;
    }
    upm_err err = {0};
    check_ctx cc = {cat, 0, "", &err};
    if (upm_mixture_foreach_member(cat, mixture, check_member, &cc, &err))
        return fail(&err);
    if (!cc.members) {
        fprintf(stderr, PROG ": error: mixture %s has no datasets\n", mixture);
        return 1;
    }
    if (cc.missing[0]) {
        fprintf(stderr, PROG ": error: mixture %s has datasets without shard URLs: %s (set them with "
                "'upmoe-catalog set DATASET url=PATTERN')\n", mixture, cc.missing);
        return 1;
    }
    char auto_name[64];
    if (!name) {
        snprintf(auto_name, sizeof auto_name, "pretrain-%s", model);
        name = auto_name;
    }
    cJSON *a = cJSON_CreateArray();
    const char *fixed[] = {"--mixture", mixture, "--model", model, "--moe", moe, "--steps", steps, "--name", name};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(fixed[i]));
    if (scale) {
        cJSON_AddItemToArray(a, cJSON_CreateString("--batch-scale"));
        cJSON_AddItemToArray(a, cJSON_CreateString(scale));
    }
    int has_bpe = 0;
    for (int i = optind; i < argc; i++) {
        if (!strcmp(argv[i], "--out") || !strcmp(argv[i], "--resume") || !strcmp(argv[i], "--catalog") ||
            !strcmp(argv[i], "--job") || !strcmp(argv[i], "--attempt")) {
            cJSON_Delete(a);
            return usage_error("%s is set by the worker; give the job's folder with submit --out", argv[i]);
        }
        cJSON_AddItemToArray(a, cJSON_CreateString(argv[i]));
        has_bpe |= !strcmp(argv[i], "--bpe-vocab");
    }
    /* The job must not depend on the environment of whichever worker or batch step runs it: the
     * submitter's UPMOE_BPE_VOCAB becomes an argument. */
    const char *bpe = getenv("UPMOE_BPE_VOCAB");
    if (!has_bpe && bpe && *bpe) {
        char abs[PATH_MAX];
        cJSON_AddItemToArray(a, cJSON_CreateString("--bpe-vocab"));
        cJSON_AddItemToArray(a, cJSON_CreateString(realpath(bpe, abs) ? abs : bpe));
    }
    char *aj = cJSON_PrintUnformatted(a);
    cJSON_Delete(a);
    if (!aj) {
        fprintf(stderr, PROG ": error: no memory\n");
        return 1;
    }
    char train[PATH_MAX];
    sibling("upmoe-train", train, sizeof train);
    if (dry) {
        char cmd[16384] = "", dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s", out ? out : "<catalog folder>/runs/job-ID");
        size_t n = 0;
        const char *head[] = {train, "--catalog", cat->path, "--job", "ID", "--attempt", "N", "--out", dir};
        for (size_t i = 0; i < sizeof head / sizeof head[0]; i++)
            upm_shell_append(cmd, sizeof cmd, &n, head[i]);
        cJSON *p = cJSON_Parse(aj);
        for (int i = 0; i < cJSON_GetArraySize(p); i++)
            upm_shell_append(cmd, sizeof cmd, &n, cJSON_GetArrayItem(p, i)->valuestring);
        cJSON_Delete(p);
        free(aj);
        if (slurm)
            slurm_dry_run(cat, &sl, name, (int)ranks, dir, cmd);
        else if (ranks > 1)
            printf("mpirun -np %lld --bind-to none %s\n", ranks, cmd);
        else
            printf("%s\n", cmd);
        return 0;
    }
    char *bopts = slurm ? slurm_opts_json(&sl) : NULL;
    upm_job_submit s = {name, "pretrain", backend, priority, (int)ranks, attempts, aj, out, bopts};
    int64_t id = 0;
    int rc = upm_job_submit_new(cat, &s, &id, &err);
    free(aj);
    free(bopts);
    if (rc)
        return fail(&err);
    if (slurm && (rc = slurm_submit(cat, id)))
        return rc;
    printf("%lld\n", (long long)id);
    return 0;
}

/* ---- list, status ---- */

static int print_row(const upm_job *j, void *ctx)
{
    int json = *(int *)ctx;
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "id", (double)j->id);
        cJSON_AddStringToObject(o, "name", j->name);
        cJSON_AddStringToObject(o, "state", j->state);
        cJSON_AddNumberToObject(o, "priority", (double)j->priority);
        cJSON_AddNumberToObject(o, "attempt", (double)j->attempt);
        cJSON_AddStringToObject(o, "backend", j->backend);
        cJSON_AddNumberToObject(o, "ranks", j->ranks);
        cJSON_AddStringToObject(o, "submitted_at", j->submitted_at);
        char *s = cJSON_PrintUnformatted(o);
        printf("%s\n", s ? s : "{}");
        free(s);
        cJSON_Delete(o);
    } else
        printf("%-6lld %-24s %-10s %8lld %7lld %-7s %5d  %s\n", (long long)j->id, j->name, j->state,
               (long long)j->priority, (long long)j->attempt, j->backend, j->ranks, j->submitted_at);
    return 0;
}

static int cmd_list(upm_catalog *cat, int argc, char **argv)
{
    const char *state = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--state") && i + 1 < argc)
            state = argv[++i];
        else
            return usage_error("list: unknown or incomplete option '%s'", argv[i]);
    }
    if (state && strcmp(state, "queued") && strcmp(state, "running") && strcmp(state, "succeeded") &&
        strcmp(state, "failed") && strcmp(state, "cancelled"))
        return usage_error("--state must be queued, running, succeeded, failed or cancelled, not '%s'", state);
    if (!json)
        printf("%-6s %-24s %-10s %8s %7s %-7s %5s  %s\n", "ID", "NAME", "STATE", "PRIORITY", "ATTEMPT", "BACKEND",
               "RANKS", "SUBMITTED");
    upm_err err = {0};
    return upm_job_foreach(cat, state, print_row, &json, &err) ? fail(&err) : 0;
}

/* The run's progress: step/total, state, checkpoint, latest loss per task, samples/s and ETA from the
 * last 20 steps' rows. */
static cJSON *progress(upm_catalog *cat, int64_t run_id)
{
    cJSON *o = cJSON_CreateObject();
    sqlite3_stmt *st = NULL;
    upm_err e = {0};
    if (!run_id || upm_sql_prepare(cat, "SELECT state, step, total_steps, last_checkpoint, message FROM runs WHERE id = ?1",
                                   &st, &e))
        return o;
    sqlite3_bind_int64(st, 1, run_id);
    int64_t step = 0, total = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        char buf[4096];
        upm_sql_text(st, 0, buf, sizeof buf);
        cJSON_AddStringToObject(o, "run_state", buf);
        step = sqlite3_column_int64(st, 1), total = sqlite3_column_int64(st, 2);
        cJSON_AddNumberToObject(o, "step", (double)step);
        cJSON_AddNumberToObject(o, "total_steps", (double)total);
        upm_sql_text(st, 3, buf, sizeof buf);
        cJSON_AddStringToObject(o, "last_checkpoint", buf);
    }
    sqlite3_finalize(st);
    cJSON *losses = cJSON_AddObjectToObject(o, "loss");
    if (!upm_sql_prepare(cat,
                         "SELECT m.task, m.loss FROM metrics m JOIN (SELECT task, max(step) AS s FROM metrics "
                         "WHERE run_id = ?1 GROUP BY task) l ON l.task = m.task AND l.s = m.step WHERE m.run_id = ?1 "
                         "ORDER BY m.task",
                         &st, &e)) {
        sqlite3_bind_int64(st, 1, run_id);
        while (sqlite3_step(st) == SQLITE_ROW)
            cJSON_AddNumberToObject(losses, (const char *)sqlite3_column_text(st, 0), sqlite3_column_double(st, 1));
        sqlite3_finalize(st);
    }
    /* samples/s over the recent window (a resume's first slow steps age out) */
    if (!upm_sql_prepare(cat,
                         "SELECT sum(samples), sum(samples / samples_per_s) FROM (SELECT step, sum(samples) AS samples, "
                         "max(samples_per_s) AS samples_per_s FROM metrics WHERE run_id = ?1 AND samples_per_s > 0 "
                         "GROUP BY step ORDER BY step DESC LIMIT 20)",
                         &st, &e)) {
        sqlite3_bind_int64(st, 1, run_id);
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_double(st, 1) > 0) {
            double sps = sqlite3_column_double(st, 0) / sqlite3_column_double(st, 1);
            cJSON_AddNumberToObject(o, "samples_per_s", sps);
            /* steps per second from the same window: seconds per step = samples per step / samples per s */
        }
        sqlite3_finalize(st);
    }
    if (!upm_sql_prepare(cat,
                         "SELECT avg(samples / samples_per_s) FROM (SELECT step, sum(samples) AS samples, "
                         "max(samples_per_s) AS samples_per_s FROM metrics WHERE run_id = ?1 AND samples_per_s > 0 "
                         "GROUP BY step ORDER BY step DESC LIMIT 20)",
                         &st, &e)) {
        sqlite3_bind_int64(st, 1, run_id);
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_double(st, 0) > 0 && total > step)
            cJSON_AddNumberToObject(o, "eta_s", sqlite3_column_double(st, 0) * (double)(total - step));
        sqlite3_finalize(st);
    }
    return o;
}

static int cmd_status(upm_catalog *cat, int argc, char **argv)
{
    int64_t id;
    int json = argc > 2 && !strcmp(argv[2], "--json");
    if (argc < 2 || parse_id(argv[1], &id) || argc > 3 || (argc == 3 && !json))
        return usage_error("usage: status ID [--json]%s", "");
    upm_err err = {0};
    upm_job j;
    if (upm_job_get(cat, id, &j, &err))
        return fail(&err);
    cJSON *o = progress(cat, j.run_id);
    cJSON_AddNumberToObject(o, "id", (double)j.id);
    cJSON_AddStringToObject(o, "name", j.name);
    cJSON_AddStringToObject(o, "state", j.state);
    cJSON_AddNumberToObject(o, "attempt", (double)j.attempt);
    cJSON_AddNumberToObject(o, "max_attempts", (double)j.max_attempts);
    cJSON_AddNumberToObject(o, "run_id", (double)j.run_id);
    cJSON_AddStringToObject(o, "out_dir", j.out_dir);
    cJSON_AddStringToObject(o, "log", j.log_path);
    cJSON_AddStringToObject(o, "message", j.message);
    cJSON_AddStringToObject(o, "backend", j.backend);
    char slurm[512];
    slurm_state_line(&j, slurm, sizeof slurm);
    if (j.slurm_job[0]) {
        cJSON_AddStringToObject(o, "slurm_job", j.slurm_job);
        cJSON_AddStringToObject(o, "slurm", slurm);
    }
    char train[PATH_MAX];
    sibling("upmoe-train", train, sizeof train);
    char cmd[16384], ids[2][32];
    size_t n = 0;
    snprintf(ids[0], sizeof ids[0], "%lld", (long long)j.id);
    snprintf(ids[1], sizeof ids[1], "%lld", (long long)(j.attempt > 0 ? j.attempt : 1));
    const char *head[] = {train, "--catalog", cat->path, "--job", ids[0], "--attempt", ids[1], "--out", j.out_dir};
    cmd[0] = 0;
    for (size_t i = 0; i < sizeof head / sizeof head[0]; i++)
        upm_shell_append(cmd, sizeof cmd, &n, head[i]);
    cJSON *a = cJSON_Parse(j.argv_json);
    for (int i = 0; i < cJSON_GetArraySize(a); i++)
        upm_shell_append(cmd, sizeof cmd, &n, cJSON_GetArrayItem(a, i)->valuestring);
    cJSON_Delete(a);
    cJSON_AddStringToObject(o, "command", cmd);
    if (json) {
        char *s = cJSON_PrintUnformatted(o);
        printf("%s\n", s ? s : "{}");
        free(s);
    } else {
        const cJSON *step = cJSON_GetObjectItem(o, "step"), *total = cJSON_GetObjectItem(o, "total_steps");
        printf("job %lld (%s): %s, attempt %lld of %lld\n", (long long)j.id, j.name, j.state, (long long)j.attempt,
               (long long)j.max_attempts);
        if (cJSON_IsNumber(step))
            printf("  step %.0f / %.0f\n", step->valuedouble, total->valuedouble);
        const cJSON *l;
        cJSON_ArrayForEach(l, cJSON_GetObjectItem(o, "loss"))
            printf("  loss %-24s %.4f\n", l->string, l->valuedouble);
        const cJSON *sps = cJSON_GetObjectItem(o, "samples_per_s"), *eta = cJSON_GetObjectItem(o, "eta_s");
        if (cJSON_IsNumber(sps))
            printf("  %.1f samples/s\n", sps->valuedouble);
        if (cJSON_IsNumber(eta))
            printf("  ETA %dm%02ds\n", (int)(eta->valuedouble / 60), (int)eta->valuedouble % 60);
        const cJSON *ck = cJSON_GetObjectItem(o, "last_checkpoint");
        if (cJSON_IsString(ck) && ck->valuestring[0])
            printf("  last checkpoint %s\n", ck->valuestring);
        if (j.message[0])
            printf("  %s\n", j.message);
        if (slurm[0])
            printf("  %s\n", slurm);
        printf("  log %s\n  command %s\n", j.log_path, cmd);
    }
    cJSON_Delete(o);
    upm_job_free(&j);
    return 0;
}

/* ---- cancel, resume, retry, logs, worker ---- */

static int cmd_cancel_requeue(upm_catalog *cat, int argc, char **argv, int what)
{
    int64_t id;
    if (argc != 2 || parse_id(argv[1], &id))
        return usage_error("usage: %s ID", argv[0]);
    upm_err err = {0};
    upm_job j;
    if (upm_job_get(cat, id, &j, &err))
        return fail(&err);
    int rc = 0;
    if (!strcmp(j.backend, "slurm")) {
        rc = what == 0 ? slurm_cancel(cat, &j) : slurm_resubmit(cat, &j, what == 2);
        upm_job_free(&j);
        if (rc)
            return rc;
    } else {
        upm_job_free(&j);
        rc = what == 0 ? upm_job_cancel(cat, id, "cancelled by the user", &err)
                       : upm_job_requeue(cat, id, what == 2, &err);
        if (rc)
            return fail(&err);
    }
    printf("job %lld: %s\n", (long long)id, what == 0 ? "cancel requested" : "queued");
    return 0;
}

static int cmd_logs(upm_catalog *cat, int argc, char **argv)
{
    int64_t id;
    int follow = argc == 3 && !strcmp(argv[2], "-f");
    if ((argc != 2 && !follow) || parse_id(argv[1], &id))
        return usage_error("usage: logs ID [-f]%s", "");
    upm_err err = {0};
    upm_job j;
    if (upm_job_get(cat, id, &j, &err))
        return fail(&err);
    FILE *f = fopen(j.log_path, "rb");
    while (!f && follow) { /* -f on a job that has not started yet: wait for its log */
        upm_job now;
        if (upm_job_get(cat, id, &now, &err))
            break;
        int active = !strcmp(now.state, "queued") || !strcmp(now.state, "running");
        upm_job_free(&now);
        if (!active || stop)
            break;
        struct timespec ts = {0, 200000000};
        nanosleep(&ts, NULL);
        f = fopen(j.log_path, "rb");
    }
    if (!f) {
        fprintf(stderr, PROG ": error: job %lld has no log yet (%s)\n", (long long)id, j.log_path);
        upm_job_free(&j);
        return 1;
    }
    char buf[65536];
    size_t n;
    for (;;) {
        while ((n = fread(buf, 1, sizeof buf, f)) > 0)
            fwrite(buf, 1, n, stdout);
        fflush(stdout);
        if (!follow)
            break;
        upm_job now;
        if (upm_job_get(cat, id, &now, &err))
            break;
        int active = !strcmp(now.state, "queued") || !strcmp(now.state, "running");
        upm_job_free(&now);
        if (!active) { /* one last read: what it wrote before it ended */
            while ((n = fread(buf, 1, sizeof buf, f)) > 0)
                fwrite(buf, 1, n, stdout);
            break;
        }
        clearerr(f);
        struct timespec ts = {0, 200000000};
        nanosleep(&ts, NULL);
    }
    fclose(f);
    upm_job_free(&j);
    return 0;
}

static int cmd_worker(const char *path, int argc, char **argv)
{
    upm_worker_opts o;
    upm_worker_opts_default(&o);
    for (int i = 1; i < argc; i++) {
        char *end;
        if (!strcmp(argv[i], "--once"))
            o.once = 1;
        else if (!strcmp(argv[i], "--slots") && i + 1 < argc) {
            long v = strtol(argv[++i], &end, 10);
            if (v < 1 || v > 1024 || *end)
                return usage_error("--slots needs an integer in [1, 1024], not '%s'", argv[i]);
            o.slots = (int)v;
        } else if (!strcmp(argv[i], "--lease") && i + 1 < argc) {
            double v = strtod(argv[++i], &end);
            if (!(v >= 1 && v <= 86400) || *end)
                return usage_error("--lease needs seconds in [1, 86400], not '%s'", argv[i]);
            o.lease_s = v;
        } else
            return usage_error("worker: unknown or incomplete option '%s'", argv[i]);
    }
    char train[PATH_MAX];
    sibling("upmoe-train", train, sizeof train);
    if (access(train, X_OK)) {
        fprintf(stderr, PROG ": error: cannot run the trainer %s (set UPMOE_TRAIN)\n", train);
        return 1;
    }
    o.catalog = path, o.train = train, o.stop = &stop;
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    upm_err err = {0};
    return upm_worker_run(&o, &err) ? fail(&err) : 0;
}

int main(int argc, char **argv)
{
    const char *cat_arg = NULL;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(usage, stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--version")) {
            printf(PROG " %s\n", UPMOE_VERSION);
            return 0;
        }
        if (!strcmp(argv[i], "--catalog") && i + 1 < argc)
            cat_arg = argv[++i];
        else
            return usage_error("unknown or incomplete option '%s'", argv[i]);
    }
    if (i >= argc)
        return usage_error("a command is needed%s", "");
    const char *cmd = argv[i];
    argc -= i, argv += i;
    char path[4096];
    upm_err err = {0};
    if (upm_catalog_resolve_path(cat_arg, path, sizeof path, &err))
        return fail(&err);
    if (path[0] != '/') { /* children and batch steps may run in another folder */
        char cwd[2048], rel[4096];
        snprintf(rel, sizeof rel, "%s", path);
        if (!getcwd(cwd, sizeof cwd) || snprintf(path, sizeof path, "%s/%s", cwd, rel) >= (int)sizeof path)
            return usage_error("cannot make the catalog path '%s' absolute", rel);
    }
    if (!strcmp(cmd, "worker"))
        return cmd_worker(path, argc, argv);
    if (!strcmp(cmd, "slurm-run"))
        return cmd_slurm_run(path, argc, argv);
    static const char *const known[] = {"submit", "list", "status", "cancel", "resume", "retry", "logs", "metrics",
                                        "plot"};
    int ok = 0;
    for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
        ok |= !strcmp(cmd, known[k]);
    if (!ok)
        return usage_error("unknown command '%s'", cmd);
    int readonly = !strcmp(cmd, "list") || !strcmp(cmd, "status") || !strcmp(cmd, "logs") || !strcmp(cmd, "metrics") ||
                   !strcmp(cmd, "plot");
    upm_catalog *cat = NULL;
    if (upm_catalog_open(path, readonly ? UPM_CAT_READONLY : 0, &cat, &err))
        return fail(&err);
    if (!strcmp(cmd, "list") || !strcmp(cmd, "status"))
        slurm_follow(path, cat);
    int rc;
    if (!strcmp(cmd, "submit"))
        rc = cmd_submit(cat, argc, argv);
    else if (!strcmp(cmd, "list"))
        rc = cmd_list(cat, argc, argv);
    else if (!strcmp(cmd, "status"))
        rc = cmd_status(cat, argc, argv);
    else if (!strcmp(cmd, "cancel"))
        rc = cmd_cancel_requeue(cat, argc, argv, 0);
    else if (!strcmp(cmd, "resume"))
        rc = cmd_cancel_requeue(cat, argc, argv, 1);
    else if (!strcmp(cmd, "retry"))
        rc = cmd_cancel_requeue(cat, argc, argv, 2);
    else if (!strcmp(cmd, "metrics"))
        rc = cmd_metrics(cat, argc, argv);
    else if (!strcmp(cmd, "plot"))
        rc = cmd_plot(cat, argc, argv);
    else
        rc = cmd_logs(cat, argc, argv);
    upm_catalog_close(cat);
    return rc;
}
