/* JSON -> records: `upmoe-catalog import`. Every value is type-checked with a message that names its
 * path in the document (datasets[3].batch_size); records then go through the same validated add
 * functions as the CLI, so an import can't write what `add` would refuse. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "json.h"

typedef struct jctx {
    const char *what; /* the source, for messages */
    char path[128];   /* e.g. "datasets[3]" */
    upm_err *err;
} jctx;

static int bad(jctx *c, const char *key, const char *expected)
{
    return upm_errf(c->err, UPM_EINVAL, "%s: %s.%s: expected %s", c->what, c->path, key, expected);
}

/* Copies a string member; NULL or missing gives "" when optional. */
static int get_str(jctx *c, const cJSON *o, const char *key, int optional, char *buf, size_t n)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if ((!v || cJSON_IsNull(v)) && optional) {
        buf[0] = '\0';
        return 0;
    }
    if (!cJSON_IsString(v))
        return bad(c, key, optional ? "a string or null" : "a string");
    if (strlen(v->valuestring) >= n)
        return upm_errf(c->err, UPM_EINVAL, "%s: %s.%s: longer than %zu bytes", c->what, c->path, key, n - 1);
    snprintf(buf, n, "%s", v->valuestring);
    return 0;
}

/* A number member; null / missing gives dflt when optional. integer: must be a whole number. */
static int get_num(jctx *c, const cJSON *o, const char *key, int optional, int integer, double dflt, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if ((!v || cJSON_IsNull(v)) && optional) {
        *out = dflt;
        return 0;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || (integer && v->valuedouble != floor(v->valuedouble)))
        return bad(c, key, integer ? "an integer" : "a number");
    *out = v->valuedouble;
    return 0;
}

static int get_bool(jctx *c, const cJSON *o, const char *key, int *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsBool(v))
        return bad(c, key, "true or false");
    *out = cJSON_IsTrue(v);
    return 0;
}

static int get_enum(jctx *c, const cJSON *o, const char *key, int (*parse)(const char *, void *), void *out,
                    const char *expected)
{
    char s[64];
    int rc = get_str(c, o, key, 0, s, sizeof s);
    if (!rc && parse(s, out) != 0)
        rc = bad(c, key, expected);
    return rc;
}

static int parse_modality(const char *s, void *out) { return upm_modality_parse(s, out); }
static int parse_formulation(const char *s, void *out) { return upm_formulation_parse(s, out); }
static int parse_split(const char *s, void *out) { return upm_split_parse(s, out); }

static int import_task(upm_catalog *cat, jctx *c, const cJSON *o)
{
    upm_task t;
    upm_task_init(&t);
    double a = 0, b = 0, w = 0;
    int rc = get_str(c, o, "name", 0, t.name, sizeof t.name);
    if (!rc)
        rc = get_enum(c, o, "formulation", parse_formulation, &t.formulation, "label, pair, vocab-mlm or vocab-caption");
    if (!rc)
        rc = get_bool(c, o, "causal", &t.causal);
    const cJSON *inputs = cJSON_GetObjectItemCaseSensitive(o, "inputs");
    if (!rc && (!cJSON_IsArray(inputs) || cJSON_GetArraySize(inputs) > UPM_MAX_INPUTS))
        rc = bad(c, "inputs", "an array of at most 8 {field, modality} objects");
    const cJSON *in;
    const cJSON *in_list = rc ? NULL : inputs;
    cJSON_ArrayForEach(in, in_list) {
        upm_task_input *ti = &t.inputs[t.n_inputs++];
        if ((rc = get_str(c, in, "field", 0, ti->field, sizeof ti->field)) ||
            (rc = get_enum(c, in, "modality", parse_modality, &ti->modality, "image, video or text")))
            break;
    }
    if (!rc)
        rc = get_str(c, o, "target_field", 1, t.target_field, sizeof t.target_field);
    if (!rc)
        rc = get_enum(c, o, "target_modality", parse_modality, &t.target_modality, "image, video or text");
    if (!rc)
        rc = get_str(c, o, "label_set", 1, t.label_set, sizeof t.label_set);
    if (!rc)
        rc = get_str(c, o, "prompt", 1, t.prompt, sizeof t.prompt);
    if (!rc && !(rc = get_num(c, o, "max_text_len", 0, 1, 0, &a)) && !(rc = get_num(c, o, "max_target_len", 0, 1, 0, &b)) &&
        !(rc = get_num(c, o, "loss_weight", 0, 0, 0, &w))) {
        t.max_text_len = fabs(a) < 1e6 ? (int)a : -1;
        t.max_target_len = fabs(b) < 1e6 ? (int)b : -1;
        t.loss_weight = w;
    }
    if (!rc)
        rc = get_str(c, o, "notes", 1, t.notes, sizeof t.notes);
    return rc ? rc : upm_task_add(cat, &t, c->err);
}

