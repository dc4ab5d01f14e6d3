/* upmoe-shard: an RFC 4180 CSV record reader over a file held in memory. Quoted fields may hold commas,
 * doubled quotes and line breaks; lines end in LF or CRLF. Errors name the file and the line. */
#include <stdlib.h>
#include <string.h>

#include "shard.h"

void upm_csv_init(upm_csv *c, const char *file, const char *text, size_t n)
{
    memset(c, 0, sizeof *c);
    c->file = file;
    c->p = text;
    c->end = text + n;
    c->line = 1;
    if (n >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) /* a UTF-8 byte order mark (spreadsheet exports) */
        c->p += 3;
}

void upm_csv_free(upm_csv *c)
{
    free(c->fields);
    free(c->buf);
    c->fields = NULL;
    c->buf = NULL;
}

static int put(upm_csv *c, char ch)
{
    if (c->buflen == c->bufcap) {
        size_t cap = c->bufcap ? c->bufcap * 2 : 256;
        char *p = realloc(c->buf, cap);
        if (!p)
            return -1;
        c->buf = p;
        c->bufcap = cap;
    }
    c->buf[c->buflen++] = ch;
    return 0;
}

/* Ends the current field: records where it starts (as an offset until the record is complete). */
static int end_field(upm_csv *c, size_t start)
{
    if (put(c, '\0'))
        return -1;
    if (c->nfields == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        char **p = realloc(c->fields, cap * sizeof *p);
        if (!p)
            return -1;
        c->fields = p;
        c->cap = cap;
    }
    c->fields[c->nfields++] = (char *)(uintptr_t)start;
    return 0;
}

static int at_eol(const upm_csv *c) { return *c->p == '\n' || (*c->p == '\r' && c->p + 1 < c->end && c->p[1] == '\n'); }

static void skip_eol(upm_csv *c)
{
    c->p += *c->p == '\r' ? 2 : 1;
    c->line++;
}

/* A quoted field; c->p is on the opening quote. */
static int quoted(upm_csv *c, upm_err *err)
{
    uint64_t opened = c->line;
    c->p++;
    for (;;) {
        if (c->p >= c->end)
            return upm_errf(err, UPM_EBADDATA, "%s:%llu: quoted field never closed (the quote opens here)", c->file,
                            (unsigned long long)opened);
        char ch = *c->p;
        if (ch == '"') {
            if (c->p + 1 < c->end && c->p[1] == '"') {
                if (put(c, '"'))
                    return upm_errf(err, UPM_ENOMEM, "out of memory");
                c->p += 2;
                continue;
            }
            c->p++;
            if (c->p < c->end && *c->p != ',' && !at_eol(c))
                return upm_errf(err, UPM_EBADDATA,
                                "%s:%llu: unexpected character after a closing quote (double a quote inside a "
                                "quoted field: \"\")", c->file, (unsigned long long)c->line);
            return 0;
        }
        if (ch == '\0')
            return upm_errf(err, UPM_EBADDATA, "%s:%llu: NUL byte", c->file, (unsigned long long)c->line);
        if (ch == '\n')
            c->line++;
        if (put(c, ch))
            return upm_errf(err, UPM_ENOMEM, "out of memory");
        c->p++;
    }
}

/* An unquoted field: up to a comma or the end of the line. */
static int unquoted(upm_csv *c, upm_err *err)
{
    while (c->p < c->end && *c->p != ',' && !at_eol(c)) {
        if (*c->p == '"')
            return upm_errf(err, UPM_EBADDATA,
                            "%s:%llu: quote inside an unquoted field (quote the whole field and double the quote)",
                            c->file, (unsigned long long)c->line);
        if (*c->p == '\0')
            return upm_errf(err, UPM_EBADDATA, "%s:%llu: NUL byte", c->file, (unsigned long long)c->line);
        if (put(c, *c->p))
            return upm_errf(err, UPM_ENOMEM, "out of memory");
        c->p++;
    }
    return 0;
}

int upm_csv_next(upm_csv *c, uint64_t *line, upm_err *err)
{
    while (c->p < c->end && at_eol(c)) /* blank lines */
        skip_eol(c);
    if (c->p >= c->end)
        return 0;
    *line = c->line;
    c->nfields = 0;
    c->buflen = 0;
    for (;;) {
        size_t start = c->buflen;
        int rc = c->p < c->end && *c->p == '"' ? quoted(c, err) : unquoted(c, err);
        if (rc)
            return rc;
        if (end_field(c, start))
            return upm_errf(err, UPM_ENOMEM, "out of memory");
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            continue;
        }
        if (c->p < c->end)
            skip_eol(c);
        break;
    }
    for (size_t i = 0; i < c->nfields; i++)
        c->fields[i] = c->buf + (uintptr_t)c->fields[i];
    return 1;
}
