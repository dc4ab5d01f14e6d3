/* upmoe-jobs: the commands of the Slurm backend (see jobs/slurm.h and docs/jobs.md). */
#include <cjson/cJSON.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "shellword.h"
#include "slurm.h"
#include "worker.h"

int slurm_cli_option(int c, const char *arg, slurm_cli *s)
{
    char *end;
    switch (c) {
    case SLURM_O_PART: s->partition = arg; break;
    case SLURM_O_TIME:
        if (!*arg || strspn(arg, "0123456789:-") != strlen(arg))
            return usage_error("--time needs a Slurm time limit (MM, HH:MM:SS, D-HH:MM, ...), not '%s'", arg);
        s->time_limit = arg;
        break;
    case SLURM_O_LEAD:
        if ((s->signal_lead = strtol(arg, &end, 10)) < 1 || *end || s->signal_lead > 65535)
            return usage_error("--signal-lead needs seconds in [1, 65535], not '%s'", arg);
        break;
    case SLURM_O_CPUS:
        if ((s->cpus_per_rank = strtol(arg, &end, 10)) < 1 || *end || s->cpus_per_rank > 4096)
            return usage_error("--cpus-per-rank needs an integer in [1, 4096], not '%s'", arg);
        break;
    case SLURM_O_GPUS:
        if ((s->gpus_per_rank = strtol(arg, &end, 10)) < 1 || *end || s->gpus_per_rank > 64)
            return usage_error("--gpus-per-rank needs an integer in [1, 64], not '%s'", arg);
        break;
    case SLURM_O_SBATCH:
        if (arg[0] != '-')
            return usage_error("--sbatch-arg takes one sbatch option (starting with -), not '%s'", arg);
        if (s->nextra == (int)(sizeof s->extra / sizeof s->extra[0]))
            return usage_error("at most 64 --sbatch-arg options%s", "");
        s->extra[s->nextra++] = arg;
        break;
    default: return -1;
    }
    s->given = 1;
    return 0;
}

int slurm_cli_backend(const slurm_cli *s, const char *backend)
{
    if (strcmp(backend, "local") && strcmp(backend, "slurm"))
        return -usage_error("--backend must be local or slurm, not '%s'", backend);
    int slurm = !strcmp(backend, "slurm");
    if (s->given && !slurm)
        return -usage_error("--partition, --time, --signal-lead, --cpus-per-rank, --gpus-per-rank and --sbatch-arg "
                            "need --backend slurm%s", "");
    return slurm;
}

char *slurm_opts_json(const slurm_cli *s)
{
    cJSON *o = cJSON_CreateObject();
    if (s->partition)
        cJSON_AddStringToObject(o, "partition", s->partition);
    if (s->time_limit)
        cJSON_AddStringToObject(o, "time", s->time_limit);
    cJSON_AddNumberToObject(o, "signal_lead", (double)s->signal_lead);
    if (s->cpus_per_rank > 0)
        cJSON_AddNumberToObject(o, "cpus_per_rank", (double)s->cpus_per_rank);
    if (s->gpus_per_rank > 0)
        cJSON_AddNumberToObject(o, "gpus_per_rank", (double)s->gpus_per_rank);
    cJSON *a = cJSON_AddArrayToObject(o, "sbatch_args");
    for (int i = 0; i < s->nextra; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(s->extra[i]));
    char *js = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return js;
}

/* The sbatch options of a job from its row; the strings live in *doc (free with cJSON_Delete) and
 * o->extra (free). */
typedef struct opts_buf {
    upm_slurm_opts o;
    cJSON *doc;
    const char **extra;
    char self[PATH_MAX];
} opts_buf;

static int job_opts(const upm_catalog *cat, const upm_job *j, opts_buf *b)
{
    memset(b, 0, sizeof *b);
    sibling("", b->self, sizeof b->self);
    b->o.jobs_prog = b->self, b->o.catalog = upm_catalog_path(cat);
    if (!(b->doc = cJSON_Parse(j->backend_opts ? j->backend_opts : "{}")))
        return -1;
    const cJSON *p = cJSON_GetObjectItem(b->doc, "partition"), *t = cJSON_GetObjectItem(b->doc, "time");
    const cJSON *l = cJSON_GetObjectItem(b->doc, "signal_lead"), *c = cJSON_GetObjectItem(b->doc, "cpus_per_rank");
    const cJSON *x = cJSON_GetObjectItem(b->doc, "sbatch_args"), *gp = cJSON_GetObjectItem(b->doc, "gpus_per_rank");
    b->o.partition = cJSON_IsString(p) ? p->valuestring : NULL;
    b->o.time_limit = cJSON_IsString(t) ? t->valuestring : NULL;
    b->o.signal_lead_s = cJSON_IsNumber(l) ? l->valueint : 120;
    b->o.cpus_per_rank = cJSON_IsNumber(c) ? c->valueint : 0;
    b->o.gpus_per_rank = cJSON_IsNumber(gp) ? gp->valueint : 0;
    int n = cJSON_GetArraySize(x);
    b->extra = calloc((size_t)n + 1, sizeof *b->extra);
    if (!b->extra)
        return -1;
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(x, i);
        if (cJSON_IsString(e))
            b->extra[b->o.nextra++] = e->valuestring;
    }
    b->o.extra = b->extra;
    return 0;
}

