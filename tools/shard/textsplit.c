/* upmoe-shard text: a plain text file (a book) cut into samples of N non-blank lines or N paragraphs
 * (runs of non-blank lines), for MLM shards. Line ends are normalised to LF and a byte order mark is
 * dropped; the file must be UTF-8. */
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "shard.h"
#include "text.h"

typedef struct acc {
    char *buf;
    size_t len, cap;
    long units;      /* lines or paragraphs in buf */
    uint64_t first;  /* line where the sample starts */
} acc;

static int append(acc *a, const char *s, size_t n)
{
    if (a->len + n + 1 > a->cap) {
        size_t cap = a->cap ? a->cap : 4096;
        while (cap < a->len + n + 1)
            cap *= 2;
        char *p = realloc(a->buf, cap);
        if (!p)
            return -1;
        a->buf = p;
        a->cap = cap;
    }
    memcpy(a->buf + a->len, s, n);
    a->len += n;
    return 0;
}

static int flush(acc *a, upm_shard_list *l, const char *src, upm_err *err)
{
    if (!a->len)
        return 0;
    upm_shard_sample *s = upm_shard_list_push(l);
    if (!s)
        return upm_errf(err, UPM_ENOMEM, "out of memory");
    s->src = src;
    s->line = a->first;
    s->n = 1;
    int rc = upm_shard_member_bytes(&s->m[0], "txt", a->buf, a->len, err);
    a->len = 0;
    a->units = 0;
    return rc;
}

static int blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\f' && s[i] != '\v')
            return 0;
    return 1;
}

/* 1-based line holding byte offset off of text. */
static uint64_t line_of(const char *text, size_t off)
{
    uint64_t line = 1;
    for (size_t i = 0; i < off; i++)
        line += text[i] == '\n';
    return line;
}

int upm_shard_read_text(const char *file, const upm_shard_input *in, upm_shard_list *l, upm_err *err)
{
    char *text;
    size_t n;
    const char *src = upm_shard_list_source(l, file);
    if (!src)
        return upm_errf(err, UPM_ENOMEM, "out of memory");
    int rc = upm_read_file(file, &text, &n, err);
    if (rc)
        return rc;
    /* The first byte that is not text: a bad UTF-8 sequence or a NUL. */
    size_t bad = n;
    const char *nul = memchr(text, '\0', n);
    if (!upm_utf8_valid(text, n, &bad))
        bad = bad < n ? bad : n;
    if (nul && (size_t)(nul - text) < bad)
        bad = (size_t)(nul - text);
    if (bad < n) {
        rc = upm_errf(err, UPM_EBADDATA, "%s:%llu: not UTF-8 text (byte %zu)", file,
                      (unsigned long long)line_of(text, bad), bad + 1);
        free(text);
        return rc;
    }
    int paragraphs = in->paragraphs_per_sample > 0;
    long per = paragraphs ? in->paragraphs_per_sample : in->lines_per_sample;
    acc a = {0};
    int in_par = 0;
    uint64_t line = 0;
    const char *p = text, *end = text + n;
    if (n >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
        p += 3;
    while (!rc && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end;
        size_t len = (size_t)(e - p);
        line++;
        if (len && p[len - 1] == '\r')
            len--;
        if (blank(p, len)) {
            if (paragraphs && in_par && ++a.units == per)
                rc = flush(&a, l, src, err);
            in_par = 0;
        } else {
            if (!a.len)
                a.first = line;
            const char *sep = !a.len ? "" : paragraphs && !in_par ? "\n\n" : "\n";
            if (append(&a, sep, strlen(sep)) || append(&a, p, len))
                rc = upm_errf(err, UPM_ENOMEM, "out of memory");
            in_par = 1;
            if (!rc && !paragraphs && ++a.units == per)
                rc = flush(&a, l, src, err);
        }
        p = e + 1;
    }
    if (!rc)
        rc = flush(&a, l, src, err); /* the last, shorter sample */
    free(a.buf);
    free(text);
    if (!rc && l->n == 0)
        rc = upm_errf(err, UPM_EINVAL, "%s: no text", file);
    return rc;
}
