/* The local worker (see worker.h). */
#define _GNU_SOURCE /* prctl's PR_SET_PDEATHSIG, dirent's d_type */
#include "worker.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "catalog.h"
#include "fileio.h"
#include "queue.h"
#include "runs.h"
#include "shellword.h"

typedef struct child {
    int64_t job, attempt;
    pid_t pid;
    double next_beat;
    int cancel_sent, stop_sent;
    char log[4096];
} child;

void upm_worker_opts_default(upm_worker_opts *o)
{
    memset(o, 0, sizeof *o);
    o->slots = 1;
    o->lease_s = 30;
    o->poll_s = 0.2;
    o->backend = "local";
}

static void nap(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static void say(const upm_worker_opts *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const upm_worker_opts *o, const char *fmt, ...)
{
    if (o->quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    printf("upmoe-jobs worker: ");
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
}

/* Whether out_dir holds a checkpoint to resume from (checkpoints/step-*). */
static int has_checkpoint(const char *out_dir)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/checkpoints", out_dir);
    DIR *d = opendir(p);
    if (!d)
        return 0;
    int found = 0;
    struct dirent *e;
    while (!found && (e = readdir(d)))
        found = !strncmp(e->d_name, "step-", 5) && !strchr(e->d_name, '.');
    closedir(d);
    return found;
}

/* The child's command line: [mpirun -np N --bind-to none | srun --ntasks=N --mpi=pmix] upmoe-train --catalog C --job ID --attempt A
 * (--resume OUT | --out OUT) <the job's arguments>. NULL-terminated; caller frees the array (the strings
 * point into the job, the options or numbers kept in `nums`). */
static char **command(const upm_worker_opts *o, const upm_job *j, char nums[4][32], int *first_owned, upm_err *err)
{
    cJSON *a = cJSON_Parse(j->argv_json);
    int n = cJSON_GetArraySize(a), k = 0;
    char **argv = calloc((size_t)n + 16, sizeof *argv);
    if (!a || !argv) {
        cJSON_Delete(a);
        free(argv);
        upm_errf(err, UPM_EBADDATA, "job %lld: its argument list is not usable", (long long)j->id);
        return NULL;
    }
    snprintf(nums[0], 32, "%lld", (long long)j->id);
    snprintf(nums[1], 32, "%lld", (long long)j->attempt);
    snprintf(nums[2], 32, "%d", j->ranks);
    snprintf(nums[3], 32, "--ntasks=%d", j->ranks);
    if (j->ranks > 1 && o->srun) { /* a failed rank ends the step at once; the others need not time out */
        argv[k++] = "srun", argv[k++] = nums[3], argv[k++] = "--mpi=pmix", argv[k++] = "--kill-on-bad-exit=1";
    } else if (j->ranks > 1) {
        argv[k++] = "mpirun", argv[k++] = "-np", argv[k++] = nums[2], argv[k++] = "--bind-to", argv[k++] = "none";
    }
    int eval = !strcmp(j->kind, "eval");
    if (eval) /* an evaluation job: one process, upmoe-eval, its results fenced to this attempt */
        k = 0;
    argv[k++] = (char *)(eval ? o->eval : o->train);
    argv[k++] = "--catalog", argv[k++] = (char *)o->catalog;
    argv[k++] = "--job", argv[k++] = nums[0], argv[k++] = "--attempt", argv[k++] = nums[1];
    if (!eval) {
        argv[k++] = has_checkpoint(j->out_dir) ? "--resume" : "--out";
        argv[k++] = (char *)j->out_dir;
    }
    *first_owned = k;
    /* the strings stay valid while `a` lives: copy them */
    for (int i = 0; i < n; i++) {
        const cJSON *x = cJSON_GetArrayItem(a, i);
        argv[k++] = cJSON_IsString(x) ? strdup(x->valuestring) : strdup("");
    }
    argv[k] = NULL;
    cJSON_Delete(a);
    return argv;
}

static void free_command(char **argv, int first_owned)
{
    if (!argv)
        return;
    for (int i = first_owned; argv[i]; i++)
        free(argv[i]);
    free(argv);
}

/* Starts the job's trainer; its output goes to the job's log (appended). */
static int spawn(const upm_worker_opts *o, const upm_job *j, pid_t *pid, upm_err *err)
{
    char nums[4][32];
    int owned = 0; /* the job's own arguments (copies) start here */
    char **argv = command(o, j, nums, &owned, err);
    if (!argv)
        return err->code;
    int rc = 0, fd = -1;
    if ((rc = upm_mkdirs(j->out_dir, err)))
        ;
    else if ((fd = open(j->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)) < 0)
        rc = upm_errf(err, UPM_EIO, "cannot open the job log %s: %s", j->log_path, strerror(errno));
    if (!rc) {
        char line[16384];
        size_t len = 0;
        line[0] = 0;
        for (int i = 0; argv[i]; i++)
            upm_shell_append(line, sizeof line, &len, argv[i]);
        dprintf(fd, "== upmoe-jobs: job %lld attempt %lld: %s\n", (long long)j->id, (long long)j->attempt, line);
        pid_t parent = getpid();
        fflush(NULL);
        pid_t p = fork();
        if (p < 0)
            rc = upm_errf(err, UPM_EIO, "fork: %s", strerror(errno));
        else if (p == 0) {
            setpgid(0, 0);                     /* its own group: signals reach mpirun and every rank */
            prctl(PR_SET_PDEATHSIG, SIGUSR1);  /* the worker died: checkpoint and stop */
            if (getppid() != parent)
                _exit(111);
            dup2(fd, 1);
            dup2(fd, 2);
            if (geteuid() == 0) { /* Open MPI refuses root unless told twice */
                setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
                setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
            }
            execvp(argv[0], argv);
            dprintf(2, "upmoe-jobs: cannot start %s: %s\n", argv[0], strerror(errno));
            _exit(127);
        } else {
            setpgid(p, p); /* also from here, so the group exists before any signal */
            *pid = p;
        }
    }
    if (fd >= 0)
        close(fd);
    free_command(argv, owned);
    return rc;
}

/* The run's state as the trainer left it ("" when it never created one). */
static void run_state(upm_catalog *cat, int64_t job, char *state, size_t n)
{
    state[0] = 0;
    upm_job j;
    upm_run_progress p;
    if (upm_job_get(cat, job, &j, NULL))
        return;
    if (j.run_id && !upm_run_progress_get(cat, j.run_id, &p, NULL) && p.found)
        snprintf(state, n, "%s", p.state);
    upm_job_free(&j);
}

/* The child exited with `status`: the attempt's end state. */
static int reap_child(const upm_worker_opts *o, upm_catalog *cat, child *c, int status, upm_err *err)
{
    upm_job j;
    int rc = upm_job_get(cat, c->job, &j, err), lost = 0;
    if (rc)
        return rc;
    char rs[32], msg[8800];
    run_state(cat, c->job, rs, sizeof rs);
    const char *end;
    int eval = !strcmp(j.kind, "eval"); /* no run: its exit status says it all */
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && (eval || !strcmp(rs, "finished")))
        end = "succeeded", snprintf(msg, sizeof msg, eval ? "evaluated (upmoe-catalog results)" : "finished");
    else if (j.cancel_requested)
        end = "cancelled", snprintf(msg, sizeof msg, "cancelled%s%s", j.message[0] ? ": " : "", j.message);
    else if (c->stop_sent && WIFEXITED(status) && WEXITSTATUS(status) == 0)
        end = "requeue", snprintf(msg, sizeof msg, "%s; the trainer checkpointed",
                                  o->stop_note ? o->stop_note : "the worker stopped");
    else if (WIFEXITED(status) && WEXITSTATUS(status) == 2)
        end = "failed", snprintf(msg, sizeof msg, "the trainer refused its arguments (see %s)", c->log);
    else if (WIFEXITED(status) && WEXITSTATUS(status) == 3)
        end = NULL, msg[0] = 0; /* the trainer saw that this attempt lost the job: nothing to record */
    else if (WIFSIGNALED(status))
        end = "retry", snprintf(msg, sizeof msg, "attempt %lld: the trainer was killed by signal %d (see %s)",
                                (long long)c->attempt, WTERMSIG(status), c->log);
    else
        end = "retry", snprintf(msg, sizeof msg, "attempt %lld: the trainer exited with status %d%s%s (see %s)",
                                (long long)c->attempt, WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                                rs[0] ? ", run " : "", rs, c->log);
    upm_job_free(&j);
    if (!end)
        return 0;
    rc = upm_job_finish(cat, c->job, c->attempt, end, msg, &lost, err);
    if (!rc && !lost && !strcmp(end, "requeue") && o->requeued)
        (*o->requeued)++;
    if (!rc)
        say(o, "job %lld attempt %lld: %s%s", (long long)c->job, (long long)c->attempt,
            lost ? "ended after its lease was lost: " : "", msg);
    return rc;
}

