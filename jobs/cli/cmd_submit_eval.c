/* upmoe-jobs submit eval: queues an evaluation of a checkpoint (upmoe-eval's full pass, docs/evaluation.md)
 * on datasets or a mixture, run by a worker like any job (leases, retries) or as a Slurm batch job
 * (--backend slurm, with the sbatch options of submit pretrain), its results stored in the catalog under
 * the job's attempt. */
#define _XOPEN_SOURCE 700 /* realpath */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "catalog_ops.h"
#include "cli.h"

/* A dataset to evaluate must exist and have its shard URLs. */
static int check_dataset(upm_catalog *cat, const char *name, upm_err *err)
{
    upm_dataset d;
    int rc = upm_dataset_get(cat, name, &d, err);
    if (!rc && !d.url_pattern[0])
        rc = upm_errf(err, UPM_EINVAL, "dataset %s has no shard URL yet (set it with 'upmoe-catalog set %s "
                      "url=PATTERN')", name, name);
    return rc;
}

static int check_member(const upm_mixture_member *m, void *ctx)
{
    upm_catalog **cat = ctx;
    upm_err e;
    int rc = check_dataset(*cat, m->dataset, &e);
    if (rc)
        fprintf(stderr, PROG ": error: %s\n", e.msg);
    return rc;
}

int cmd_submit_eval(upm_catalog *cat, int argc, char **argv)
{
    const char *ckpt = NULL, *mixture = NULL, *name = NULL, *limit = NULL, *backend = "local", *out = NULL;
    const char *datasets[64];
    int ndatasets = 0;
    long long priority = 0, attempts = 3;
    slurm_cli sl = {.signal_lead = 120};
    enum { O_CKPT = 256, O_DATASET, O_MIX, O_LIMIT, O_NAME, O_PRIO, O_ATT, O_BACKEND, O_OUT };
    static const struct option opts[] = {
        {"checkpoint", 1, 0, O_CKPT}, {"dataset", 1, 0, O_DATASET}, {"mixture", 1, 0, O_MIX}, {"limit", 1, 0, O_LIMIT},
        {"name", 1, 0, O_NAME},       {"priority", 1, 0, O_PRIO},   {"max-attempts", 1, 0, O_ATT},
        {"backend", 1, 0, O_BACKEND}, {"out", 1, 0, O_OUT},         SLURM_CLI_OPTIONS,
        {0, 0, 0, 0}};
    optind = 2;
    opterr = 0;
    int c, rc;
    char *end;
    while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        if ((rc = slurm_cli_option(c, optarg, &sl)) >= 0) {
            if (rc)
                return rc;
            continue;
        }
        switch (c) {
        case O_CKPT: ckpt = optarg; break;
        case O_DATASET:
            if (ndatasets == 64)
                return usage_error("at most 64 --dataset options%s", "");
            datasets[ndatasets++] = optarg;
            break;
        case O_MIX: mixture = optarg; break;
        case O_LIMIT:
            if (strtoll(optarg, &end, 10) <= 0 || *end)
                return usage_error("--limit needs a positive integer, not '%s'", optarg);
            limit = optarg;
            break;
        case O_NAME: name = optarg; break;
        case O_PRIO:
            if ((rc = int_option("--priority", optarg, LLONG_MIN, LLONG_MAX, &priority)))
                return rc;
            break;
        case O_ATT:
            if ((rc = int_option("--max-attempts", optarg, 1, 1000, &attempts)))
                return rc;
            break;
        case O_BACKEND: backend = optarg; break;
        case O_OUT: out = optarg; break;
        default: return usage_error("unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (!ckpt || (!mixture && !ndatasets) || (mixture && ndatasets))
        return usage_error("submit eval needs --checkpoint and one of --mixture or --dataset%s", "");
    int slurm = slurm_cli_backend(&sl, backend);
    if (slurm < 0)
        return -slurm;
    char abs_ckpt[PATH_MAX];
    struct stat st;
    if (strspn(ckpt, "0123456789") == strlen(ckpt)) /* a job id: upmoe-eval finds its last checkpoint */
        snprintf(abs_ckpt, sizeof abs_ckpt, "%s", ckpt);
    else if (stat(ckpt, &st) != 0 || !realpath(ckpt, abs_ckpt)) /* the worker may run elsewhere */
        return usage_error("--checkpoint: no checkpoint or run directory '%s'", ckpt);
    upm_err err = {0};
    rc = 0;
    for (int i = 0; !rc && i < ndatasets; i++)
        rc = check_dataset(cat, datasets[i], &err);
    if (rc)
        return fail(&err);
    if (mixture && (rc = upm_mixture_foreach_member(cat, mixture, check_member, &cat, &err)))
        return err.msg[0] ? fail(&err) : 1;
    cJSON *a = cJSON_CreateArray();
    cJSON_AddItemToArray(a, cJSON_CreateString("--checkpoint"));
    cJSON_AddItemToArray(a, cJSON_CreateString(abs_ckpt));
    for (int i = 0; i < ndatasets; i++) {
        cJSON_AddItemToArray(a, cJSON_CreateString("--dataset"));
        cJSON_AddItemToArray(a, cJSON_CreateString(datasets[i]));
    }
    if (mixture) {
        cJSON_AddItemToArray(a, cJSON_CreateString("--mixture"));
        cJSON_AddItemToArray(a, cJSON_CreateString(mixture));
    }
    if (limit) {
        cJSON_AddItemToArray(a, cJSON_CreateString("--limit"));
        cJSON_AddItemToArray(a, cJSON_CreateString(limit));
    }
    static const char *const set_by_worker[] = {"--catalog", "--job", "--attempt", NULL};
    int arc = 0;
    char *aj = job_arguments(a, argc, argv, optind, set_by_worker, "", &arc);
    if (!aj)
        return arc;
    char out_abs[PATH_MAX];
    if (out && out[0] != '/' && realpath(".", out_abs) && strlen(out_abs) + strlen(out) + 2 < sizeof out_abs) {
        strcat(out_abs, "/"), strcat(out_abs, out);
        out = out_abs;
    }
    char *bopts = slurm ? slurm_opts_json(&sl) : NULL;
    upm_job_submit s = {name ? name : "eval", "eval", backend, priority, 1, attempts, aj, out, bopts};
    int64_t id = 0;
    rc = upm_job_submit_new(cat, &s, &id, &err);
    free(aj);
    free(bopts);
    if (rc)
        return fail(&err);
    if (slurm && (rc = slurm_submit(cat, id))) /* one rank: the batch step runs upmoe-eval */
        return rc;
    printf("%lld\n", (long long)id);
    return 0;
}
