/* The Slurm backend (see slurm.h). */
#define _GNU_SOURCE /* pipe2 */
#include "slurm.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fileio.h"

/* The batch script: constant, so that no shell ever sees a name or an option. */
static const char script[] =
    "#!/bin/sh\n"
    "# Written by upmoe-jobs. Slurm runs it with the command as its arguments:\n"
    "#   sbatch [options] job.sbatch /path/to/upmoe-jobs --catalog CATALOG slurm-run JOB_ID\n"
    "# Every option and name travels as a separate argument; nothing here is parsed by a shell.\n"
    "exec \"$@\"\n";

int upm_run_capture(char *const argv[], char *out, size_t on, char *errout, size_t en, int *status, upm_err *err)
{
    int po[2], pe[2], px[2]; /* stdout, stderr, exec failure */
    if (pipe2(po, O_CLOEXEC))
        return upm_errf(err, UPM_EIO, "pipe: %s", strerror(errno));
    if (pipe2(pe, O_CLOEXEC)) {
        close(po[0]), close(po[1]);
        return upm_errf(err, UPM_EIO, "pipe: %s", strerror(errno));
    }
    if (pipe2(px, O_CLOEXEC)) {
        close(po[0]), close(po[1]), close(pe[0]), close(pe[1]);
        return upm_errf(err, UPM_EIO, "pipe: %s", strerror(errno));
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(po[1], 1);
        dup2(pe[1], 2);
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0)
            dup2(null, 0);
        execvp(argv[0], argv);
        int e = errno;
        (void)!write(px[1], &e, sizeof e);
        _exit(127);
    }
    close(po[1]), close(pe[1]), close(px[1]);
    if (pid < 0) {
        close(po[0]), close(pe[0]), close(px[0]);
        return upm_errf(err, UPM_EIO, "fork: %s", strerror(errno));
    }
    size_t got[2] = {0, 0}, cap[2] = {on, en};
    char *buf[2] = {out, errout};
    struct pollfd fds[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
    int open_fds = 2;
    while (open_fds) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char tmp[4096];
            ssize_t r = read(fds[i].fd, tmp, sizeof tmp);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_fds--;
                continue;
            }
            size_t room = cap[i] > got[i] + 1 ? cap[i] - got[i] - 1 : 0, k = (size_t)r < room ? (size_t)r : room;
            memcpy(buf[i] + got[i], tmp, k);
            got[i] += k;
        }
    }
    for (int i = 0; i < 2; i++) {
        if (fds[i].fd >= 0)
            close(fds[i].fd);
        if (cap[i])
            buf[i][got[i]] = 0;
    }
    int e = 0;
    ssize_t r = read(px[0], &e, sizeof e);
    close(px[0]);
    while (waitpid(pid, status, 0) < 0 && errno == EINTR)
        ;
    if (r == (ssize_t)sizeof e)
        return upm_errf(err, UPM_EIO, "cannot run %s: %s (is Slurm installed? Debian: slurm-client)", argv[0],
                        strerror(e));
    return 0;
}

/* The trimmed text of a command's failure, for messages. */
static const char *trimmed(char *s)
{
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = 0;
    while (isspace((unsigned char)*s))
        s++;
    return s;
}

static int run_slurm(char *const argv[], char *out, size_t on, upm_err *err)
{
    char errout[2048];
    int status = 0, rc = upm_run_capture(argv, out, on, errout, sizeof errout, &status, err);
    if (rc)
        return rc;
    if (!WIFEXITED(status) || WEXITSTATUS(status))
        return upm_errf(err, UPM_EIO, "%s failed (status %d): %s", argv[0], WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                        trimmed(errout));
    return 0;
}

void upm_slurm_argv_free(char **argv)
{
    if (!argv)
        return;
    for (int i = 0; argv[i]; i++)
        free(argv[i]);
    free(argv);
}

/* Slurm's job name: upmoe-ID-NAME with NAME reduced to [A-Za-z0-9._-] (the catalog keeps the real one). */
static void slurm_name(const upm_job *j, char *buf, size_t n)
{
    int k = snprintf(buf, n, "--job-name=upmoe-%lld-", (long long)j->id);
    for (const char *s = j->name; *s && k >= 0 && (size_t)k + 1 < n && k < 80; s++)
        buf[k++] = isalnum((unsigned char)*s) || *s == '.' || *s == '_' || *s == '-' ? *s : '_';
    if (k >= 0 && (size_t)k < n)
        buf[k] = 0;
}

