/* upmoe-jobs logs ID [-f]: the job's log, followed until the job ends with -f. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli.h"

int cmd_logs(upm_catalog *cat, int argc, char **argv)
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
        if (!active || cli_stop)
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

