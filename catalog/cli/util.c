/* Plumbing shared by the upmoe-catalog subcommands (see cli.h). */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "text.h"

static const cli_opt *find_opt(const cli_opt *opts, const char *name, size_t len)
{
    for (; opts && opts->name; opts++)
        if (strlen(opts->name) == len && strncmp(opts->name, name, len) == 0)
            return opts;
    return NULL;
}

int cli_parse(int argc, char **argv, const cli_opt *opts, const char **pos, int maxpos, int *npos, const char *cmd)
{
    int only_pos = 0;
    *npos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!only_pos && strcmp(a, "--") == 0) {
            only_pos = 1;
            continue;
        }
        if (only_pos || a[0] != '-' || a[1] == '\0') {
            if (*npos == maxpos)
                return cli_usage_error(cmd, "unexpected argument '%s'", a);
            pos[(*npos)++] = a;
            continue;
        }
        const char *name = a + (a[1] == '-' ? 2 : 1);
        const char *eq = strchr(name, '=');
        const cli_opt *o = find_opt(opts, name, eq ? (size_t)(eq - name) : strlen(name));
        if (!o || a[1] != '-')
            return cli_usage_error(cmd, "unknown option '%s'", a);
        const char *val = NULL;
        if (o->has_arg) {
            if (eq)
                val = eq + 1;
            else if (i + 1 < argc)
                val = argv[++i];
            else
                return cli_usage_error(cmd, "option --%s needs a value", o->name);
        } else if (eq) {
            return cli_usage_error(cmd, "option --%s takes no value", o->name);
        }
        if (o->flag)
            *o->flag = 1;
        if (o->val)
            *o->val = val;
        if (o->vals) {
            if (*o->nvals == o->max)
                return cli_usage_error(cmd, "option --%s is given more than %d times", o->name, o->max);
            o->vals[(*o->nvals)++] = val;
        }
    }
    return 0;
}

int cli_fail(const upm_err *err)
{
    fprintf(stderr, PROG ": error: %s\n", err->msg[0] ? err->msg : "unknown error");
    return err->code == UPM_EUSAGE ? EXIT_USAGE : 1;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, PROG ": error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see '" PROG " %s%s--help')\n", cmd ? cmd : "", cmd ? " " : "");
    va_end(ap);
    return EXIT_USAGE;
}

int cli_open(cli *c, unsigned flags, upm_catalog **out)
{
    char path[4096];
    int rc = upm_catalog_resolve_path(c->catalog_opt, path, sizeof path, &c->err);
    if (!rc)
        rc = upm_catalog_open(path, flags, out, &c->err);
    return rc ? cli_fail(&c->err) : 0;
}

int cli_write(cli *c, upm_catalog *cat, int (*fn)(upm_catalog *, void *, upm_err *), void *ctx)
{
    int rc = upm_catalog_begin(cat, &c->err);
    if (!rc && (rc = fn(cat, ctx, &c->err)) != 0)
        upm_catalog_rollback(cat);
    else if (!rc)
        rc = upm_catalog_commit(cat, &c->err);
    return rc ? cli_fail(&c->err) : 0;
}

int cli_weight(const char *cmd, const char *what, const char *s, double *out)
{
    if (upm_parse_double(s, out) != 0)
        return cli_usage_error(cmd, "%s '%s' is not a number", what, s);
    if (*out < 0)
        return cli_usage_error(cmd, "%s %s is negative: weights are >= 0", what, s);
    return 0;
}

int cli_int(const char *cmd, const char *what, const char *s, long long min, long long max, long long *out)
{
    int64_t v;
    if (upm_parse_i64(s, &v) != 0)
        return cli_usage_error(cmd, "%s '%s' is not an integer", what, s);
    if (v < min || v > max)
        return cli_usage_error(cmd, "%s %s is out of range (%lld..%lld)", what, s, min, max);
    *out = v;
    return 0;
}

int cli_copy(const char *cmd, const char *what, const char *s, char *buf, size_t n)
{
    if (strlen(s) >= n)
        return cli_usage_error(cmd, "%s is longer than %zu bytes", what, n - 1);
    snprintf(buf, n, "%s", s);
    return 0;
}

void cli_print_json(cJSON *doc)
{
    char *s = cJSON_Print(doc);
    if (s)
        printf("%s\n", s);
    cJSON_free(s);
    cJSON_Delete(doc);
}

void cli_fmt_weight(double w, char *buf, size_t n) { upm_format_double(w, buf, n); }

struct cli_table {
    int ncols, nrows, cap;
    char **cells; /* nrows * ncols, row 0 = headers */
    char right[16];
};

cli_table *cli_table_new(int ncols, const char *const *headers, const char *right_aligned)
{
    cli_table *t = calloc(1, sizeof *t);
    if (!t)
        abort(); /* out of memory in a CLI table: nothing sensible to do */
    t->ncols = ncols;
    snprintf(t->right, sizeof t->right, "%s", right_aligned ? right_aligned : "");
    cli_table_add(t, headers);
    return t;
}

void cli_table_add(cli_table *t, const char *const *cells)
{
    if (t->nrows == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 16;
        t->cells = realloc(t->cells, (size_t)t->cap * (size_t)t->ncols * sizeof *t->cells);
        if (!t->cells)
            abort();
    }
    for (int j = 0; j < t->ncols; j++)
        if (!(t->cells[t->nrows * t->ncols + j] = strdup(cells[j] ? cells[j] : "")))
            abort();
    t->nrows++;
}

void cli_table_free(cli_table *t)
{
    if (!t)
        return;
    for (int i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t);
}

void cli_table_print(cli_table *t, FILE *f)
{
    size_t width[16] = {0};
    for (int i = 0; i < t->nrows; i++)
        for (int j = 0; j < t->ncols; j++) {
            size_t w = upm_utf8_width(t->cells[i * t->ncols + j]);
            width[j] = w > width[j] ? w : width[j];
        }
    for (int i = 0; i < t->nrows; i++) {
        for (int j = 0; j < t->ncols; j++) {
            const char *s = t->cells[i * t->ncols + j];
            int pad = (int)(width[j] - upm_utf8_width(s));
            int right = i > 0 && t->right[j] == '1';
            int last = j == t->ncols - 1;
            fprintf(f, "%*s%s%*s%s", right ? pad : 0, "", s, (right || last) ? 0 : pad, "", last ? "\n" : "  ");
            free((char *)s);
        }
    }
    free(t->cells);
    free(t);
}