/* "augment": null, missing or "" = the run's (exports before schema version 6 have no such key). */
static int get_augment(jctx *c, const cJSON *o, upm_dataset *d)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "augment");
    if (!v || cJSON_IsNull(v))
        return 0;
    if (cJSON_IsString(v) && upm_augment_parse(v->valuestring, &d->augment) == 0)
        return 0;
    char got[96];
    if (cJSON_IsString(v))
        snprintf(got, sizeof got, "unknown augmentation '%.64s%s'", v->valuestring,
                 strlen(v->valuestring) > 64 ? "..." : "");
    else
        snprintf(got, sizeof got, "the augmentation must be a string or null");
    return upm_errf(c->err, UPM_EINVAL, "%s: %s.augment: dataset '%s': %s (expected \"paper\", \"light\", \"none\", "
                    "or null or \"\" for the run's --augment)", c->what, c->path, d->name, got);
}

static int import_dataset(upm_catalog *cat, jctx *c, const cJSON *o)
{
    upm_dataset d;
    upm_dataset_init(&d);
    double samples = -1, shards = -1, batch = 0;
    int rc = get_str(c, o, "name", 0, d.name, sizeof d.name);
    if (!rc)
        rc = get_str(c, o, "task", 0, d.task, sizeof d.task);
    if (!rc)
        rc = get_enum(c, o, "split", parse_split, &d.split, "train, val or test");
    if (!rc)
        rc = get_str(c, o, "url", 1, d.url_pattern, sizeof d.url_pattern);
    if (!rc && !(rc = get_num(c, o, "num_samples", 1, 1, -1, &samples)) &&
        !(rc = get_num(c, o, "num_shards", 1, 1, -1, &shards))) {
        if (samples < -1 || samples > 9e15 || shards < -1 || shards > 9e15)
            rc = bad(c, "num_samples", "counts >= 0");
        d.num_samples = (int64_t)samples;
        d.num_shards = (int64_t)shards;
    }
    if (!rc)
        rc = get_num(c, o, "sampling_weight", 0, 0, 0, &d.sampling_weight);
    if (!rc)
        rc = get_num(c, o, "loss_weight", 1, 0, -1, &d.loss_weight);
    if (!rc && d.loss_weight < 0 && cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(o, "loss_weight")))
        rc = bad(c, "loss_weight", "a number >= 0 or null");
    if (!rc && !(rc = get_num(c, o, "batch_size", 0, 1, 0, &batch)))
        d.batch_size = fabs(batch) < 1e7 ? (int)batch : -1;
    if (!rc)
        rc = get_str(c, o, "label_set", 1, d.label_set, sizeof d.label_set);
    if (!rc)
        rc = get_augment(c, o, &d);
    if (!rc)
        rc = get_str(c, o, "license", 1, d.license, sizeof d.license);
    if (!rc)
        rc = get_str(c, o, "notes", 1, d.notes, sizeof d.notes);
    return rc ? rc : upm_dataset_add(cat, &d, c->err);
}

static int import_labelset(upm_catalog *cat, jctx *c, const cJSON *o)
{
    upm_labelset ls;
    memset(&ls, 0, sizeof ls);
    int rc = get_str(c, o, "name", 0, ls.name, sizeof ls.name);
    if (!rc)
        rc = get_bool(c, o, "synonyms", &ls.synonyms);
    if (!rc)
        rc = get_str(c, o, "notes", 1, ls.notes, sizeof ls.notes);
    const cJSON *labels = cJSON_GetObjectItemCaseSensitive(o, "labels"), *l;
    if (!rc && !cJSON_IsArray(labels))
        rc = bad(c, "labels", "an array of {key, names} objects");
    const cJSON *label_list = rc ? NULL : labels;
    cJSON_ArrayForEach(l, label_list) {
        const cJSON *key = cJSON_GetObjectItemCaseSensitive(l, "key");
        const cJSON *names = cJSON_GetObjectItemCaseSensitive(l, "names"), *nm;
        const char *list[64];
        int n = 0;
        if (!(cJSON_IsNull(key) || !key || cJSON_IsString(key)) || !cJSON_IsArray(names) ||
            cJSON_GetArraySize(names) < 1 || cJSON_GetArraySize(names) > 64) {
            rc = bad(c, "labels[]", "{\"key\": string or null, \"names\": [1 to 64 strings]}");
            break;
        }
        cJSON_ArrayForEach(nm, names) {
            if (!cJSON_IsString(nm)) {
                rc = bad(c, "labels[].names[]", "a string");
                break;
            }
            list[n++] = nm->valuestring;
        }
        if (rc || (rc = upm_labelset_push(&ls, cJSON_IsString(key) ? key->valuestring : NULL, list, n, c->err)))
            break;
    }
    if (!rc)
        rc = upm_labelset_add(cat, &ls, 0, c->err);
    upm_labelset_free(&ls);
    return rc;
}

