/* Label sets: ordered class names or answer words (one row per class, index = class id), each with
 * optional synonyms (ImageNet-21k: one WordNet synonym is picked per class per batch) and an optional
 * key (a WordNet id, so repeated short names such as "crane" stay distinct). */
#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog_ops.h"
#include "sqlutil.h"
#include "text.h"

#define LABEL_MAX 512 /* bytes of one label name */

void upm_labelset_free(upm_labelset *ls)
{
    for (size_t i = 0; i < ls->n; i++) {
        free(ls->labels[i].key);
        for (int k = 0; k < ls->labels[i].n_names; k++)
            free(ls->labels[i].names[k]);
        free(ls->labels[i].names);
    }
    free(ls->labels);
    ls->labels = NULL;
    ls->n = 0;
}

int upm_labelset_push(upm_labelset *ls, const char *key, const char *const *names, int n_names, upm_err *err)
{
    if ((ls->n & (ls->n - 1)) == 0) { /* grow at powers of two */
        void *p = realloc(ls->labels, (ls->n ? ls->n * 2 : 16) * sizeof *ls->labels);
        if (!p)
            return upm_errf(err, UPM_ENOMEM, "out of memory reading labels");
        ls->labels = p;
    }
    upm_label *l = &ls->labels[ls->n];
    memset(l, 0, sizeof *l);
    l->names = calloc((size_t)n_names, sizeof *l->names);
    l->key = key ? strdup(key) : NULL;
    if (!l->names || (key && !l->key)) {
        free(l->names);
        free(l->key);
        return upm_errf(err, UPM_ENOMEM, "out of memory reading labels");
    }
    ls->n++;
    for (int k = 0; k < n_names; k++) {
        if (!(l->names[k] = strdup(names[k])))
            return upm_errf(err, UPM_ENOMEM, "out of memory reading labels");
        l->n_names = k + 1;
    }
    return 0;
}

static char *trim(char *s)
{
    while (*s == ' ')
        s++;
    size_t n = strlen(s);
    while (n && s[n - 1] == ' ')
        s[--n] = '\0';
    return s;
}

