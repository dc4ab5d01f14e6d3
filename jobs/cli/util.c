/* Helpers shared by the commands of upmoe-jobs (see cli.h). */
#define _XOPEN_SOURCE 700 /* realpath */
#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

volatile sig_atomic_t cli_stop;

static void on_signal(int sig)
{
    (void)sig;
    cli_stop = 1;
}

void cli_catch_stop(void)
{
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
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

char *job_arguments(cJSON *a, int argc, char **argv, int first, const char *const *refused, const char *hint,
                    int *rc)
{
    int has_bpe = 0;
    for (int i = first; i < argc; i++) {
        for (int k = 0; refused[k]; k++)
            if (!strcmp(argv[i], refused[k])) {
                cJSON_Delete(a);
                char msg[512];
                snprintf(msg, sizeof msg, "%%s is set by the worker%s", hint);
                *rc = usage_error(msg, argv[i]);
                return NULL;
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
        *rc = 1;
    }
    return aj;
}

int int_option(const char *opt, const char *s, long long lo, long long hi, long long *out)
{
    char *end, msg[200];
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) {
        if (lo == LLONG_MIN && hi == LLONG_MAX)
            snprintf(msg, sizeof msg, "%s needs an integer, not '%%s'", opt);
        else
            snprintf(msg, sizeof msg, "%s needs an integer in [%lld, %lld], not '%%s'", opt, lo, hi);
        return usage_error(msg, s);
    }
    *out = v;
    return 0;
}
