/* upmoe-export: deployment checkpoints. --merge-experts --task T evaluates every gate of a trained
 * checkpoint with data-independent routing (attribute, modality, task or task-specific) on the task's
 * attribute patterns and merges each MoE linear's experts into one dense weight per pattern (paper §3.3): a
 * checkpoint directory (model.safetensors + state.json) that runs at a dense model's cost and gives the
 * routed model's outputs on that task. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "attributes.h"
#include "catalog.h"
#include "catalog_ops.h"
#include "checkpoint.h"
#include "fileio.h"
#include "merge.h"
#include "modelcfg.h"

#define PROG "upmoe-export"

static const char usage[] =
    "usage: " PROG " --merge-experts --task TASK --checkpoint DIR --out DIR [--catalog PATH] [--backend cpu|debug]\n"
    "Merges the experts of a checkpoint with data-independent routing (attribute, modality, task or\n"
    "task-specific) for the attribute patterns of TASK (its input and target token kinds, paper Table 2)\n"
    "into one dense weight per pattern: a checkpoint directory that upmoe-eval (and later serving) runs at a\n"
    "dense model's cost with the routed model's outputs on TASK. Token and context routing cannot merge:\n"
    "their gates depend on the data.\n"
    "--checkpoint is a step-* directory or a run's --out directory (its newest checkpoint).\n";

int main(int argc, char **argv)
{
    const char *ckpt_arg = NULL, *task_name = NULL, *out = NULL, *catalog = NULL, *backend = NULL;
    int merge = 0;
    static const struct option opts[] = {{"checkpoint", 1, 0, 'c'}, {"task", 1, 0, 't'}, {"out", 1, 0, 'o'},
                                         {"catalog", 1, 0, 'C'}, {"merge-experts", 0, 0, 'm'}, {"backend", 1, 0, 'B'}, {"help", 0, 0, 'h'},
                                         {"version", 0, 0, 'V'}, {0, 0, 0, 0}};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': ckpt_arg = optarg; break;
        case 't': task_name = optarg; break;
        case 'o': out = optarg; break;
        case 'C': catalog = optarg; break;
        case 'm': merge = 1; break;
        case 'B': backend = optarg; break;
        case 'h': fputs(usage, stdout); return 0;
        case 'V': printf(PROG " %s\n", UPMOE_VERSION); return 0;
        default: fprintf(stderr, PROG ": error: unknown or incomplete option '%s' (see --help)\n", argv[optind - 1]); return 2;
        }
    }
    if (!merge || !task_name || !ckpt_arg || !out || optind < argc) {
        fprintf(stderr, PROG ": error: --merge-experts, --task, --checkpoint and --out are required (see --help)\n");
        return 2;
    }
    upm_err err = {0};
    char ckpt[4096], path[4200], catpath[4096];
    upm_model_config cfg;
    if (upm_checkpoint_config(ckpt_arg, ckpt, sizeof ckpt, &cfg, &err)) {
        fprintf(stderr, PROG ": error: %s\n", err.msg);
        return 1;
    }
    upm_catalog *cat = NULL;
    upm_task task;
    upm_backend *be = NULL;
    upm_model *m = NULL, *d = NULL;
    int rc = upm_catalog_resolve_path(catalog, catpath, sizeof catpath, &err);
    if (!rc)
        rc = upm_catalog_open(catpath, UPM_CAT_READONLY, &cat, &err);
    if (!rc)
        rc = upm_task_get(cat, task_name, &task, &err);
    upm_catalog_close(cat);
    uint8_t pats[64];
    int np = 0;
    if (!rc) {
        upm_token_kind kinds[32];
        int n = upm_task_token_kinds(&task, kinds, 32);
        for (int i = 0; i < n && i < 32 && np < 64; i++)
            pats[np++] = kinds[i].attr;
    }
    if (!rc)
        rc = upm_backend_open(backend, NULL, &be, &err);
    if (!rc)
        rc = upm_model_new(&cfg, be, 0, &m, &err);
    if (!rc)
        rc = upm_checkpoint_load(ckpt, m, NULL, NULL, &err);
    {
        int video = 0, id = upm_model_task_id(&cfg, task_name);
        char names[512];
        for (int i = 0; !rc && i < task.n_inputs; i++)
            video |= task.inputs[i].modality == UPM_MOD_VIDEO;
        if (!rc && upm_moe_needs_task(cfg.moe) && !id)
            rc = upm_errf(&err, UPM_EINVAL, "task '%s' was not met in training by this %s model (its tasks: %s): "
                          "it has no trained routing to merge", task_name, upm_moe_kind_name(cfg.moe),
                          upm_model_task_list(&cfg, names, sizeof names));
        if (!rc)
            rc = upm_model_merge(m, pats, np, video, id, &d, &err);
    }
    if (!rc && mkdir(out, 0777) != 0 && errno != EEXIST)
        rc = upm_errf(&err, UPM_EIO, "cannot create %s", out);
    if (!rc) {
        snprintf(path, sizeof path, "%s/model.safetensors", out);
        const char *meta[] = {"format", "upmoe-merged-1", "task", task_name, "source", ckpt, NULL};
        rc = upm_weights_save(path, d, meta, &err);
    }
    if (!rc) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddNumberToObject(j, "version", 1);
        cJSON_AddNumberToObject(j, "step", 0);
        cJSON_AddNumberToObject(j, "run_id", 0);
        cJSON_AddStringToObject(j, "seed", "0");
        cJSON_AddStringToObject(j, "mixture", "");
        cJSON_AddStringToObject(j, "task", task_name);
        cJSON_AddStringToObject(j, "merged_from", ckpt);
        cJSON_AddItemToObject(j, "model", upm_model_config_json(&d->cfg));
        char *s = cJSON_Print(j);
        cJSON_Delete(j);
        snprintf(path, sizeof path, "%s/state.json", out);
        rc = s ? upm_write_file_atomic(path, s, strlen(s), &err) : upm_errf(&err, UPM_ENOMEM, "no memory");
        free(s);
    }
    if (!rc) {
        printf("merged the experts of %s for task %s: %d attribute pattern%s (", ckpt, task_name, d->cfg.npatterns,
               d->cfg.npatterns == 1 ? "" : "s");
        for (int i = 0; i < d->cfg.npatterns; i++)
            printf("%s%u", i ? ", " : "", d->cfg.patterns[i]);
        printf("); %zu parameters -> %zu; written to %s\n", upm_layout_count(&m->L), upm_layout_count(&d->L), out);
    } else
        fprintf(stderr, PROG ": error: %s\n", err.msg);
    upm_model_free(d);
    upm_model_free(m);
    upm_backend_free(be);
    return rc ? (rc == UPM_EUSAGE ? 2 : 1) : 0;
}