/* Parses one line (no newline) into ls. */
static int parse_line(const char *path, size_t lineno, char *line, int synonyms, int keyed, upm_labelset *ls,
                      upm_err *err)
{
    char *key = NULL, *rest = line;
    if (keyed) {
        char *tab = strchr(line, '\t');
        if (!tab)
            return upm_errf(err, UPM_EINVAL, "%s:%zu: expected KEY<TAB>label (--keys)", path, lineno);
        *tab = '\0';
        key = trim(line);
        rest = tab + 1;
        if (!*key)
            return upm_errf(err, UPM_EINVAL, "%s:%zu: empty key", path, lineno);
    }
    for (char *p = rest; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return upm_errf(err, UPM_EINVAL, "%s:%zu: control character in label (byte %ld)", path, lineno,
                            (long)(p - line) + 1);
    const char *names[64];
    int n = 0;
    for (char *tok = rest, *next; tok; tok = next) {
        next = synonyms ? strchr(tok, ',') : NULL;
        if (next)
            *next++ = '\0';
        char *name = trim(tok);
        if (!*name)
            return upm_errf(err, UPM_EINVAL, "%s:%zu: empty label%s", path, lineno, synonyms ? " or synonym" : "");
        if (strlen(name) > LABEL_MAX)
            return upm_errf(err, UPM_EINVAL, "%s:%zu: label longer than %d bytes", path, lineno, LABEL_MAX);
        if (n == 64)
            return upm_errf(err, UPM_EINVAL, "%s:%zu: more than 64 synonyms", path, lineno);
        names[n++] = name;
    }
    return upm_labelset_push(ls, key, names, n, err);
}

int upm_labelset_read_file(const char *path, int synonyms, int keyed, upm_labelset *ls, upm_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return upm_errf(err, UPM_EINVAL, "cannot read label file %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t len;
    int rc = 0;
    ls->synonyms = synonyms;
    while (!rc && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t bad;
        if (memchr(line, '\0', (size_t)len))
            rc = upm_errf(err, UPM_EINVAL, "%s:%zu: NUL byte: this is not a text file", path, lineno);
        else if (!upm_utf8_valid(line, (size_t)len, &bad))
            rc = upm_errf(err, UPM_EINVAL, "%s:%zu: not valid UTF-8 (byte %zu of the line)", path, lineno, bad + 1);
        if (rc)
            break;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        char *text = line;
        if (lineno == 1 && strncmp(text, "\xef\xbb\xbf", 3) == 0) /* UTF-8 byte order mark */
            text += 3;
        rc = parse_line(path, lineno, text, synonyms, keyed, ls, err);
    }
    if (!rc && ferror(f))
        rc = upm_errf(err, UPM_EIO, "error reading %s: %s", path, strerror(errno));
    free(line);
    fclose(f);
    if (!rc && ls->n == 0)
        rc = upm_errf(err, UPM_EINVAL, "label file %s has no labels", path);
    return rc;
}

static int insert_labels(upm_catalog *cat, sqlite3_int64 set_id, const upm_labelset *ls, upm_err *err)
{
    sqlite3_stmt *st;
    int rc = upm_sql_prepare(cat, "INSERT INTO labels (label_set_id, idx, key, names) VALUES (?, ?, ?, ?)", &st, err);
    for (size_t i = 0; !rc && i < ls->n; i++) {
        const upm_label *l = &ls->labels[i];
        cJSON *arr = cJSON_CreateStringArray((const char *const *)l->names, l->n_names);
        char *json = arr ? cJSON_PrintUnformatted(arr) : NULL;
        cJSON_Delete(arr);
        if (!json) {
            rc = upm_errf(err, UPM_ENOMEM, "out of memory storing labels");
            break;
        }
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, set_id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)i);
        upm_sql_bind_text_or_null(st, 3, l->key);
        sqlite3_bind_text(st, 4, json, -1, SQLITE_TRANSIENT);
        cJSON_free(json);
        int step = sqlite3_step(st);
        if (step == SQLITE_CONSTRAINT || (step & 0xff) == SQLITE_CONSTRAINT)
            rc = upm_errf(err, UPM_EINVAL, "label set '%s': label %zu: key '%s' is used twice", ls->name, i + 1,
                          l->key ? l->key : "");
        else if (step != SQLITE_DONE)
            rc = upm_catalog_sqlerr(cat, err, "storing labels");
    }
    sqlite3_finalize(st);
    return rc;
}

