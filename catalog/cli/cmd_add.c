/* upmoe-catalog add task|dataset|labels: register a new record. A new task is data: its formulation,
 * inputs and targets are all it takes (see the README tour for MSVD and GLUE). */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* "FIELD=MODALITY" (the field may contain ':' for JSON keys). */
static int parse_field_spec(const char *spec, int need_modality, char *field, size_t n, upm_modality *mod)
{
    const char *eq = strchr(spec, '=');
    if (!eq && need_modality)
        return cli_usage_error("add", "input '%s' needs a modality: FIELD=image|video|text", spec);
    size_t len = eq ? (size_t)(eq - spec) : strlen(spec);
    if (len >= n)
        return cli_usage_error("add", "field '%s' is too long", spec);
    snprintf(field, n, "%.*s", (int)len, spec);
    if (eq && upm_modality_parse(eq + 1, mod) != 0)
        return cli_usage_error("add", "unknown modality '%s' in '%s' (image, video or text)", eq + 1, spec);
    return 0;
}

static int add_task_fn(upm_catalog *cat, void *t, upm_err *err) { return upm_task_add(cat, t, err); }
static int add_dataset_fn(upm_catalog *cat, void *d, upm_err *err) { return upm_dataset_add(cat, d, err); }

typedef struct labels_job {
    upm_labelset ls;
    int replace;
} labels_job;

static int add_labels_fn(upm_catalog *cat, void *p, upm_err *err)
{
    labels_job *j = p;
    return upm_labelset_add(cat, &j->ls, j->replace, err);
}

static int add_task(cli *c, upm_catalog **cat, int argc, char **argv)
{
    const char *form = NULL, *target = NULL, *labels = NULL, *prompt = NULL, *mtl = NULL, *mgl = NULL, *lw = NULL,
               *notes = NULL, *inputs[UPM_MAX_INPUTS + 1], *pos[1];
    int ninputs = 0, causal = 0, npos;
    const cli_opt opts[] = {
        {"formulation", 1, &form, NULL, NULL, NULL, 0},  {"input", 1, NULL, NULL, inputs, &ninputs, UPM_MAX_INPUTS},
        {"target", 1, &target, NULL, NULL, NULL, 0},     {"labels", 1, &labels, NULL, NULL, NULL, 0},
        {"causal", 0, NULL, &causal, NULL, NULL, 0},     {"prompt", 1, &prompt, NULL, NULL, NULL, 0},
        {"max-text-len", 1, &mtl, NULL, NULL, NULL, 0},  {"max-target-len", 1, &mgl, NULL, NULL, NULL, 0},
        {"loss-weight", 1, &lw, NULL, NULL, NULL, 0},    {"notes", 1, &notes, NULL, NULL, NULL, 0},
        {0}};
    int rc = cli_parse(argc, argv, opts, pos, 1, &npos, "add");
    if (rc)
        return rc;
    if (npos != 1)
        return cli_usage_error("add", "add task needs a NAME");
    if (!form)
        return cli_usage_error("add", "add task needs --formulation label|pair|vocab-mlm|vocab-caption");
    upm_task t;
    upm_task_init(&t);
    if ((rc = cli_copy("add", "task name", pos[0], t.name, sizeof t.name)))
        return rc;
    if (upm_formulation_parse(form, &t.formulation) != 0)
        return cli_usage_error("add", "unknown formulation '%s' (label, pair, vocab-mlm or vocab-caption)", form);
    t.causal = causal || t.formulation == UPM_FORM_VOCAB_CAPTION;
    for (int i = 0; i < ninputs; i++, t.n_inputs++)
        if ((rc = parse_field_spec(inputs[i], 1, t.inputs[i].field, sizeof t.inputs[i].field, &t.inputs[i].modality)))
            return rc;
    if (target && (rc = parse_field_spec(target, 0, t.target_field, sizeof t.target_field, &t.target_modality)))
        return rc;
    /* vocab tasks predict the tokens of their (last) text input unless --target says otherwise. */
    if (!target && (t.formulation == UPM_FORM_VOCAB_MLM || t.formulation == UPM_FORM_VOCAB_CAPTION))
        for (int i = 0; i < t.n_inputs; i++)
            if (t.inputs[i].modality == UPM_MOD_TEXT)
                snprintf(t.target_field, sizeof t.target_field, "%s", t.inputs[i].field);
    long long v;
    if ((labels && (rc = cli_copy("add", "label set name", labels, t.label_set, sizeof t.label_set))) ||
        (prompt && (rc = cli_copy("add", "prompt", prompt, t.prompt, sizeof t.prompt))) ||
        (notes && (rc = cli_copy("add", "notes", notes, t.notes, sizeof t.notes))) ||
        (lw && (rc = cli_weight("add", "--loss-weight", lw, &t.loss_weight))))
        return rc;
    if (mtl && !(rc = cli_int("add", "--max-text-len", mtl, 2, 4096, &v)))
        t.max_text_len = (int)v;
    if (!rc && mgl && !(rc = cli_int("add", "--max-target-len", mgl, 2, 4096, &v)))
        t.max_target_len = (int)v;
    if (rc)
        return rc;
    if (upm_task_validate(&t, &c->err))
        return cli_fail(&c->err);
    if ((rc = cli_open(c, 0, cat)) || (rc = cli_write(c, *cat, add_task_fn, &t)))
        return rc;
    printf("added task %s (%s)\n", t.name, upm_formulation_name(t.formulation));
    return 0;
}

