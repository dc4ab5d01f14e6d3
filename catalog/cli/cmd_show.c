/* upmoe-catalog show [KIND] NAME: one record in full (for people), or its JSON object. */
#include <inttypes.h>
#include <string.h>

#include "attributes.h"
#include "cli.h"
#include "json.h"
#include "results.h"
#include "urlpattern.h"

static void kv(const char *key, const char *val) { printf("  %-16s %s\n", key, val && *val ? val : "-"); }

static int show_task(cli *c, upm_catalog *cat, const char *name)
{
    upm_task t;
    if (upm_task_get(cat, name, &t, &c->err))
        return cli_fail(&c->err);
    if (c->json) {
        cli_print_json(upm_task_to_json(&t));
        return 0;
    }
    char buf[2048];
    printf("task %s\n", t.name);
    kv("formulation", upm_formulation_name(t.formulation));
    buf[0] = '\0';
    for (int i = 0; i < t.n_inputs; i++) {
        size_t len = strlen(buf);
        snprintf(buf + len, sizeof buf - len, "%s%s (%s)", i ? ", " : "", t.inputs[i].field,
                 upm_modality_name(t.inputs[i].modality));
    }
    kv("inputs", buf);
    cli_target_text(&t, buf, sizeof buf);
    kv("target", buf);
    kv("causal", t.causal ? "yes (text inputs)" : "no");
    kv("prompt", t.prompt);
    snprintf(buf, sizeof buf, "%d input tokens, %d per target text", t.max_text_len, t.max_target_len);
    kv("text limits", buf);
    cli_fmt_weight(t.loss_weight, buf, sizeof buf);
    kv("loss weight", buf);
    upm_related_names(cat, UPM_KIND_TASK, name, buf, sizeof buf, NULL);
    kv("datasets", buf);
    kv("notes", t.notes);
    printf("\ntoken attributes (paper Table 2):\n");
    return cli_print_attributes(&t, stdout);
}

static int show_dataset(cli *c, upm_catalog *cat, const char *name)
{
    upm_dataset d;
    double lw;
    if (upm_dataset_get(cat, name, &d, &c->err) || upm_dataset_effective_loss_weight(cat, &d, &lw, &c->err))
        return cli_fail(&c->err);
    upm_verify_record v;
    int verified = upm_verify_last(cat, d.name, &v, &c->err);
    if (verified < 0)
        return cli_fail(&c->err);
    if (c->json) {
        cJSON *o = upm_dataset_to_json(&d);
        if (verified) { /* the newest `verify --store` (not part of exports: it describes these shards here) */
            cJSON *x = cJSON_AddObjectToObject(o, "verified");
            cJSON_AddStringToObject(x, "at", v.at);
            cJSON_AddNumberToObject(x, "shards", (double)v.shards);
            cJSON_AddNumberToObject(x, "samples", (double)v.samples);
            cJSON_AddNumberToObject(x, "bytes", (double)v.bytes);
            cJSON_AddNumberToObject(x, "bad_samples", (double)v.bad_samples);
            cJSON_AddNumberToObject(x, "bad_shards", (double)v.bad_shards);
            if (v.undecodable >= 0)
                cJSON_AddNumberToObject(x, "undecodable", (double)v.undecodable);
            else
                cJSON_AddNullToObject(x, "undecodable");
        }
        cli_print_json(o);
        return 0;
    }
    char buf[2048], w[32];
    printf("dataset %s\n", d.name);
    kv("task", d.task);
    kv("split", upm_split_name(d.split));
    kv("augment", d.augment == UPM_AUGMENT_INHERIT ? "inherit (the run's --augment)" : upm_augment_name(d.augment));
    kv("url", d.url_pattern[0] ? d.url_pattern : "(placeholder: set it with '" PROG " set NAME url=PATTERN')");
    upm_urlpat *pat = NULL;
    if (d.url_pattern[0] && upm_urlpat_parse(d.url_pattern, &pat, NULL) == 0) {
        uint64_t n = upm_urlpat_count(pat);
        char first[UPM_TEXT_MAX + 64] = "", last[UPM_TEXT_MAX + 64] = "";
        upm_urlpat_get(pat, 0, first, sizeof first, NULL);
        upm_urlpat_get(pat, n - 1, last, sizeof last, NULL);
        snprintf(buf, sizeof buf, n > 1 ? "%s ... %s" : "%s", first, last);
        kv("shards", buf);
        upm_urlpat_free(pat);
    }
    snprintf(buf, sizeof buf, d.num_shards >= 0 ? "%" PRId64 : "unknown", d.num_shards);
    kv("shard count", buf);
    snprintf(buf, sizeof buf, d.num_samples >= 0 ? "%" PRId64 : "unknown", d.num_samples);
    kv("samples", buf);
    if (verified) {
        char dec[64] = "contents not decoded";
        if (v.undecodable >= 0)
            snprintf(dec, sizeof dec, "%" PRId64 " undecodable", v.undecodable);
        snprintf(buf, sizeof buf, "%s: %" PRId64 " samples, %" PRId64 " bad samples, %" PRId64 " bad shards, %s", v.at,
                 v.samples, v.bad_samples, v.bad_shards, dec);
        kv("verified", buf);
    }
    snprintf(buf, sizeof buf, "%d per GPU", d.batch_size);
    kv("batch size", buf);
    cli_fmt_weight(d.sampling_weight, w, sizeof w);
    kv("sampling weight", w);
    cli_fmt_weight(lw, w, sizeof w);
    snprintf(buf, sizeof buf, "%s%s", w, d.loss_weight < 0 ? " (the task's)" : "");
    kv("loss weight", buf);
    if (d.label_set[0]) {
        kv("label set", d.label_set);
    } else {
        upm_task t;
        if (upm_task_get(cat, d.task, &t, &c->err) == 0 && t.label_set[0]) {
            snprintf(buf, sizeof buf, "%s (the task's)", t.label_set);
            kv("label set", buf);
        }
    }
    kv("license", d.license);
    upm_related_names(cat, UPM_KIND_DATASET, name, buf, sizeof buf, NULL);
    kv("mixtures", buf);
    kv("notes", d.notes);
    return 0;
}