int upm_labelset_add(upm_catalog *cat, const upm_labelset *ls, int replace, upm_err *err)
{
    int rc = upm_name_check("label set", ls->name, err);
    if (rc)
        return rc;
    /* An empty set is allowed: the preset registers ImageNet / Kinetics sets for the user to fill. */
    for (size_t i = 0; i < ls->n; i++)
        for (int k = 0; k < ls->labels[i].n_names; k++)
            if (!upm_utf8_valid(ls->labels[i].names[k], strlen(ls->labels[i].names[k]), NULL) ||
                !ls->labels[i].names[k][0] || upm_has_control(ls->labels[i].names[k]))
                return upm_errf(err, UPM_EINVAL, "label set '%s': label %zu is empty, not UTF-8 or has control "
                                "characters", ls->name, i + 1);
    sqlite3_int64 id = 0;
    int exists = upm_exists(cat, UPM_KIND_LABELS, ls->name, err);
    if (exists < 0)
        return exists;
    if (exists && !replace)
        return upm_errf(err, UPM_EINVAL, "label set '%s' already exists (use --replace to give it new labels)",
                        ls->name);
    sqlite3_stmt *st;
    if (exists) {
        if ((rc = upm_sql_id(cat, "label_sets", "label set", ls->name, &id, err)) ||
            (rc = upm_sql_prepare(cat, "DELETE FROM labels WHERE label_set_id = ?", &st, err)))
            return rc;
        sqlite3_bind_int64(st, 1, id);
        if ((rc = upm_sql_run(cat, st, "replacing labels", err)) ||
            (rc = upm_sql_prepare(cat, "UPDATE label_sets SET synonyms = ?, notes = ? WHERE id = ?", &st, err)))
            return rc;
        sqlite3_bind_int(st, 1, ls->synonyms);
        sqlite3_bind_text(st, 2, ls->notes, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 3, id);
        if ((rc = upm_sql_run(cat, st, "updating a label set", err)))
            return rc;
    } else {
        if ((rc = upm_sql_prepare(cat, "INSERT INTO label_sets (name, synonyms, notes) VALUES (?, ?, ?)", &st, err)))
            return rc;
        sqlite3_bind_text(st, 1, ls->name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(st, 2, ls->synonyms);
        sqlite3_bind_text(st, 3, ls->notes, -1, SQLITE_TRANSIENT);
        if ((rc = upm_sql_run(cat, st, "adding a label set", err)))
            return rc;
        id = sqlite3_last_insert_rowid(cat->db);
    }
    return insert_labels(cat, id, ls, err);
}

/* Appends one stored row (names as a JSON array) to out. */
static int push_row(upm_labelset *out, const char *key, const char *json, upm_err *err)
{
    cJSON *arr = cJSON_Parse(json);
    int n = cJSON_GetArraySize(arr);
    const char *names[64];
    if (!cJSON_IsArray(arr) || n < 1 || n > 64) {
        cJSON_Delete(arr);
        return upm_errf(err, UPM_EDB, "label set '%s': a stored label is malformed", out->name);
    }
    for (int k = 0; k < n; k++)
        names[k] = cJSON_GetStringValue(cJSON_GetArrayItem(arr, k));
    int rc = 0;
    for (int k = 0; k < n && !rc; k++)
        if (!names[k])
            rc = upm_errf(err, UPM_EDB, "label set '%s': a stored label is not a string", out->name);
    if (!rc)
        rc = upm_labelset_push(out, key, names, n, err);
    cJSON_Delete(arr);
    return rc;
}

int upm_labelset_get(upm_catalog *cat, const char *name, upm_labelset *out, upm_err *err)
{
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", name);
    sqlite3_stmt *st;
    int rc = upm_sql_prepare(cat, "SELECT synonyms, notes FROM label_sets WHERE name = ?", &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        out->synonyms = sqlite3_column_int(st, 0);
        upm_sql_text(st, 1, out->notes, sizeof out->notes);
    }
    sqlite3_finalize(st);
    if (step != SQLITE_ROW)
        return step == SQLITE_DONE ? upm_errf(err, UPM_EINVAL, "unknown label set '%s'", name)
                                   : upm_catalog_sqlerr(cat, err, "reading a label set");
    if ((rc = upm_sql_prepare(cat, "SELECT l.key, l.names FROM labels l JOIN label_sets s ON s.id = l.label_set_id "
                                   "WHERE s.name = ? ORDER BY l.idx", &st, err)))
        return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    while (!rc && (step = sqlite3_step(st)) == SQLITE_ROW)
        rc = push_row(out, (const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1), err);
    sqlite3_finalize(st);
    if (!rc && step != SQLITE_DONE)
        rc = upm_catalog_sqlerr(cat, err, "reading labels");
    if (rc)
        upm_labelset_free(out);
    return rc;
}

int upm_labelset_foreach(upm_catalog *cat, upm_labelset_fn fn, void *ctx, upm_err *err)
{
    sqlite3_stmt *st;
    int rc = upm_sql_prepare(cat, "SELECT s.name, s.synonyms, s.notes, (SELECT count(*) FROM labels l WHERE "
                                  "l.label_set_id = s.id) FROM label_sets s ORDER BY s.name", &st, err);
    if (rc)
        return rc;
    int step;
    while (!rc && (step = sqlite3_step(st)) == SQLITE_ROW) {
        upm_labelset_info info;
        upm_sql_text(st, 0, info.name, sizeof info.name);
        info.synonyms = sqlite3_column_int(st, 1);
        upm_sql_text(st, 2, info.notes, sizeof info.notes);
        info.count = sqlite3_column_int64(st, 3);
        rc = fn(&info, ctx);
    }
    if (!rc && step != SQLITE_DONE)
        rc = upm_catalog_sqlerr(cat, err, "listing label sets");
    sqlite3_finalize(st);
    return rc;
}