static void opts_free(opts_buf *b)
{
    cJSON_Delete(b->doc);
    free(b->extra);
}

int slurm_submit(upm_catalog *cat, int64_t id)
{
    upm_err err = {0};
    upm_job j;
    if (upm_job_get(cat, id, &j, &err))
        return fail(&err);
    opts_buf b;
    char sj[64];
    int rc = job_opts(cat, &j, &b) ? upm_errf(&err, UPM_ENOMEM, "no memory")
                                    : upm_slurm_submit(&b.o, &j, sj, sizeof sj, &err);
    opts_free(&b);
    upm_job_free(&j);
    upm_err e2 = {0};
    if (rc) { /* nothing queued: the job row goes too */
        upm_job_withdraw(cat, id, &e2);
        return fail(&err);
    }
    if (upm_job_set_slurm(cat, id, sj, 0, &err)) {
        upm_slurm_cancel(sj, NULL, &e2);
        upm_job_withdraw(cat, id, &e2);
        return fail(&err);
    }
    fprintf(stderr, PROG ": job %lld is Slurm job %s\n", (long long)id, sj);
    return 0;
}

void slurm_dry_run(const upm_catalog *cat, const slurm_cli *s, const char *name, int ranks, const char *out,
                   const char *train_cmd)
{
    upm_job j;
    memset(&j, 0, sizeof j);
    snprintf(j.name, sizeof j.name, "%s", name);
    j.ranks = ranks;
    snprintf(j.out_dir, sizeof j.out_dir, "%s", out);
    snprintf(j.log_path, sizeof j.log_path, "%s/train.log", out);
    char *js = slurm_opts_json(s);
    j.backend_opts = js;
    opts_buf b;
    if (!js || job_opts(cat, &j, &b)) {
        free(js);
        fprintf(stderr, PROG ": error: no memory\n");
        return;
    }
    char **argv = upm_slurm_sbatch_argv(&b.o, &j), line[16384], tmp[512];
    size_t len = 0;
    line[0] = 0;
    for (int i = 0; argv && argv[i]; i++) {
        const char *w = argv[i];
        if (!argv[i + 1])
            w = "ID";
        else if (!strncmp(w, "--job-name=upmoe-0-", 19))
            snprintf(tmp, sizeof tmp, "--job-name=upmoe-ID-%s", w + 19), w = tmp;
        upm_shell_append(line, sizeof line, &len, w);
    }
    printf("%s\nthe batch step then runs: %s%s\n", line, ranks > 1 ? (upm_slurm_has_pmix() ? "srun --mpi=pmix " : "mpirun ") : "",
           train_cmd);
    upm_slurm_argv_free(argv);
    opts_free(&b);
    free(js);
}

int slurm_cancel(upm_catalog *cat, const upm_job *j)
{
    upm_err err = {0}, e2 = {0};
    if (upm_job_cancel(cat, j->id, "cancelled by the user", &err))
        return fail(&err);
    if (!j->slurm_job[0])
        return 0;
    /* running: the batch step gets USR1 and stops the trainer after a checkpoint; it sees the request and
     * records the job as cancelled. Queued (pending in Slurm): Slurm drops it. */
    if (upm_slurm_cancel(j->slurm_job, !strcmp(j->state, "running") ? "USR1" : NULL, &e2))
        fprintf(stderr, PROG ": warning: %s (the catalog has the cancel; the batch step will see it)\n", e2.msg);
    return 0;
}

int slurm_resubmit(upm_catalog *cat, const upm_job *j, int retry)
{
    upm_err err = {0}, e2 = {0};
    if (strcmp(j->state, "cancelled") && strcmp(j->state, "failed")) {
        upm_errf(&err, UPM_EINVAL, "job %lld is %s: only a cancelled or failed job can be %s", (long long)j->id,
                 j->state, retry ? "retried" : "resumed");
        return fail(&err);
    }
    opts_buf b;
    char sj[64];
    int rc = job_opts(cat, j, &b) ? upm_errf(&err, UPM_ENOMEM, "no memory")
                                   : upm_slurm_submit(&b.o, j, sj, sizeof sj, &err);
    opts_free(&b);
    if (rc)
        return fail(&err);
    if (upm_job_set_slurm(cat, j->id, sj, retry ? 2 : 1, &err)) {
        upm_slurm_cancel(sj, NULL, &e2);
        return fail(&err);
    }
    fprintf(stderr, PROG ": job %lld is Slurm job %s\n", (long long)j->id, sj);
    return 0;
}

