/* Shard URL patterns: checks the scheme and host of a dataset's shard URL pattern and parses its brace
 * groups ({A..B} ranges, {a,b} lists) once, so upm_urlpat_get can build the i-th URL on demand without
 * materialising the list (one pattern can stand for millions of shards). */
#include "urlpattern.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* More URLs than this is a typo (an extra group, a digit too many), not a dataset. */
#define MAX_COUNT UINT64_C(1000000000000)
/* 18 decimal digits always fit in uint64_t, so endpoints and counts never overflow. */
#define MAX_DIGITS 18
/* Bounds every expanded URL well below INT_MAX, since upm_urlpat_get returns its length as an int. */
#define MAX_PATTERN_LEN ((size_t)1 << 20)
/* Error messages quote at most this much of the pattern and of a group, to stay readable. */
#define QUOTE_MAX 200
#define GROUP_QUOTE_MAX 40

typedef struct span {
    size_t off, len;
} span;

typedef struct group {
    size_t open, close; /* offsets of the '{' and the '}' in the pattern */
    bool is_range;
    uint64_t lo;     /* range: the first number */
    int width;       /* range: zero-padding width, 0 for none */
    span *items;     /* list: the items, as spans of the pattern */
    uint64_t n;      /* how many values the group takes */
    uint64_t stride; /* how many URLs pass between two consecutive values of this group */
} group;

struct upm_urlpat {
    char *text;
    size_t len;
    upm_url_scheme scheme;
    size_t ngroups;
    group *groups;
    span *items; /* storage for the items of every list group */
    uint64_t count;
};

/* Writes s quoted for an error message: control bytes escaped so the message stays on one line, long
 * patterns cut short. */
static const char *quote(const char *s, size_t len, char *out, size_t outsize)
{
    size_t o = 0;
    for (size_t i = 0; i < len && i < QUOTE_MAX && o + 8 < outsize; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            o += (size_t)snprintf(out + o, outsize - o, "\\x%02x", c);
        else if (c == '"' || c == '\\')
            o += (size_t)snprintf(out + o, outsize - o, "\\%c", c);
        else
            out[o++] = (char)c;
    }
    if (len > QUOTE_MAX && o + 4 < outsize) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return out;
}

/* Every parse error starts the same way, so the user sees which pattern (of possibly several datasets) is wrong. */
static int pat_err(upm_err *err, const char *pattern, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int pat_err(upm_err *err, const char *pattern, const char *fmt, ...)
{
    char q[QUOTE_MAX * 4 + 8];
    char detail[640];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return upm_errf(err, UPM_EUSAGE, "invalid shard URL pattern \"%s\": %s", quote(pattern, strlen(pattern), q, sizeof q),
                    detail);
}

/* The text of group g, braces included, cut short when long; braces never hold control bytes (checked first). */
static const char *group_text(const char *text, const group *g, char *buf, size_t bufsize)
{
    size_t inner = g->close - g->open - 1;
    if (inner > GROUP_QUOTE_MAX)
        snprintf(buf, bufsize, "{%.*s...}", GROUP_QUOTE_MAX, text + g->open + 1);
    else
        snprintf(buf, bufsize, "{%.*s}", (int)inner, text + g->open + 1);
    return buf;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_scheme_char(char c)
{
    return is_alpha(c) || is_digit(c) || c == '+' || c == '-' || c == '.';
}

/* ASCII case-insensitive comparison of s[0..len) with the lower-case word w; locale-independent on purpose. */
static bool ieq(const char *s, size_t len, const char *w)
{
    if (strlen(w) != len)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != w[i])
            return false;
    }
    return true;
}

/* Whitespace and control bytes are refused: they are almost always a copy-paste accident and would make
 * the URL ambiguous in logs and on command lines. */
static int check_chars(const char *pat, size_t len, upm_err *err)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)pat[i];
        if (c <= 0x20 || c == 0x7f)
            return pat_err(err, pat, "whitespace or control character 0x%02x at character %zu", c, i + 1);
    }
    return UPM_OK;
}

/* First pass over the braces: checks they pair up without nesting, and counts groups and commas so the
 * second pass can allocate once. */
static int scan_braces(const char *pat, size_t len, size_t *ngroups, size_t *ncommas, upm_err *err)
{
    size_t open = 0;
    bool in_group = false;

    *ngroups = *ncommas = 0;
    for (size_t i = 0; i < len; i++) {
        if (pat[i] == '{') {
            if (in_group)
                return pat_err(err, pat, "nested braces at character %zu (the group opened at character %zu is "
                               "not closed; groups cannot contain groups)", i + 1, open + 1);
            in_group = true;
            open = i;
        } else if (pat[i] == '}') {
            if (!in_group)
                return pat_err(err, pat, "stray '}' at character %zu (no '{' opens it)", i + 1);
            in_group = false;
            (*ngroups)++;
        } else if (pat[i] == ',' && in_group) {
            (*ncommas)++;
        }
    }
    if (in_group)
        return pat_err(err, pat, "unbalanced '{' at character %zu (no '}' closes it)", open + 1);
    return UPM_OK;
}