static int show_labels(cli *c, upm_catalog *cat, const char *name)
{
    upm_labelset ls;
    if (upm_labelset_get(cat, name, &ls, &c->err))
        return cli_fail(&c->err);
    if (c->json) {
        cli_print_json(upm_labelset_to_json(&ls));
        upm_labelset_free(&ls);
        return 0;
    }
    printf("label set %s: %zu labels%s\n", ls.name, ls.n, ls.synonyms ? ", with synonyms" : "");
    if (ls.notes[0])
        printf("  %s\n", ls.notes);
    if (ls.n) {
        static const char *const h[] = {"INDEX", "KEY", "NAMES"};
        cli_table *t = cli_table_new(3, h, "100");
        for (size_t i = 0; i < ls.n; i++) {
            char idx[32], names[4096] = "";
            snprintf(idx, sizeof idx, "%zu", i);
            for (int k = 0; k < ls.labels[i].n_names; k++) {
                size_t len = strlen(names);
                snprintf(names + len, sizeof names - len, "%s%s", k ? " | " : "", ls.labels[i].names[k]);
            }
            const char *cells[] = {idx, ls.labels[i].key ? ls.labels[i].key : "-", names};
            cli_table_add(t, cells);
        }
        printf("\n");
        cli_table_print(t, stdout);
    }
    upm_labelset_free(&ls);
    return 0;
}

int cmd_show(cli *c, int argc, char **argv)
{
    const char *pos[2];
    int npos;
    int rc = cli_parse(argc - 1, argv + 1, NULL, pos, 2, &npos, "show");
    if (rc)
        return rc;
    if (npos < 1)
        return cli_usage_error("show", "show needs a NAME");
    upm_kind kind = UPM_KIND_TASK;
    if (npos == 2 && upm_kind_parse(pos[0], &kind) != 0)
        return cli_usage_error("show", "unknown kind '%s' (task, dataset, labels or mixture)", pos[0]);
    const char *name = pos[npos - 1];
    upm_catalog *cat;
    if ((rc = cli_open(c, UPM_CAT_READONLY, &cat)))
        return rc;
    if (npos == 1) { /* find the kind: the name must be unambiguous */
        int found = 0;
        char kinds[64] = "";
        for (int k = UPM_KIND_TASK; k <= UPM_KIND_MIXTURE; k++) {
            int e = upm_exists(cat, (upm_kind)k, name, &c->err);
            if (e < 0) {
                upm_catalog_close(cat);
                return cli_fail(&c->err);
            }
            if (e) {
                kind = (upm_kind)k;
                size_t len = strlen(kinds);
                snprintf(kinds + len, sizeof kinds - len, "%s%s", found++ ? " and a " : "a ", upm_kind_name(kind));
            }
        }
        if (found != 1) {
            upm_catalog_close(cat);
            if (!found)
                upm_errf(&c->err, UPM_EINVAL, "nothing named '%s' in the catalog", name);
            else
                upm_errf(&c->err, UPM_EINVAL, "'%s' is ambiguous: there is %s; say '" PROG " show KIND %s'", name,
                         kinds, name);
            return cli_fail(&c->err);
        }
    }
    switch (kind) {
    case UPM_KIND_TASK: rc = show_task(c, cat, name); break;
    case UPM_KIND_DATASET: rc = show_dataset(c, cat, name); break;
    case UPM_KIND_LABELS: rc = show_labels(c, cat, name); break;
    case UPM_KIND_MIXTURE: rc = cli_show_mixture(c, cat, name); break;
    }
    upm_catalog_close(cat);
    return rc;
}
