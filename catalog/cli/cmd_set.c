/* upmoe-catalog set DATASET key=value...: change a dataset. All pairs are applied to a copy, the copy
 * is validated as a whole, and one UPDATE writes it: a bad pair changes nothing. */
#include <stdint.h>
#include <string.h>

#include "cli.h"
#include "text.h"

typedef struct set_job {
    const char *name;
    int npairs;
    char **pairs;
} set_job;

/* Applies one key=value to d; usage errors are returned as UPM_EUSAGE in err. */
static int apply_pair(upm_dataset *d, const char *key, const char *val, int *url_changed, upm_err *err)
{
    int64_t v;
    double w;
#define COPY(field, what)                                                                         \
    do {                                                                                          \
        if (strlen(val) >= sizeof d->field)                                                       \
            return upm_errf(err, UPM_EUSAGE, "%s is longer than %zu bytes", what, sizeof d->field - 1); \
        snprintf(d->field, sizeof d->field, "%s", val);                                           \
    } while (0)
    if (strcmp(key, "url") == 0) {
        COPY(url_pattern, "url");
        if (cli_absolute_url(d->url_pattern, sizeof d->url_pattern))
            return upm_errf(err, UPM_EUSAGE, "cannot use url '%s'", val);
        *url_changed = 1;
    } else if (strcmp(key, "task") == 0) {
        COPY(task, "task");
    } else if (strcmp(key, "split") == 0) {
        if (upm_split_parse(val, &d->split))
            return upm_errf(err, UPM_EUSAGE, "unknown split '%s' (train, val or test)", val);
    } else if (strcmp(key, "augment") == 0) {
        if (strcmp(val, "inherit") == 0)
            d->augment = UPM_AUGMENT_INHERIT;
        else if (!val[0] || upm_augment_parse(val, &d->augment))
            return upm_errf(err, UPM_EUSAGE, "unknown augmentation '%s' (paper, light, none or inherit)", val);
    } else if (strcmp(key, "samples") == 0 || strcmp(key, "num_samples") == 0) {
        if (upm_parse_i64(val, &v) || v < 0)
            return upm_errf(err, UPM_EUSAGE, "samples '%s' is not a count >= 0", val);
        d->num_samples = v;
    } else if (strcmp(key, "shards") == 0 || strcmp(key, "num_shards") == 0) {
        if (upm_parse_i64(val, &v) || v < 1)
            return upm_errf(err, UPM_EUSAGE, "shards '%s' is not a count >= 1", val);
        d->num_shards = v;
    } else if (strcmp(key, "weight") == 0 || strcmp(key, "sampling_weight") == 0) {
        if (upm_parse_double(val, &w) || w < 0)
            return upm_errf(err, UPM_EUSAGE, "weight '%s' is not a number >= 0", val);
        d->sampling_weight = w;
    } else if (strcmp(key, "loss_weight") == 0) {
        if (strcmp(val, "inherit") == 0)
            d->loss_weight = -1;
        else if (upm_parse_double(val, &w) || w < 0)
            return upm_errf(err, UPM_EUSAGE, "loss_weight '%s' is not a number >= 0 (or 'inherit')", val);
        else
            d->loss_weight = w;
    } else if (strcmp(key, "batch") == 0 || strcmp(key, "batch_size") == 0) {
        if (upm_parse_i64(val, &v) || v < 1 || v > 1000000)
            return upm_errf(err, UPM_EUSAGE, "batch '%s' is not an integer in 1..1000000", val);
        d->batch_size = (int)v;
    } else if (strcmp(key, "labels") == 0 || strcmp(key, "label_set") == 0) {
        if (strcmp(val, "inherit") == 0)
            d->label_set[0] = '\0';
        else
            COPY(label_set, "labels");
    } else if (strcmp(key, "license") == 0) {
        COPY(license, "license");
    } else if (strcmp(key, "notes") == 0) {
        COPY(notes, "notes");
    } else {
        return upm_errf(err, UPM_EUSAGE, "unknown key '%s' (url, task, split, augment, samples, shards, weight, "
                        "loss_weight, batch, labels, license, notes)", key);
    }
#undef COPY
    return 0;
}

static int set_fn(upm_catalog *cat, void *p, upm_err *err)
{
    set_job *j = p;
    upm_dataset d;
    int rc = upm_dataset_get(cat, j->name, &d, err), url_changed = 0, shards_given = 0;
    for (int i = 0; !rc && i < j->npairs; i++) {
        char *eq = strchr(j->pairs[i], '=');
        *eq = '\0';
        shards_given |= strcmp(j->pairs[i], "shards") == 0 || strcmp(j->pairs[i], "num_shards") == 0;
        rc = apply_pair(&d, j->pairs[i], eq + 1, &url_changed, err);
        *eq = '=';
    }
    if (rc)
        return rc;
    if (url_changed && !shards_given)
        d.num_shards = -1; /* recounted from the new pattern */
    return upm_dataset_update(cat, &d, err);
}

int cmd_set(cli *c, int argc, char **argv)
{
    const char *pos[64];
    int npos;
    int rc = cli_parse(argc - 1, argv + 1, NULL, pos, 64, &npos, "set");
    if (rc)
        return rc;
    if (npos < 2)
        return cli_usage_error("set", "set needs DATASET and at least one KEY=VALUE");
    for (int i = 1; i < npos; i++) {
        if (!strchr(pos[i], '=') || pos[i][0] == '=')
            return cli_usage_error("set", "'%s' is not KEY=VALUE", pos[i]);
        /* A repeated key is most often an unquoted URL pattern that the shell brace-expanded. */
        for (int j = 1; j < i; j++)
            if (strcspn(pos[i], "=") == strcspn(pos[j], "=") && strncmp(pos[i], pos[j], strcspn(pos[i], "=")) == 0)
                return cli_usage_error("set", "key '%.*s' is given twice (quote URL patterns: the shell expands "
                                       "braces)", (int)strcspn(pos[i], "="), pos[i]);
    }
    set_job job = {pos[0], npos - 1, (char **)(pos + 1)};
    upm_catalog *cat;
    if ((rc = cli_open(c, 0, &cat)))
        return rc;
    rc = cli_write(c, cat, set_fn, &job);
    upm_catalog_close(cat);
    if (!rc)
        printf("updated dataset %s\n", pos[0]);
    return rc;
}