/* Parses one endpoint of a range: 1 to MAX_DIGITS decimal digits. */
static bool parse_endpoint(const char *s, size_t len, uint64_t *v)
{
    if (len == 0 || len > MAX_DIGITS)
        return false;
    *v = 0;
    for (size_t i = 0; i < len; i++) {
        if (!is_digit(s[i]))
            return false;
        *v = *v * 10 + (uint64_t)(s[i] - '0');
    }
    return true;
}

/* Offset of the first ".." in s[0..len), or len when there is none. */
static size_t find_dots(const char *s, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++)
        if (s[i] == '.' && s[i + 1] == '.')
            return i;
    return len;
}

/* {A..B}: padded, as Python's braceexpand does, when an endpoint other than a lone "0" starts with '0'. */
static int parse_range(const char *pat, group *g, size_t dots, upm_err *err)
{
    const char *s = pat + g->open + 1;
    size_t len = g->close - g->open - 1;
    const char *b = s + dots + 2;
    size_t alen = dots, blen = len - dots - 2;
    uint64_t a, z;
    char gt[GROUP_QUOTE_MAX + 8];

    group_text(pat, g, gt, sizeof gt);
    if (find_dots(b, blen) < blen)
        return pat_err(err, pat, "range %s at character %zu has a step; only {A..B} is supported", gt, g->open + 1);
    if (!parse_endpoint(s, alen, &a) || !parse_endpoint(b, blen, &z))
        return pat_err(err, pat, "range %s at character %zu must have non-negative decimal integers of 1 to %d "
                       "digits at both ends", gt, g->open + 1, MAX_DIGITS);
    if (a > z)
        return pat_err(err, pat, "reversed range %s: the start must not exceed the end, at character %zu", gt,
                       g->open + 1);
    g->is_range = true;
    g->lo = a;
    g->n = z - a + 1;
    g->width = 0;
    if ((alen > 1 && s[0] == '0') || (blen > 1 && b[0] == '0'))
        g->width = (int)(alen > blen ? alen : blen);
    return UPM_OK;
}

/* {a,b,c}: items are literal and may be empty; they go into the shared item storage at *next. */
static void parse_list(const char *pat, group *g, span *items, size_t *next)
{
    size_t start = g->open + 1;

    g->is_range = false;
    g->items = items + *next;
    g->n = 0;
    for (size_t i = start; i <= g->close; i++) {
        if (i == g->close || pat[i] == ',') {
            items[*next].off = start;
            items[*next].len = i - start;
            (*next)++;
            g->n++;
            start = i + 1;
        }
    }
}

static int parse_group(const char *pat, group *g, span *items, size_t *next_item, upm_err *err)
{
    const char *s = pat + g->open + 1;
    size_t len = g->close - g->open - 1;
    size_t dots;
    char gt[GROUP_QUOTE_MAX + 8];

    if (len == 0)
        return pat_err(err, pat, "empty group {} at character %zu", g->open + 1);
    if (memchr(s, ',', len)) {
        parse_list(pat, g, items, next_item);
        return UPM_OK;
    }
    dots = find_dots(s, len);
    if (dots < len)
        return parse_range(pat, g, dots, err);
    return pat_err(err, pat, "group %s at character %zu is neither a range {A..B} nor a list {a,b}",
                   group_text(pat, g, gt, sizeof gt), g->open + 1);
}

/* Second pass: records and parses each group, then works out the count and the stride of each group
 * (the leftmost group varies slowest, so its stride is the product of the sizes to its right). */
static int parse_groups(upm_urlpat *p, upm_err *err)
{
    const char *pat = p->text;
    size_t gi = 0, next_item = 0;
    int rc;

    for (size_t i = 0; i < p->len; i++) {
        if (pat[i] != '{')
            continue;
        group *g = &p->groups[gi++];
        g->open = i;
        g->close = i + strcspn(pat + i, "}");
        rc = parse_group(pat, g, p->items, &next_item, err);
        if (rc)
            return rc;
        if (g->n > MAX_COUNT / p->count)
            return pat_err(err, pat, "expands to more than %" PRIu64 " URLs (the limit is passed at the group at "
                           "character %zu)", MAX_COUNT, g->open + 1);
        p->count *= g->n;
        i = g->close;
    }
    uint64_t stride = 1;
    for (size_t k = p->ngroups; k-- > 0;) {
        p->groups[k].stride = stride;
        stride *= p->groups[k].n;
    }
    return UPM_OK;
}

