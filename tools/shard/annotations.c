/* upmoe-shard annotations: samples from a CSV file (header row naming the columns) or JSON Lines (one
 * object per line). Media paths are relative to the annotation file's folder; class labels are names
 * (indexed in sorted order, or by a --classes file) or, with --numeric-labels, the indices themselves. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "shard.h"
#include "text.h"

#define LABEL_MAX 512 /* bytes of one class name, as the catalog's label sets allow */

typedef struct named {
    const char *name;
    size_t index;
} named;

/* What reading one annotation file needs besides the list. */
typedef struct ctx {
    const char *file;
    const upm_shard_input *in;
    const char *fields[2]; /* wanted fields: media path (or NULL for text) and the text/label field */
    char *dir;             /* the annotation file's folder, with a trailing '/' ("" for the cwd) */
    named *fixed;          /* --classes, sorted by name */
    size_t nfixed;
    upm_shard_list *l;
} ctx;

static int cmp_named(const void *a, const void *b) { return strcmp(((const named *)a)->name, ((const named *)b)->name); }

static int is_class(upm_shard_kind k) { return k == UPM_KIND_IMAGE_CLASS || k == UPM_KIND_VIDEO_CLASS; }

/* A class name from a label file, a CSV cell or a JSON string: non-empty UTF-8 without control bytes. */
static int check_label(const char *where, const char *s, upm_err *err)
{
    if (!*s)
        return upm_errf(err, UPM_EINVAL, "%sempty label", where);
    if (strlen(s) > LABEL_MAX)
        return upm_errf(err, UPM_EINVAL, "%slabel longer than %d bytes", where, LABEL_MAX);
    if (upm_has_control(s) || !upm_utf8_valid(s, strlen(s), NULL))
        return upm_errf(err, UPM_EINVAL, "%slabel '%s' is not UTF-8 text without control characters", where, s);
    return 0;
}

/* --classes FILE: one name per line; the line number (from 0) is the index. */
static int read_fixed_classes(ctx *c, upm_err *err)
{
    char *text;
    size_t n;
    const char *file = c->in->classes_file;
    int rc = upm_read_file(file, &text, &n, err);
    if (rc)
        return rc;
    char where[1100];
    uint64_t line = 0;
    for (char *p = text; !rc && p < text + n;) {
        char *nl = memchr(p, '\n', (size_t)(text + n - p));
        char *e = nl ? nl : text + n;
        line++;
        if (e > p && e[-1] == '\r')
            e[-1] = '\0';
        *e = '\0';
        rc = check_label(upm_shard_where(where, sizeof where, file, line), p, err);
        if (!rc) {
            void *q = realloc(c->l->classes, (c->l->nclasses + 1) * sizeof *c->l->classes);
            char *name = q ? strdup(p) : NULL;
            if (q)
                c->l->classes = q;
            if (!name)
                rc = upm_errf(err, UPM_ENOMEM, "out of memory");
            else
                c->l->classes[c->l->nclasses++] = name;
        }
        p = e + 1;
    }
    free(text);
    if (!rc && c->l->nclasses == 0)
        rc = upm_errf(err, UPM_EINVAL, "%s: no class names", file);
    if (!rc && !(c->fixed = malloc(c->l->nclasses * sizeof *c->fixed)))
        rc = upm_errf(err, UPM_ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < c->l->nclasses; i++)
        c->fixed[i] = (named){c->l->classes[i], i};
    if (!rc) {
        c->nfixed = c->l->nclasses;
        qsort(c->fixed, c->nfixed, sizeof *c->fixed, cmp_named);
        for (size_t i = 1; !rc && i < c->nfixed; i++)
            if (strcmp(c->fixed[i - 1].name, c->fixed[i].name) == 0)
                rc = upm_errf(err, UPM_EINVAL, "%s: class '%s' is listed twice", file, c->fixed[i].name);
    }
    return rc;
}

/* The .cls text of a label: the index itself (--numeric-labels), its line in --classes, or (names
 * indexed later, once all are known) the name for now. */