void slurm_follow(const char *path, upm_catalog *ro)
{
    upm_err err = {0};
    int any = 0;
    if (upm_job_slurm_active(ro, &any, &err))
        fprintf(stderr, PROG ": warning: cannot follow the Slurm jobs: %s\n", err.msg);
    if (!any)
        return;
    upm_catalog *cat = NULL;
    int changed = 0;
    if (upm_catalog_open(path, 0, &cat, &err) || upm_slurm_follow(cat, &changed, &err))
        fprintf(stderr, PROG ": warning: cannot follow the Slurm jobs: %s\n", err.msg);
    upm_catalog_close(cat);
}

void slurm_state_line(const upm_job *j, char *buf, size_t n)
{
    buf[0] = 0;
    if (strcmp(j->backend, "slurm") || !j->slurm_job[0])
        return;
    char state[64], reason[256];
    upm_err err = {0};
    if (upm_slurm_query(j->slurm_job, state, sizeof state, reason, sizeof reason, &err))
        snprintf(buf, n, "Slurm job %s: %s", j->slurm_job, err.msg);
    else if (!state[0])
        snprintf(buf, n, "Slurm job %s: no longer known to Slurm", j->slurm_job);
    else
        snprintf(buf, n, "Slurm job %s: %s (%s)", j->slurm_job, state, reason);
}

/* ---- slurm-run: the batch step ---- */

static volatile sig_atomic_t stop, notice;
static void on_signal(int sig)
{
    stop = 1;
    if (sig == SIGUSR1) /* --signal=B:USR1@LEAD: the time limit is near */
        notice = 1;
}

static void nap(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* Waits until job id is queued for this Slurm job (resume and submit record the Slurm id right after
 * sbatch returns; a previous batch of the same job may still be ending). 1 = run it, 0 = nothing to run,
 * < 0 = error (printed). */
static int wait_claimable(upm_catalog *cat, int64_t id, const char *mine)
{
    double until = upm_job_now() + 120;
    for (;;) {
        upm_job j;
        upm_err err = {0};
        if (upm_job_get(cat, id, &j, &err))
            return -fail(&err);
        int ours = !strcmp(j.slurm_job, mine), queued = !strcmp(j.state, "queued");
        int running = !strcmp(j.state, "running"), expired = running && j.lease_until < upm_job_now();
        char state[UPM_JOB_STATE_MAX], other[64];
        snprintf(state, sizeof state, "%s", j.state);
        snprintf(other, sizeof other, "%s", j.slurm_job);
        upm_job_free(&j);
        if (ours && queued)
            return 1;
        if (ours && !running) {
            printf(PROG ": job %lld is %s: nothing to run\n", (long long)id, state);
            return 0;
        }
        int reaped = 0;
        if (ours && expired && upm_job_reap(cat, "slurm", &reaped, &err))
            return -fail(&err);
        if (stop || upm_job_now() > until) {
            fprintf(stderr, PROG ": error: job %lld is %s for Slurm job %s, not queued for this one (%s)\n",
                    (long long)id, state, other[0] ? other : "(none yet)", mine);
            return -1;
        }
        nap(0.5);
    }
}

int cmd_slurm_run(const char *path, int argc, char **argv)
{
    int64_t id;
    if (argc != 2 || parse_id(argv[1], &id))
        return usage_error("usage: slurm-run ID (the batch step of a Slurm job)%s", "");
    const char *mine = getenv("SLURM_JOB_ID");
    if (!mine || !*mine) {
        fprintf(stderr, PROG ": error: slurm-run is the batch step of a job submitted with --backend slurm "
                        "(SLURM_JOB_ID is not set)\n");
        return 2;
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    upm_err err = {0};
    upm_catalog *cat = NULL;
    if (upm_catalog_open(path, 0, &cat, &err))
        return fail(&err);
    int go = wait_claimable(cat, id, mine);
    upm_catalog_close(cat);
    if (go <= 0)
        return go < 0 ? 1 : 0;
    char train[PATH_MAX], host[256] = "?", owner[400];
    sibling("upmoe-train", train, sizeof train);
    char eval_prog[PATH_MAX];
    sibling("upmoe-eval", eval_prog, sizeof eval_prog);
    gethostname(host, sizeof host - 1);
    snprintf(owner, sizeof owner, "slurm:%s@%s:%d", mine, host, (int)getpid());
    int requeued = 0;
    upm_worker_opts o;
    upm_worker_opts_default(&o);
    o.catalog = path, o.train = train, o.eval = eval_prog, o.stop = &stop, o.backend = "slurm", o.only = id, o.owner = owner;
    o.requeued = &requeued;
    o.srun = upm_slurm_has_pmix();
    o.stop_note = "Slurm stopped the job (time limit, preemption, requeue or scancel)";
    int rc = upm_worker_run(&o, &err);
    if (rc)
        return fail(&err);
    if (requeued && notice) { /* the time limit: run again from the checkpoint in a new allocation */
        if (upm_slurm_requeue(mine, &err))
            return fail(&err);
        printf(PROG ": job %lld checkpointed before the time limit; Slurm job %s requeued\n", (long long)id, mine);
    }
    return 0;
}
