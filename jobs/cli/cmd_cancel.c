/* upmoe-jobs cancel ID, resume ID, retry ID: on the local queue, or through Slurm for Slurm jobs. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static int cancel_requeue(upm_catalog *cat, int argc, char **argv, int what)
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

int cmd_cancel(upm_catalog *cat, int argc, char **argv) { return cancel_requeue(cat, argc, argv, 0); }
int cmd_resume(upm_catalog *cat, int argc, char **argv) { return cancel_requeue(cat, argc, argv, 1); }
int cmd_retry(upm_catalog *cat, int argc, char **argv) { return cancel_requeue(cat, argc, argv, 2); }