static int label_text(ctx *c, const char *where, const char *label, char *buf, size_t bufsize, upm_err *err)
{
    if (c->in->numeric_labels) {
        int64_t v;
        if (upm_parse_i64(label, &v) != 0 || v < 0)
            return upm_errf(err, UPM_EINVAL, "%slabel '%s' is not a class index (a whole number >= 0)", where, label);
        if (c->nfixed && (uint64_t)v >= c->nfixed)
            return upm_errf(err, UPM_EINVAL, "%sclass index %lld is out of range: %s has %zu classes", where,
                            (long long)v, c->in->classes_file, c->nfixed);
        snprintf(buf, bufsize, "%lld", (long long)v);
        return 0;
    }
    int rc = check_label(where, label, err);
    if (rc || !c->nfixed) {
        snprintf(buf, bufsize, "%s", label);
        return rc;
    }
    named key = {label, 0}, *hit = bsearch(&key, c->fixed, c->nfixed, sizeof *c->fixed, cmp_named);
    if (!hit)
        return upm_errf(err, UPM_EINVAL, "%slabel '%s' is not a class of %s", where, label, c->in->classes_file);
    snprintf(buf, bufsize, "%zu", hit->index);
    return 0;
}

/* One annotation row: values[0] the media path (NULL for text), values[1] the caption, text or label. */
static int add_row(ctx *c, uint64_t line, const char *const values[2], upm_err *err)
{
    char where[1100], ext[UPM_SHARD_EXT_MAX], lbl[600];
    upm_shard_where(where, sizeof where, c->file, line);
    const char *v = values[1];
    int cls = is_class(c->in->kind), rc = 0;
    if (!cls && !*v)
        return upm_errf(err, UPM_EINVAL, "%sempty %s", where, c->fields[1]);
    if (!cls && !upm_utf8_valid(v, strlen(v), NULL))
        return upm_errf(err, UPM_EBADDATA, "%s%s is not valid UTF-8", where, c->fields[1]);
    if (cls && (rc = label_text(c, where, v, lbl, sizeof lbl, err)) != 0)
        return rc;
    upm_shard_sample *s = upm_shard_list_push(c->l);
    if (!s)
        return upm_errf(err, UPM_ENOMEM, "out of memory");
    s->src = c->file;
    s->line = line;
    if (values[0]) {
        const char *rel = values[0];
        if (!*rel)
            return upm_errf(err, UPM_EINVAL, "%sempty %s", where, c->fields[0]);
        size_t n = strlen(c->dir) + strlen(rel) + 1;
        char *path = malloc(n);
        if (!path)
            return upm_errf(err, UPM_ENOMEM, "out of memory");
        snprintf(path, n, "%s%s", rel[0] == '/' ? "" : c->dir, rel);
        rc = upm_shard_media_ext(c->in->kind, path, ext, where, err);
        if (!rc)
            rc = upm_shard_member_file(&s->m[s->n++], ext, path, where, err);
        free(path);
        if (!rc && c->in->key_from_path)
            rc = upm_shard_set_keypath(s, rel, err);
    }
    if (!rc) {
        const char *bytes = cls ? lbl : v;
        rc = upm_shard_member_bytes(&s->m[s->n++], cls ? "cls" : "txt", bytes, strlen(bytes), err);
    }
    return rc;
}

