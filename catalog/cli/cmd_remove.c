/* upmoe-catalog remove KIND NAME [--cascade]. */
#include "cli.h"

typedef struct remove_job {
    upm_kind kind;
    const char *name;
    int cascade;
} remove_job;

static int remove_fn(upm_catalog *cat, void *p, upm_err *err)
{
    remove_job *j = p;
    return upm_remove(cat, j->kind, j->name, j->cascade, err);
}

int cmd_remove(cli *c, int argc, char **argv)
{
    const char *pos[2];
    int npos;
    remove_job job = {0};
    const cli_opt opts[] = {{"cascade", 0, NULL, &job.cascade, NULL, NULL, 0}, {0}};
    int rc = cli_parse(argc - 1, argv + 1, opts, pos, 2, &npos, "remove");
    if (rc)
        return rc;
    if (npos != 2)
        return cli_usage_error("remove", "remove needs KIND (task, dataset, labels, mixture) and NAME");
    if (upm_kind_parse(pos[0], &job.kind) != 0)
        return cli_usage_error("remove", "unknown kind '%s' (task, dataset, labels or mixture)", pos[0]);
    job.name = pos[1];
    upm_catalog *cat;
    if ((rc = cli_open(c, 0, &cat)))
        return rc;
    rc = cli_write(c, cat, remove_fn, &job);
    upm_catalog_close(cat);
    if (!rc)
        printf("removed %s %s%s\n", upm_kind_name(job.kind), job.name, job.cascade ? " (and what depended on it)" : "");
    return rc;
}