/* Finds a scheme as RFC 3986 does (ALPHA *(ALPHA / DIGIT / "+" / "-" / ".") ":"); returns the offset of its
 * ':' or 0 for a plain path. Sets *braced when a brace group stands where expansion could change the scheme
 * ("{http,ftp}://x", "shard{0..9}:x"): a scheme must be readable from the literal text. */
static size_t find_scheme(const upm_urlpat *p, bool *braced)
{
    size_t gi = 0;
    bool saw_group = false;

    *braced = false;
    for (size_t i = 0; i < p->len; i++) {
        if (gi < p->ngroups && i == p->groups[gi].open) {
            const group *g = &p->groups[gi++];
            if (memchr(p->text + g->open + 1, ':', g->close - g->open - 1)) {
                *braced = true;
                return 0;
            }
            saw_group = true;
            i = g->close;
            continue;
        }
        char c = p->text[i];
        if (c == ':') {
            *braced = saw_group;
            return saw_group ? 0 : i;
        }
        if (!is_scheme_char(c) || (i == 0 && !is_alpha(c)))
            return 0;
    }
    return 0;
}

/* host[:port] of an http(s) URL, after any userinfo; the host must be non-empty and the port 1..65535. */
static int check_authority(const upm_urlpat *p, size_t start, size_t end, upm_err *err)
{
    const char *t = p->text;
    size_t hs = start, colon = end;

    for (size_t i = start; i < end; i++)
        if (t[i] == '@')
            hs = i + 1;
    if (hs < end && t[hs] == '[') {
        const char *rb = memchr(t + hs, ']', end - hs);
        if (!rb)
            return pat_err(err, p->text, "unclosed '[' in the host at character %zu", hs + 1);
        colon = (size_t)(rb - t) + 1;
        if (colon < end && t[colon] != ':')
            return pat_err(err, p->text, "unexpected character after ']' at character %zu", colon + 1);
    } else {
        const char *c = memchr(t + hs, ':', end - hs);
        colon = c ? (size_t)(c - t) : end;
    }
    if (colon == hs)
        return pat_err(err, p->text, "empty host at character %zu", hs + 1);
    if (colon >= end)
        return UPM_OK;
    uint64_t port;
    size_t plen = end - colon - 1;
    if (!parse_endpoint(t + colon + 1, plen, &port) || plen > 5 || port < 1 || port > 65535)
        return pat_err(err, p->text, "invalid port \"%.*s\" at character %zu: it must be a number from 1 to 65535",
                       (int)(plen > 16 ? 16 : plen), t + colon + 1, colon + 2);
    return UPM_OK;
}

/* scheme://host/...: only file (empty host or localhost), http and https; no braces before the path. */
static int check_url(upm_urlpat *p, size_t colon, upm_err *err)
{
    const char *t = p->text;
    const char *name = ieq(t, colon, "file") ? "file" : ieq(t, colon, "http") ? "http"
                                                      : ieq(t, colon, "https") ? "https" : NULL;
    if (!name)
        return pat_err(err, t, "unsupported scheme \"%.*s\" (accepted: a plain file path, file:///path, "
                       "http://host[:port]/path, https://host[:port]/path)", (int)(colon > 32 ? 32 : colon), t);
    p->scheme = name[0] == 'f' ? UPM_URL_FILE : name[4] == 's' ? UPM_URL_HTTPS : UPM_URL_HTTP;
    if (p->len < colon + 3 || t[colon + 1] != '/' || t[colon + 2] != '/')
        return pat_err(err, t, "%s URLs must start with \"%s://\"%s", name, name,
                       p->scheme == UPM_URL_FILE ? " and an absolute path (file:///path)" : "");
    size_t host = colon + 3;
    const char *slash = strchr(t + host, '/');
    size_t host_end = slash ? (size_t)(slash - t) : p->len;
    if (p->ngroups > 0 && p->groups[0].open < host_end)
        return pat_err(err, t, "braces are not allowed in the scheme or host (brace at character %zu)",
                       p->groups[0].open + 1);
    if (!slash)
        return pat_err(err, t, "the %s URL has no path after the host", name);
    if (p->scheme != UPM_URL_FILE)
        return check_authority(p, host, host_end, err);
    if (host_end != host && !ieq(t + host, host_end - host, "localhost"))
        return pat_err(err, t, "file URLs must name a local absolute path (file:///path or file://localhost/path), "
                       "not host \"%.*s\"", (int)(host_end - host > 64 ? 64 : host_end - host), t + host);
    return UPM_OK;
}

static int check_scheme(upm_urlpat *p, upm_err *err)
{
    bool braced;
    size_t colon = find_scheme(p, &braced);

    if (braced)
        return pat_err(err, p->text, "braces are not allowed in the scheme or host (brace at character %zu)",
                       p->groups[0].open + 1);
    p->scheme = UPM_URL_PATH;
    return colon ? check_url(p, colon, err) : UPM_OK;
}

