/* upmoe-jobs submit pretrain: checks the mixture and the options, and queues the job (or, with --dry-run,
 * prints the exact command the worker would run). */
#define _XOPEN_SOURCE 700 /* realpath */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "catalog_ops.h"
#include "cli.h"
#include "config.h"
#include "shellword.h"

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

int cmd_submit(upm_catalog *cat, int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "eval"))
        return cmd_submit_eval(cat, argc, argv);
    if (argc < 2 || strcmp(argv[1], "pretrain"))
        return usage_error("submit needs a job kind: 'pretrain' or 'eval'%s", "");
    const char *mixture = "uniperceiver-moe-pretrain", *model = "ti", *moe = "attribute", *name = NULL;
    const char *backend = "local", *out = NULL, *steps = "1000", *scale = NULL;
    long long ranks = 1, priority = 0, attempts = 3;
    int dry = 0;
    slurm_cli sl = {.signal_lead = 120};
    enum { O_MIX = 256, O_MODEL, O_MOE, O_STEPS, O_SCALE, O_RANKS, O_PRIO, O_NAME, O_BACKEND, O_ATT, O_OUT, O_DRY };
    static const struct option opts[] = {
        {"mixture", 1, 0, O_MIX}, {"model", 1, 0, O_MODEL}, {"moe", 1, 0, O_MOE}, {"steps", 1, 0, O_STEPS},
        {"batch-scale", 1, 0, O_SCALE}, {"ranks", 1, 0, O_RANKS}, {"priority", 1, 0, O_PRIO}, {"name", 1, 0, O_NAME},
        {"backend", 1, 0, O_BACKEND}, {"max-attempts", 1, 0, O_ATT}, {"out", 1, 0, O_OUT}, {"dry-run", 0, 0, O_DRY},
        SLURM_CLI_OPTIONS, {0, 0, 0, 0}};
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
            if ((rc = int_option("--priority", optarg, LLONG_MIN, LLONG_MAX, &priority)))
                return rc;
            break;
        case O_ATT:
            if ((rc = int_option("--max-attempts", optarg, 1, 1000, &attempts)))
                return rc;
            break;
        case O_NAME: name = optarg; break;
        case O_BACKEND: backend = optarg; break;
        case O_OUT: out = optarg; break;
        case O_DRY: dry = 1; break;
        default: return usage_error("unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    upm_model_config preset; /* the trainer's own tables say what it accepts */
    upm_moe_kind moe_kind;
    upm_err verr = {0};
    if (upm_model_config_preset(model, &preset, NULL))
        upm_errf(&verr, UPM_EUSAGE, "--model must be %s, not '%s'", upm_model_size_names(), model);
    else
        upm_moe_kind_parse(moe, 1, &moe_kind, &verr);
    if (verr.code)
        return usage_error("%s", verr.msg);
    int slurm = slurm_cli_backend(&sl, backend);
    if (slurm < 0)
        return -slurm;
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
    static const char *const set_by_worker[] = {"--out", "--resume", "--catalog", "--job", "--attempt", NULL};
    int arc = 0;
    char *aj = job_arguments(a, argc, argv, optind, set_by_worker, "; give the job's folder with submit --out", &arc);
    if (!aj)
        return arc;
    char train[PATH_MAX];
    sibling("upmoe-train", train, sizeof train);
    if (dry) {
        char cmd[16384] = "", dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s", out ? out : "<catalog folder>/runs/job-ID");
        size_t n = 0;
        const char *head[] = {train, "--catalog", upm_catalog_path(cat), "--job", "ID", "--attempt", "N", "--out", dir};
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
    rc = upm_job_submit_new(cat, &s, &id, &err);
    free(aj);
    free(bopts);
    if (rc)
        return fail(&err);
    if (slurm && (rc = slurm_submit(cat, id)))
        return rc;
    printf("%lld\n", (long long)id);
    return 0;
}