char **upm_slurm_sbatch_argv(const upm_slurm_opts *o, const upm_job *j)
{
    char **a = calloc((size_t)o->nextra + 32, sizeof *a);
    if (!a)
        return NULL;
    int k = 0, bad = 0;
    char tmp[4300];
#define ADD(s)                                                                                                         \
    do {                                                                                                               \
        if (!(a[k++] = strdup(s)))                                                                                     \
            bad = 1;                                                                                                   \
    } while (0)
#define ADDF(...)                                                                                                      \
    do {                                                                                                               \
        snprintf(tmp, sizeof tmp, __VA_ARGS__);                                                                        \
        ADD(tmp);                                                                                                      \
    } while (0)
    ADD("sbatch");
    ADD("--parsable");
    slurm_name(j, tmp, sizeof tmp);
    ADD(tmp);
    ADDF("--ntasks=%d", j->ranks);
    if (o->cpus_per_rank > 0)
        ADDF("--cpus-per-task=%d", o->cpus_per_rank);
    if (o->gpus_per_rank > 0) { /* one GPU (or more) per rank, bound by Slurm; the ranks compute on it */
        ADDF("--gpus-per-task=%d", o->gpus_per_rank);
        ADD("--export=ALL,UPMOE_BACKEND=cuda");
    }
    ADDF("--output=%s", j->log_path);
    ADD("--open-mode=append");
    ADD("--requeue");
    ADDF("--signal=B:USR1@%d", o->signal_lead_s > 0 ? o->signal_lead_s : 120);
    ADDF("--chdir=%s", j->out_dir);
    if (o->partition)
        ADDF("--partition=%s", o->partition);
    if (o->time_limit)
        ADDF("--time=%s", o->time_limit);
    for (int i = 0; i < o->nextra; i++)
        ADD(o->extra[i]);
    ADDF("%s/job.sbatch", j->out_dir);
    ADD(o->jobs_prog);
    ADD("--catalog");
    ADD(o->catalog);
    ADD("slurm-run");
    ADDF("%lld", (long long)j->id);
#undef ADD
#undef ADDF
    a[k] = NULL;
    if (bad) {
        upm_slurm_argv_free(a);
        return NULL;
    }
    return a;
}

int upm_slurm_submit(const upm_slurm_opts *o, const upm_job *j, char *slurm_job, size_t n, upm_err *err)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/job.sbatch", j->out_dir);
    int rc = upm_mkdirs(j->out_dir, err); /* Slurm opens the log there before the script runs */
    if (rc)
        return rc;
    rc = upm_write_file_atomic(path, script, sizeof script - 1, err);
    if (rc)
        return rc;
    if (chmod(path, 0755))
        return upm_errf(err, UPM_EIO, "chmod %s: %s", path, strerror(errno));
    char **argv = upm_slurm_sbatch_argv(o, j);
    if (!argv)
        return upm_errf(err, UPM_ENOMEM, "no memory");
    char out[512];
    rc = run_slurm(argv, out, sizeof out, err);
    upm_slurm_argv_free(argv);
    if (rc)
        return rc;
    /* --parsable: "ID" or "ID;CLUSTER" */
    const char *id = trimmed(out);
    size_t len = strcspn(id, ";\n");
    if (!len || len >= n || strspn(id, "0123456789") != len)
        return upm_errf(err, UPM_EIO, "sbatch printed no job id ('%s')", id);
    memcpy(slurm_job, id, len);
    slurm_job[len] = 0;
    return 0;
}

int upm_slurm_query(const char *slurm_job, char *state, size_t sn, char *reason, size_t rn, upm_err *err)
{
    state[0] = reason[0] = 0;
    char job[80];
    snprintf(job, sizeof job, "%s", slurm_job);
    char *argv[] = {"squeue", "-h", "-t", "all", "-j", job, "-o", "%T|%r", NULL};
    char out[512], errout[1024];
    int status = 0, rc = upm_run_capture(argv, out, sizeof out, errout, sizeof errout, &status, err);
    if (rc)
        return rc;
    if (!WIFEXITED(status) || WEXITSTATUS(status)) {
        if (strstr(errout, "Invalid job id")) /* finished longer than MinJobAge ago */
            return 0;
        return upm_errf(err, UPM_EIO, "squeue failed: %s", trimmed(errout));
    }
    char *line = out, *bar = strchr(line, '|');
    if (!bar)
        return 0;
    *bar = 0;
    snprintf(state, sn, "%s", trimmed(line));
    char *nl = strchr(bar + 1, '\n');
    if (nl)
        *nl = 0;
    snprintf(reason, rn, "%s", trimmed(bar + 1));
    return 0;
}