static int alloc_pattern(const char *pattern, size_t len, size_t ngroups, size_t ncommas, upm_urlpat **out,
                         upm_err *err)
{
    upm_urlpat *p = calloc(1, sizeof *p);
    if (p) {
        p->text = malloc(len + 1);
        p->groups = calloc(ngroups ? ngroups : 1, sizeof *p->groups);
        p->items = calloc(ncommas + ngroups + 1, sizeof *p->items);
    }
    if (!p || !p->text || !p->groups || !p->items) {
        upm_urlpat_free(p);
        return upm_errf(err, UPM_ENOMEM, "out of memory parsing shard URL pattern (%zu characters)", len);
    }
    memcpy(p->text, pattern, len + 1);
    p->len = len;
    p->ngroups = ngroups;
    p->count = 1;
    *out = p;
    return UPM_OK;
}

int upm_urlpat_parse(const char *pattern, upm_urlpat **out, upm_err *err)
{
    size_t len, ngroups, ncommas;
    upm_urlpat *p = NULL;
    int rc;

    if (out)
        *out = NULL;
    if (!out || !pattern)
        return upm_errf(err, UPM_EUSAGE, "upm_urlpat_parse: pattern and out must not be NULL");
    if (pattern[0] == '\0')
        return pat_err(err, pattern, "the pattern is empty");
    len = strlen(pattern);
    if (len > MAX_PATTERN_LEN)
        return pat_err(err, pattern, "the pattern is %zu characters long; the limit is %zu", len, MAX_PATTERN_LEN);
    rc = check_chars(pattern, len, err);
    if (!rc)
        rc = scan_braces(pattern, len, &ngroups, &ncommas, err);
    if (!rc)
        rc = alloc_pattern(pattern, len, ngroups, ncommas, &p, err);
    if (!rc)
        rc = parse_groups(p, err);
    if (!rc)
        rc = check_scheme(p, err);
    if (rc) {
        upm_urlpat_free(p);
        return rc;
    }
    *out = p;
    return UPM_OK;
}

void upm_urlpat_free(upm_urlpat *p)
{
    if (!p)
        return;
    free(p->text);
    free(p->groups);
    free(p->items);
    free(p);
}

upm_url_scheme upm_urlpat_scheme(const upm_urlpat *p)
{
    return p ? p->scheme : UPM_URL_PATH;
}

uint64_t upm_urlpat_count(const upm_urlpat *p)
{
    return p ? p->count : 0;
}

/* Copies src to out + at unless out is NULL (the measuring pass); returns len either way. */
static size_t emit(char *out, size_t at, const char *src, size_t len)
{
    if (out)
        memcpy(out + at, src, len);
    return len;
}

/* Builds URL i into out (or only measures it when out is NULL); returns its length, without a NUL. */
static size_t render(const upm_urlpat *p, uint64_t i, char *out)
{
    size_t n = 0, pos = 0;

    for (size_t k = 0; k < p->ngroups; k++) {
        const group *g = &p->groups[k];
        uint64_t v = (i / g->stride) % g->n;
        n += emit(out, n, p->text + pos, g->open - pos);
        if (g->is_range) {
            char num[32];
            int w = snprintf(num, sizeof num, "%0*" PRIu64, g->width, g->lo + v);
            n += emit(out, n, num, (size_t)w);
        } else {
            n += emit(out, n, p->text + g->items[v].off, g->items[v].len);
        }
        pos = g->close + 1;
    }
    n += emit(out, n, p->text + pos, p->len - pos);
    return n;
}

int upm_urlpat_get(const upm_urlpat *p, uint64_t i, char *buf, size_t bufsize, upm_err *err)
{
    char q[QUOTE_MAX * 4 + 8];

    if (!p)
        return upm_errf(err, UPM_EUSAGE, "upm_urlpat_get: no pattern given");
    if (i >= p->count)
        return upm_errf(err, UPM_EUSAGE, "shard index %" PRIu64 " is out of range: pattern \"%s\" expands to %" PRIu64
                        " URLs (indices 0 to %" PRIu64 ")", i, quote(p->text, p->len, q, sizeof q), p->count, p->count - 1);
    size_t len = render(p, i, NULL);
    if (!buf || bufsize <= len)
        return upm_errf(err, UPM_EUSAGE, "buffer of %zu bytes is too small for URL %" PRIu64 " of pattern \"%s\" "
                        "(it needs %zu bytes)", buf ? bufsize : 0, i, quote(p->text, p->len, q, sizeof q), len + 1);
    render(p, i, buf);
    buf[len] = '\0';
    return (int)len;
}