static int read_csv(ctx *c, const char *text, size_t n, upm_err *err)
{
    upm_csv csv;
    upm_csv_init(&csv, c->file, text, n);
    uint64_t line = 0;
    int rc = upm_csv_next(&csv, &line, err);
    if (rc == 0)
        rc = upm_errf(err, UPM_EINVAL, "%s: empty file (expected a header row naming the columns)", c->file);
    size_t ncols = csv.nfields, col[2] = {0, 0};
    for (int f = 0; rc == 1 && f < 2; f++) {
        if (!c->fields[f])
            continue;
        size_t i = 0;
        while (i < ncols && strcmp(csv.fields[i], c->fields[f]) != 0)
            i++;
        if (i == ncols) {
            char cols[600] = "";
            for (size_t k = 0; k < ncols && strlen(cols) < 500; k++)
                snprintf(cols + strlen(cols), sizeof cols - strlen(cols), "%s%s", k ? ", " : "", csv.fields[k]);
            rc = upm_errf(err, UPM_EINVAL, "%s:%llu: no column '%s' (the header has: %s)", c->file,
                          (unsigned long long)line, c->fields[f], cols);
        }
        col[f] = i;
    }
    while (rc == 1 && (rc = upm_csv_next(&csv, &line, err)) == 1) {
        if (csv.nfields != ncols) {
            rc = upm_errf(err, UPM_EBADDATA, "%s:%llu: row has %zu field%s, the header has %zu", c->file,
                          (unsigned long long)line, csv.nfields, csv.nfields == 1 ? "" : "s", ncols);
            break;
        }
        const char *values[2] = {c->fields[0] ? csv.fields[col[0]] : NULL, csv.fields[col[1]]};
        rc = add_row(c, line, values, err);
        if (rc == 0)
            rc = 1;
    }
    upm_csv_free(&csv);
    return rc;
}

/* A field of a JSON line as text: strings as they are, whole numbers (class indices) in decimal. */
static int json_field(ctx *c, uint64_t line, const cJSON *o, int f, char *num, size_t numsize, const char **out,
                      upm_err *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, c->fields[f]);
    if (!v)
        return upm_errf(err, UPM_EINVAL, "%s:%llu: no field '%s'", c->file, (unsigned long long)line, c->fields[f]);
    if (cJSON_IsString(v)) {
        *out = v->valuestring;
        return 0;
    }
    if (f == 1 && is_class(c->in->kind) && cJSON_IsNumber(v) && v->valuedouble > -1e15 &&
        v->valuedouble < 1e15 && v->valuedouble == (double)(int64_t)v->valuedouble) {
        snprintf(num, numsize, "%lld", (long long)v->valuedouble);
        *out = num;
        return 0;
    }
    return upm_errf(err, UPM_EINVAL, "%s:%llu: field '%s' is not a string", c->file, (unsigned long long)line,
                    c->fields[f]);
}