/* Relative shard paths are stored absolute: the trainer may run from another directory. */
int cli_absolute_url(char *url, size_t n)
{
    /* Leave alone anything that starts like a scheme ("pipe:", "s3:"): the pattern parser judges it. */
    size_t scheme = strspn(url, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.");
    int alpha = (url[0] >= 'a' && url[0] <= 'z') || (url[0] >= 'A' && url[0] <= 'Z');
    if (!url[0] || url[0] == '/' || (alpha && url[scheme] == ':'))
        return 0;
    char cwd[PATH_MAX], out[UPM_TEXT_MAX + 1];
    if (!getcwd(cwd, sizeof cwd))
        return cli_usage_error(NULL, "cannot resolve the relative URL '%s'", url);
    int len = snprintf(out, sizeof out, "%s/%s", cwd, url[0] == '.' && url[1] == '/' ? url + 2 : url);
    if (len < 0 || (size_t)len >= sizeof out || (size_t)len >= n)
        return cli_usage_error(NULL, "URL '%s' is too long once made absolute", url);
    snprintf(url, n, "%s", out);
    return 0;
}

static int add_dataset(cli *c, upm_catalog **cat, int argc, char **argv)
{
    const char *task = NULL, *batch = NULL, *url = NULL, *split = NULL, *samples = NULL, *shards = NULL, *w = NULL,
               *lw = NULL, *labels = NULL, *license = NULL, *notes = NULL, *augment = NULL, *pos[1];
    int npos;
    const cli_opt opts[] = {
        {"task", 1, &task, NULL, NULL, NULL, 0},       {"batch", 1, &batch, NULL, NULL, NULL, 0},
        {"url", 1, &url, NULL, NULL, NULL, 0},         {"split", 1, &split, NULL, NULL, NULL, 0},
        {"samples", 1, &samples, NULL, NULL, NULL, 0}, {"shards", 1, &shards, NULL, NULL, NULL, 0},
        {"weight", 1, &w, NULL, NULL, NULL, 0},        {"loss-weight", 1, &lw, NULL, NULL, NULL, 0},
        {"labels", 1, &labels, NULL, NULL, NULL, 0},   {"license", 1, &license, NULL, NULL, NULL, 0},
        {"notes", 1, &notes, NULL, NULL, NULL, 0},     {"augment", 1, &augment, NULL, NULL, NULL, 0},
        {0}};
    int rc = cli_parse(argc, argv, opts, pos, 1, &npos, "add");
    if (rc)
        return rc;
    if (npos != 1)
        return cli_usage_error("add", "add dataset needs a NAME");
    if (!task || !batch)
        return cli_usage_error("add", "add dataset needs --task TASK and --batch N (per-GPU batch size)");
    upm_dataset d;
    upm_dataset_init(&d);
    long long v;
    if ((rc = cli_copy("add", "dataset name", pos[0], d.name, sizeof d.name)) ||
        (rc = cli_copy("add", "task name", task, d.task, sizeof d.task)) ||
        (rc = cli_int("add", "--batch", batch, 1, 1000000, &v)))
        return rc;
    d.batch_size = (int)v;
    if (split && upm_split_parse(split, &d.split) != 0)
        return cli_usage_error("add", "unknown split '%s' (train, val or test)", split);
    /* "" is the stored form of inherit, so only the three modes (or the spelled-out 'inherit') are taken. */
    if (augment && strcmp(augment, "inherit") != 0 && (!augment[0] || upm_augment_parse(augment, &d.augment) != 0))
        return cli_usage_error("add", "unknown augmentation '%s' (paper, light, none or inherit)", augment);
    if ((url && ((rc = cli_copy("add", "URL", url, d.url_pattern, sizeof d.url_pattern)) ||
                 (rc = cli_absolute_url(d.url_pattern, sizeof d.url_pattern)))) ||
        (w && (rc = cli_weight("add", "--weight", w, &d.sampling_weight))) ||
        (lw && (rc = cli_weight("add", "--loss-weight", lw, &d.loss_weight))) ||
        (labels && (rc = cli_copy("add", "label set name", labels, d.label_set, sizeof d.label_set))) ||
        (license && (rc = cli_copy("add", "licence", license, d.license, sizeof d.license))) ||
        (notes && (rc = cli_copy("add", "notes", notes, d.notes, sizeof d.notes))))
        return rc;
    if (samples && !(rc = cli_int("add", "--samples", samples, 0, INT64_MAX, &v)))
        d.num_samples = v;
    if (!rc && shards && !(rc = cli_int("add", "--shards", shards, 1, INT64_MAX, &v)))
        d.num_shards = v;
    if (rc)
        return rc;
    if (upm_dataset_validate(&d, &c->err))
        return cli_fail(&c->err);
    if ((rc = cli_open(c, 0, cat)) || (rc = cli_write(c, *cat, add_dataset_fn, &d)))
        return rc;
    printf("added dataset %s (task %s, %s)\n", d.name, d.task, d.url_pattern[0] ? d.url_pattern : "no URL yet");
    return 0;
}

static int add_labels(cli *c, upm_catalog **cat, int argc, char **argv)
{
    const char *notes = NULL, *pos[2];
    int npos, synonyms = 0, keys = 0;
    labels_job job;
    memset(&job, 0, sizeof job);
    const cli_opt opts[] = {{"synonyms", 0, NULL, &synonyms, NULL, NULL, 0},
                            {"keys", 0, NULL, &keys, NULL, NULL, 0},
                            {"replace", 0, NULL, &job.replace, NULL, NULL, 0},
                            {"notes", 1, &notes, NULL, NULL, NULL, 0},
                            {0}};
    int rc = cli_parse(argc, argv, opts, pos, 2, &npos, "add");
    if (rc)
        return rc;
    if (npos != 2)
        return cli_usage_error("add", "add labels needs NAME and FILE");
    if ((rc = cli_copy("add", "label set name", pos[0], job.ls.name, sizeof job.ls.name)) ||
        (notes && (rc = cli_copy("add", "notes", notes, job.ls.notes, sizeof job.ls.notes))))
        return rc;
    if (upm_name_check("label set", job.ls.name, &c->err))
        return cli_fail(&c->err);
    if (upm_labelset_read_file(pos[1], synonyms, keys, &job.ls, &c->err)) {
        upm_labelset_free(&job.ls);
        return cli_fail(&c->err);
    }
    if (!(rc = cli_open(c, 0, cat)) && !(rc = cli_write(c, *cat, add_labels_fn, &job)))
        printf("%s label set %s: %zu labels from %s\n", job.replace ? "stored" : "added", job.ls.name, job.ls.n, pos[1]);
    upm_labelset_free(&job.ls);
    return rc;
}

int cmd_add(cli *c, int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_error("add", "add needs a kind: task, dataset or labels");
    upm_catalog *cat = NULL;
    int rc;
    if (strcmp(argv[1], "task") == 0)
        rc = add_task(c, &cat, argc - 2, argv + 2);
    else if (strcmp(argv[1], "dataset") == 0)
        rc = add_dataset(c, &cat, argc - 2, argv + 2);
    else if (strcmp(argv[1], "labels") == 0 || strcmp(argv[1], "label") == 0)
        rc = add_labels(c, &cat, argc - 2, argv + 2);
    else
        rc = cli_usage_error("add", "unknown kind '%s' (task, dataset or labels)", argv[1]);
    upm_catalog_close(cat);
    return rc;
}