static int import_mixture(upm_catalog *cat, jctx *c, const cJSON *o)
{
    char name[UPM_NAME_MAX + 1], notes[UPM_NOTES_MAX + 1];
    int rc = get_str(c, o, "name", 0, name, sizeof name);
    if (!rc)
        rc = get_str(c, o, "notes", 1, notes, sizeof notes);
    const cJSON *members = cJSON_GetObjectItemCaseSensitive(o, "datasets"), *m;
    if (!rc && !cJSON_IsArray(members))
        rc = bad(c, "datasets", "an array of {dataset, sampling_weight, loss_weight} objects");
    if (!rc)
        rc = upm_mixture_create(cat, name, notes, c->err);
    const cJSON *member_list = rc ? NULL : members;
    cJSON_ArrayForEach(m, member_list) {
        upm_mixture_member mm;
        if ((rc = get_str(c, m, "dataset", 0, mm.dataset, sizeof mm.dataset)) ||
            (rc = get_num(c, m, "sampling_weight", 1, 0, -1, &mm.sampling_weight)) ||
            (rc = get_num(c, m, "loss_weight", 1, 0, -1, &mm.loss_weight)) ||
            (rc = upm_mixture_add(cat, name, &mm, c->err)))
            break;
    }
    return rc;
}

typedef int (*import_fn)(upm_catalog *, jctx *, const cJSON *);

static int import_array(upm_catalog *cat, jctx *c, const cJSON *doc, const char *key, import_fn fn)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(doc, key), *o;
    if (!arr)
        return 0;
    if (!cJSON_IsArray(arr))
        return upm_errf(c->err, UPM_EINVAL, "%s: %s: expected an array", c->what, key);
    int i = 0, rc = 0;
    cJSON_ArrayForEach(o, arr) {
        snprintf(c->path, sizeof c->path, "%s[%d]", key, i++);
        if (!cJSON_IsObject(o))
            return upm_errf(c->err, UPM_EINVAL, "%s: %s: expected an object", c->what, c->path);
        if ((rc = fn(cat, c, o))) {
            /* Say where in the file the record was, unless the message already does. */
            if (!strstr(c->err->msg, c->path)) {
                char msg[sizeof c->err->msg];
                snprintf(msg, sizeof msg, "%s", c->err->msg);
                upm_errf(c->err, rc, "%s: %s: %s", c->what, c->path, msg);
            }
            return rc;
        }
    }
    return 0;
}

int upm_catalog_import(upm_catalog *cat, const cJSON *doc, const char *what, upm_err *err)
{
    jctx c = {what, "", err};
    const cJSON *format = cJSON_GetObjectItemCaseSensitive(doc, "format");
    const cJSON *version = cJSON_GetObjectItemCaseSensitive(doc, "schema_version");
    if (!cJSON_IsObject(doc) || !cJSON_IsString(format) || strcmp(format->valuestring, UPM_EXPORT_FORMAT) != 0)
        return upm_errf(err, UPM_EINVAL, "%s is not an upmoe catalog export (no \"format\": \"%s\")", what,
                        UPM_EXPORT_FORMAT);
    if (!cJSON_IsNumber(version) || version->valuedouble < 1)
        return upm_errf(err, UPM_EINVAL, "%s: schema_version: expected a positive integer", what);
    if (version->valuedouble > UPM_CATALOG_SCHEMA_VERSION)
        return upm_errf(err, UPM_EINVAL, "%s has schema version %d, newer than this program knows (%d): upgrade "
                        "upmoe", what, version->valueint, UPM_CATALOG_SCHEMA_VERSION);
    int rc = import_array(cat, &c, doc, "label_sets", import_labelset);
    if (!rc)
        rc = import_array(cat, &c, doc, "tasks", import_task);
    if (!rc)
        rc = import_array(cat, &c, doc, "datasets", import_dataset);
    if (!rc)
        rc = import_array(cat, &c, doc, "mixtures", import_mixture);
    /* A bad value inside a file is not a malformed command-line argument. */
    if (rc == UPM_EUSAGE)
        err->code = rc = UPM_EINVAL;
    return rc;
}