static int read_jsonl(ctx *c, char *text, size_t n, upm_err *err)
{
    uint64_t line = 0;
    int rc = 0;
    char *p = text;
    if (n >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
        p += 3;
    while (!rc && p < text + n) {
        char *nl = memchr(p, '\n', (size_t)(text + n - p));
        char *e = nl ? nl : text + n;
        line++;
        *e = '\0';
        const char *q = p;
        while (*q == ' ' || *q == '\t' || *q == '\r')
            q++;
        if (*q) {
            const char *end = NULL;
            cJSON *o = cJSON_ParseWithLengthOpts(p, (size_t)(e - p), &end, 0);
            while (o && end && (*end == ' ' || *end == '\t' || *end == '\r'))
                end++;
            if (!o || (end && end < e)) {
                long col = (long)((o ? end : cJSON_GetErrorPtr()) - p) + 1;
                rc = upm_errf(err, UPM_EBADDATA, "%s:%llu: invalid JSON at column %ld", c->file,
                              (unsigned long long)line, col < 1 ? 1 : col);
            } else if (!cJSON_IsObject(o)) {
                rc = upm_errf(err, UPM_EBADDATA, "%s:%llu: not a JSON object", c->file, (unsigned long long)line);
            } else {
                const char *values[2] = {NULL, NULL};
                char num[32];
                rc = c->fields[0] ? json_field(c, line, o, 0, num, sizeof num, &values[0], err) : 0;
                if (!rc)
                    rc = json_field(c, line, o, 1, num, sizeof num, &values[1], err);
                if (!rc)
                    rc = add_row(c, line, values, err);
            }
            cJSON_Delete(o);
        }
        p = e + 1;
    }
    return rc;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Names indexed in sorted order, once every row is read: until then the .cls members hold the names. */
static int index_names(upm_shard_list *l, upm_err *err)
{
    char **names = malloc((l->n ? l->n : 1) * sizeof *names);
    if (!names)
        return upm_errf(err, UPM_ENOMEM, "out of memory");
    for (size_t i = 0; i < l->n; i++)
        names[i] = l->v[i].m[1].data;
    qsort(names, l->n, sizeof *names, cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < l->n; i++)
        if (!u || strcmp(names[u - 1], names[i]) != 0)
            names[u++] = names[i];
    int rc = 0;
    if (!(l->classes = calloc(u ? u : 1, sizeof *l->classes)))
        rc = upm_errf(err, UPM_ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < u; i++, l->nclasses++)
        if (!(l->classes[i] = strdup(names[i])))
            rc = upm_errf(err, UPM_ENOMEM, "out of memory");
    free(names);
    for (size_t i = 0; !rc && i < l->n; i++) {
        upm_shard_member *m = &l->v[i].m[1];
        char **hit = bsearch(&m->data, l->classes, l->nclasses, sizeof *l->classes, cmp_str);
        char txt[32];
        snprintf(txt, sizeof txt, "%zu", (size_t)(hit - l->classes));
        free(m->data);
        m->data = NULL;
        rc = upm_shard_member_bytes(m, "cls", txt, strlen(txt), err);
    }
    return rc;
}

/* The format from --format or the file's extension. */
static int pick_format(const char *file, const char *format, int *jsonl, upm_err *err)
{
    const char *dot = strrchr(file, '.');
    const char *f = format ? format : dot && !strchr(dot, '/') ? dot + 1 : "";
    if (strcmp(f, "csv") == 0 || strcmp(f, "CSV") == 0)
        *jsonl = 0;
    else if (strcmp(f, "jsonl") == 0 || strcmp(f, "ndjson") == 0 || strcmp(f, "json") == 0 || strcmp(f, "JSONL") == 0)
        *jsonl = 1;
    else if (format)
        return upm_errf(err, UPM_EUSAGE, "unknown --format '%s' (csv or jsonl)", format);
    else
        return upm_errf(err, UPM_EUSAGE, "cannot tell the format of %s from its name: give --format csv or jsonl",
                        file);
    return 0;
}

int upm_shard_read_annotations(const char *file, const upm_shard_input *in, upm_shard_list *l, upm_err *err)
{
    int jsonl = 0, rc = pick_format(file, in->format, &jsonl, err);
    if (rc)
        return rc;
    ctx c = {.in = in, .l = l};
    int caption = in->kind == UPM_KIND_IMAGE_CAPTION || in->kind == UPM_KIND_VIDEO_CAPTION;
    c.fields[0] = in->kind == UPM_KIND_TEXT ? NULL : in->path_field ? in->path_field : "path";
    c.fields[1] = is_class(in->kind) ? (in->label_field ? in->label_field : "label")
                                     : (in->text_field ? in->text_field : caption ? "caption" : "text");
    if (!(c.file = upm_shard_list_source(l, file)))
        return upm_errf(err, UPM_ENOMEM, "out of memory");
    const char *slash = strrchr(file, '/');
    size_t dlen = slash ? (size_t)(slash - file) + 1 : 0;
    if (!(c.dir = malloc(dlen + 1)))
        return upm_errf(err, UPM_ENOMEM, "out of memory");
    memcpy(c.dir, file, dlen);
    c.dir[dlen] = '\0';
    char *text = NULL;
    size_t n = 0;
    if (in->classes_file && is_class(in->kind))
        rc = read_fixed_classes(&c, err);
    if (!rc)
        rc = upm_read_file(file, &text, &n, err);
    if (!rc)
        rc = jsonl ? read_jsonl(&c, text, n, err) : read_csv(&c, text, n, err);
    if (rc > 0)
        rc = 0;
    if (!rc && l->n == 0)
        rc = upm_errf(err, UPM_EINVAL, "%s: no samples", file);
    if (!rc && is_class(in->kind) && !in->numeric_labels && !c.nfixed)
        rc = index_names(l, err);
    free(text);
    free(c.dir);
    free(c.fixed);
    return rc;
}