int upm_worker_run(const upm_worker_opts *o, upm_err *err)
{
    upm_catalog *cat = NULL;
    int rc = upm_catalog_open(o->catalog, 0, &cat, err);
    if (rc)
        return rc;
    char host[256] = "?", owner[300];
    gethostname(host, sizeof host - 1);
    snprintf(owner, sizeof owner, "%s:%d", host, (int)getpid());
    if (o->owner)
        snprintf(owner, sizeof owner, "%s", o->owner);
    int once = o->once || o->only > 0;
    child *kids = calloc((size_t)(o->slots > 0 ? o->slots : 1), sizeof *kids);
    int nkids = 0, claimed = 0, slots = o->slots > 0 ? o->slots : 1;
    if (!kids)
        rc = upm_errf(err, UPM_ENOMEM, "no memory");
    say(o, "%s, %d slot%s, catalog %s", owner, slots, slots == 1 ? "" : "s", o->catalog);
    while (!rc) {
        int stopping = o->stop && *o->stop;
        int reaped = 0;
        if (!stopping && (rc = upm_job_reap(cat, o->backend, &reaped, err)))
            break;
        if (reaped)
            say(o, "requeued %d job%s whose lease expired", reaped, reaped == 1 ? "" : "s");
        /* new work */
        while (!rc && !stopping && nkids < slots && !(once && claimed)) {
            upm_job j;
            int got = 0;
            if ((rc = upm_job_claim(cat, o->backend, o->only, owner, o->lease_s, &j, &got, err)) || !got)
                break;
            child *c = &kids[nkids];
            memset(c, 0, sizeof *c);
            c->job = j.id, c->attempt = j.attempt;
            snprintf(c->log, sizeof c->log, "%s", j.log_path);
            upm_err e2 = {0};
            int lost = 0;
            if (spawn(o, &j, &c->pid, &e2)) {
                say(o, "job %lld: %s", (long long)j.id, e2.msg);
                rc = upm_job_finish(cat, j.id, j.attempt, "failed", e2.msg, &lost, err);
            } else {
                say(o, "job %lld (%s) attempt %lld: started, pid %d, log %s", (long long)j.id, j.name,
                    (long long)j.attempt, (int)c->pid, j.log_path);
                c->next_beat = 0;
                nkids++;
            }
            claimed++;
            upm_job_free(&j);
        }
        if (rc)
            break;
        if (once && !claimed) {
            if (o->only > 0)
                say(o, "job %lld is not queued", (long long)o->only);
            else
                say(o, "no queued job");
            break;
        }
        /* the children */
        double now = upm_job_now();
        for (int i = 0; !rc && i < nkids;) {
            child *c = &kids[i];
            int status = 0;
            pid_t w = waitpid(c->pid, &status, WNOHANG);
            if (w == c->pid) {
                rc = reap_child(o, cat, c, status, err);
                kids[i] = kids[--nkids];
                continue;
            }
            if (stopping && !c->stop_sent) {
                kill(-c->pid, SIGUSR1);
                c->stop_sent = 1;
            }
            if (now >= c->next_beat) {
                int lost = 0, cancel = 0;
                rc = upm_job_heartbeat(cat, c->job, c->attempt, o->lease_s, c->pid, &lost, &cancel, err);
                c->next_beat = now + o->lease_s / 3;
                if (!rc && lost) {
                    say(o, "job %lld attempt %lld lost its lease: stopping its trainer", (long long)c->job,
                        (long long)c->attempt);
                    kill(-c->pid, SIGKILL);
                } else if (!rc && cancel && !c->cancel_sent) {
                    say(o, "job %lld: cancel requested, the trainer checkpoints and stops", (long long)c->job);
                    kill(-c->pid, SIGUSR1);
                    c->cancel_sent = 1;
                }
            }
            i++;
        }
        if (rc || (stopping && !nkids) || (once && claimed && !nkids))
            break;
        nap(o->poll_s);
    }
    for (int i = 0; i < nkids; i++) { /* leaving on an error: the children checkpoint and stop */
        kill(-kids[i].pid, SIGUSR1);
        waitpid(kids[i].pid, NULL, 0);
    }
    free(kids);
    upm_catalog_close(cat);
    return rc;
}