int upm_slurm_state_final(const char *state)
{
    static const char *const fin[] = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
                                      "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY", "SPECIAL_EXIT", "REVOKED"};
    if (!state[0])
        return 1;
    for (size_t i = 0; i < sizeof fin / sizeof fin[0]; i++)
        if (!strcmp(state, fin[i]))
            return 1;
    return 0;
}

int upm_slurm_cancel(const char *slurm_job, const char *signal, upm_err *err)
{
    char job[80], sig[40], out[256];
    snprintf(job, sizeof job, "%s", slurm_job);
    snprintf(sig, sizeof sig, "--signal=%s", signal ? signal : "");
    char *with[] = {"scancel", "--batch", sig, job, NULL}, *plain[] = {"scancel", job, NULL};
    return run_slurm(signal ? with : plain, out, sizeof out, err);
}

int upm_slurm_requeue(const char *slurm_job, upm_err *err)
{
    char job[80], out[256];
    snprintf(job, sizeof job, "%s", slurm_job);
    char *argv[] = {"scontrol", "requeue", job, NULL};
    return run_slurm(argv, out, sizeof out, err);
}

int upm_slurm_has_pmix(void)
{
    char *argv[] = {"srun", "--mpi=list", NULL};
    char out[2048], errout[2048];
    int status = 0;
    upm_err e = {0};
    if (upm_run_capture(argv, out, sizeof out, errout, sizeof errout, &status, &e))
        return 0;
    return strstr(out, "pmix") || strstr(errout, "pmix"); /* 22.05 prints the list on stderr */
}

typedef struct active {
    int64_t id;
    char slurm_job[64];
} active;

typedef struct active_list {
    active *v;
    int n;
} active_list;

static int collect(const upm_job *j, void *ctx)
{
    active_list *l = ctx;
    if (strcmp(j->backend, "slurm") || !j->slurm_job[0] || (strcmp(j->state, "queued") && strcmp(j->state, "running")))
        return 0;
    active *g = realloc(l->v, sizeof *l->v * (size_t)(l->n + 1));
    if (!g)
        return UPM_ENOMEM;
    l->v = g;
    g[l->n].id = j->id;
    snprintf(g[l->n].slurm_job, sizeof g[l->n].slurm_job, "%s", j->slurm_job);
    l->n++;
    return 0;
}

int upm_slurm_follow(upm_catalog *cat, int *changed, upm_err *err)
{
    *changed = 0;
    active_list l = {0};
    int rc = upm_job_foreach(cat, NULL, collect, &l, err);
    if (rc == UPM_ENOMEM)
        upm_errf(err, UPM_ENOMEM, "no memory");
    for (int i = 0; !rc && i < l.n; i++) {
        char state[64], reason[256], msg[512];
        if ((rc = upm_slurm_query(l.v[i].slurm_job, state, sizeof state, reason, sizeof reason, err)))
            break;
        if (!upm_slurm_state_final(state))
            continue;
        if (state[0])
            snprintf(msg, sizeof msg, "Slurm job %s ended as %s (%s) before the job finished; 'upmoe-jobs resume %lld' "
                     "continues from its last checkpoint", l.v[i].slurm_job, state, reason, (long long)l.v[i].id);
        else
            snprintf(msg, sizeof msg, "Slurm no longer knows job %s and the job did not finish; 'upmoe-jobs resume "
                     "%lld' continues from its last checkpoint", l.v[i].slurm_job, (long long)l.v[i].id);
        int ch = 0;
        rc = upm_job_end_outside(cat, l.v[i].id, l.v[i].slurm_job, !strcmp(state, "CANCELLED") ? "cancelled" : "failed",
                                 msg, &ch, err);
        *changed += ch;
    }
    free(l.v);
    return rc;
}
