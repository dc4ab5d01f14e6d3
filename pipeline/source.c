/* Shard byte sources: local files read into a bounded buffer, and HTTP(S) transfers driven through a
 * private curl_multi handle with a paused-when-full buffer, retries with exponential backoff and
 * byte-exact Range resume (the design is described in source.h). */
#include "source.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "urlpattern.h"

#define MIN_BUFFER ((size_t)64 << 10)
#define MAX_REDIRECTS 10L

enum { KIND_FILE, KIND_HTTP, KIND_MEM };

/* Why the write callback stopped a transfer (curl then reports CURLE_WRITE_ERROR). */
enum { ABORT_NONE, ABORT_STATUS, ABORT_RANGE, ABORT_NOMEM, ABORT_STALL };

struct upm_source {
    char *url;
    int kind;
    upm_source_opts o;
    unsigned char *buf;
    size_t cap, pos, len; /* unread bytes are buf[pos..len) */
    uint64_t offset;      /* bytes accepted into the buffer so far (handed out or about to be) */
    uint64_t handed;      /* bytes handed to the reader */
    int eof;
    int failed;           /* sticky error code */
    upm_err fail_err;
    int fd;               /* KIND_FILE */
    const unsigned char *mem; /* KIND_MEM: the caller's bytes, mem_len of them */
    size_t mem_len;
    int seekable;
    /* KIND_HTTP */
    CURLM *multi;
    CURL *easy;
    int in_multi, paused, global_init;
    int retries, consecutive;
    char range[32];
    char errbuf[CURL_ERROR_SIZE];
    /* per attempt */
    uint64_t attempt_start, skip;
    int checked, abort_kind;
    long status;
    char reason[96];
    int have_crange, crange_unsatisfied;
    uint64_t crange_start, crange_total;
    int64_t total; /* entity size once known, else -1 */
    /* stall detection in "driven" time: only time spent inside http_fill counts, so a paused transfer or
     * a reader busy elsewhere never looks stalled */
    double drive_base, fill_entry, mark_t;
    curl_off_t mark_b, stall_bytes;
    double stall_secs;
};

void upm_source_opts_default(upm_source_opts *o)
{
    o->connect_timeout_s = 30;
    o->low_speed_limit = 1024;
    o->low_speed_time_s = 30;
    o->max_retries = 5;
    o->initial_backoff_s = 1;
    o->max_backoff_s = 30;
    o->buffer_size = (size_t)1 << 20;
    const char *ca = getenv("UPMOE_CA_BUNDLE");
    o->ca_bundle = ca && *ca ? ca : NULL;
}

static int fail(upm_source *s, upm_err *err, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail(upm_source *s, upm_err *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->fail_err.msg, sizeof s->fail_err.msg, fmt, ap);
    va_end(ap);
    s->fail_err.code = code;
    s->failed = code;
    if (err)
        *err = s->fail_err;
    return code;
}

/* Percent-decodes a file:// path in place; refuses an encoded NUL. */
static int percent_decode(char *p)
{
    char *w = p;
    for (const char *r = p; *r; r++) {
        if (*r == '%' && r[1] && r[2]) {
            char hex[3] = {r[1], r[2], 0}, *end;
            long v = strtol(hex, &end, 16);
            if (*end || v == 0)
                return -1;
            *w++ = (char)v;
            r += 2;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
    return 0;
}

/* Checks url against the shard URL rules and returns its kind and, for files, the local path. */
static int classify(const char *url, int *kind, char **path, upm_err *err)
{
    upm_urlpat *p = NULL;
    int rc = upm_urlpat_parse(url, &p, err);
    if (rc)
        return rc;
    upm_url_scheme sch = upm_urlpat_scheme(p);
    int braces = upm_urlpat_count(p) != 1 || strpbrk(url, "{}");
    upm_urlpat_free(p);
    if (braces)
        return upm_errf(err, UPM_EUSAGE, "%s: a source reads one URL, not a pattern with brace groups", url);
    *path = NULL;
    *kind = sch == UPM_URL_HTTP || sch == UPM_URL_HTTPS ? KIND_HTTP : KIND_FILE;
    if (*kind == KIND_HTTP)
        return UPM_OK;
    const char *local = url;
    if (sch == UPM_URL_FILE)
        local = strchr(url + strlen("file://"), '/'); /* after the empty host or "localhost" */
    *path = strdup(local);
    if (!*path)
        return upm_errf(err, UPM_ENOMEM, "%s: out of memory", url);
    if (sch == UPM_URL_FILE && percent_decode(*path)) {
        free(*path);
        *path = NULL;
        return upm_errf(err, UPM_EUSAGE, "%s: bad percent escape in the file URL", url);
    }
    return UPM_OK;
}

static int open_file(upm_source *s, const char *path, upm_err *err)
{
    struct stat st;
    s->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (s->fd < 0) {
        int e = errno;
        return upm_errf(err, e == ENOENT || e == ENOTDIR ? UPM_ENOTFOUND : UPM_EIO, "%s: cannot open: %s", s->url,
                        strerror(e));
    }
    if (fstat(s->fd, &st) != 0)
        return upm_errf(err, UPM_EIO, "%s: cannot stat: %s", s->url, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return upm_errf(err, UPM_EIO, "%s: is a directory, not a shard file", s->url);
    s->seekable = S_ISREG(st.st_mode);
    s->total = s->seekable ? (int64_t)st.st_size : -1;
    return UPM_OK;
}

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *ud);
static size_t header_cb(char *ptr, size_t size, size_t nmemb, void *ud);
static int progress_cb(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow);

static double driven_now(const upm_source *s)
{
    return s->drive_base + (upm_monotonic_s() - s->fill_entry);
}

/* curl_global_init is reference-counted and thread-safe in libcurl >= 7.84 built with
 * CURL_VERSION_THREADSAFE (Debian 12's is), so each source pairs its own init with a cleanup and no
 * process-wide setup call is needed. */
static int setup_http(upm_source *s, upm_err *err)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return upm_errf(err, UPM_EIO, "%s: libcurl initialisation failed", s->url);
    s->global_init = 1;
    s->multi = curl_multi_init();
    s->easy = curl_easy_init();
    if (!s->multi || !s->easy)
        return upm_errf(err, UPM_ENOMEM, "%s: out of memory creating a curl handle", s->url);
    CURL *e = s->easy;
    int bad = 0;
    bad |= curl_easy_setopt(e, CURLOPT_URL, s->url) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https") != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_MAXREDIRS, MAX_REDIRECTS) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_USERAGENT, "upmoe-pipeline") != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, s->errbuf) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEDATA, s) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HEADERDATA, s) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(s->o.connect_timeout_s * 1000)) != CURLE_OK;
    if (s->o.ca_bundle)
        bad |= curl_easy_setopt(e, CURLOPT_CAINFO, s->o.ca_bundle) != CURLE_OK;
    if (s->o.low_speed_time_s > 0) {
        bad |= curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L) != CURLE_OK;
        bad |= curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, progress_cb) != CURLE_OK;
        bad |= curl_easy_setopt(e, CURLOPT_XFERINFODATA, s) != CURLE_OK;
    }
    if (bad)
        return upm_errf(err, UPM_EIO, "%s: this libcurl (%s) lacks a needed option (7.85 or newer is required)",
                        s->url, curl_version());
    s->total = -1;
    return UPM_OK;
}

/* A source of `kind` named url with its buffer (at most max_cap bytes: 0 = no cap), or NULL (ENOMEM). */
static upm_source *source_new(const char *url, int kind, const upm_source_opts *opts, size_t max_cap, upm_err *err)
{
    upm_source *s = calloc(1, sizeof *s);
    if (!s) {
        upm_errf(err, UPM_ENOMEM, "%s: out of memory opening the source", url);
        return NULL;
    }
    s->fd = -1;
    s->kind = kind;
    if (opts)
        s->o = *opts;
    else
        upm_source_opts_default(&s->o);
    s->cap = s->o.buffer_size < MIN_BUFFER ? MIN_BUFFER : s->o.buffer_size;
    if (max_cap && s->cap > max_cap)
        s->cap = max_cap;
    s->url = strdup(url);
    s->buf = malloc(s->cap);
    if (!s->url || !s->buf) {
        upm_errf(err, UPM_ENOMEM, "%s: out of memory for a %zu-byte buffer", url, s->cap);
        upm_source_close(s);
        return NULL;
    }
    return s;
}

int upm_source_open(const char *url, const upm_source_opts *opts, upm_source **out, upm_err *err)
{
    char *path = NULL;
    int kind, rc;

    *out = NULL;
    if (!url)
        return upm_errf(err, UPM_EUSAGE, "upm_source_open: no URL given");
    rc = classify(url, &kind, &path, err);
    if (rc)
        return rc;
    upm_source *s = source_new(url, kind, opts, 0, err);
    if (!s) {
        free(path);
        return UPM_ENOMEM;
    }
    rc = kind == KIND_FILE ? open_file(s, path, err) : setup_http(s, err);
    free(path);
    if (rc) {
        upm_source_close(s);
        return rc;
    }
    *out = s;
    return UPM_OK;
}

int upm_source_open_mem(const void *data, size_t n, const char *name, const upm_source_opts *opts, upm_source **out,
                        upm_err *err)
{
    /* the buffer is no larger than the bytes, so a reader that runs past what it was handed is caught by
     * AddressSanitizer (the fuzz harnesses read through this source) */
    upm_source *s = *out = source_new(name ? name : "memory", KIND_MEM, opts, n ? n : 1, err);
    if (!s)
        return UPM_ENOMEM;
    s->mem = data;
    s->mem_len = n;
    s->seekable = 1;
    s->total = (int64_t)n;
    return UPM_OK;
}

void upm_source_close(upm_source *s)
{
    if (!s)
        return;
    if (s->fd >= 0)
        close(s->fd);
    if (s->in_multi)
        curl_multi_remove_handle(s->multi, s->easy);
    if (s->easy)
        curl_easy_cleanup(s->easy);
    if (s->multi)
        curl_multi_cleanup(s->multi);
    if (s->global_init)
        curl_global_cleanup();
    free(s->buf);
    free(s->url);
    free(s);
}

/* ---- HTTP: callbacks ---- */

static int ieq_prefix(const char *s, size_t n, const char *w)
{
    size_t wl = strlen(w);
    if (n < wl)
        return 0;
    for (size_t i = 0; i < wl; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != w[i])
            return 0;
    }
    return 1;
}

/* Records the status line's reason and Content-Range of the final response (each new status line, e.g.
 * after a redirect, starts over). */
static size_t header_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
    upm_source *s = ud;
    size_t n = size * nmemb;
    char line[256];
    size_t l = n < sizeof line - 1 ? n : sizeof line - 1;

    memcpy(line, ptr, l);
    line[l] = '\0';
    line[strcspn(line, "\r\n")] = '\0';
    if (ieq_prefix(line, l, "http/")) {
        const char *sp = strchr(line, ' ');
        s->have_crange = s->crange_unsatisfied = 0;
        s->reason[0] = '\0';
        if (sp && (sp = strchr(sp + 1, ' ')) != NULL)
            snprintf(s->reason, sizeof s->reason, "%s", sp + 1);
    } else if (ieq_prefix(line, l, "content-range:")) {
        const char *v = line + strlen("content-range:");
        uint64_t a, b, t;
        while (*v == ' ' || *v == '\t')
            v++;
        if (sscanf(v, "bytes %" SCNu64 "-%" SCNu64 "/%" SCNu64, &a, &b, &t) == 3) {
            s->have_crange = 1;
            s->crange_start = a;
            s->crange_total = t;
        } else if (sscanf(v, "bytes */%" SCNu64, &t) == 1) {
            s->crange_unsatisfied = 1;
            s->crange_total = t;
        } else if (sscanf(v, "bytes %" SCNu64 "-%" SCNu64 "/*", &a, &b) == 2) {
            s->have_crange = 1;
            s->crange_start = a;
            s->crange_total = UINT64_MAX;
        }
    }
    return n;
}

/* Stalled = fewer than low_speed_limit * T bytes arrived in a window of T = low_speed_time_s seconds of
 * driven time (curl's own check smooths over 5 s, which makes short limits unpredictable). */
static int progress_cb(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    upm_source *s = ud;
    (void)dltotal, (void)ultotal, (void)ulnow;
    double now = driven_now(s), span = now - s->mark_t;
    if (span < (double)s->o.low_speed_time_s)
        return 0;
    if ((double)(dlnow - s->mark_b) < (double)s->o.low_speed_limit * span) {
        s->abort_kind = ABORT_STALL;
        s->stall_bytes = dlnow - s->mark_b;
        s->stall_secs = span;
        return 1; /* curl ends the attempt with CURLE_ABORTED_BY_CALLBACK */
    }
    s->mark_t = now;
    s->mark_b = dlnow;
    return 0;
}

/* First body byte of an attempt: decides whether the response continues the stream at s->offset. */
static int check_response(upm_source *s)
{
    curl_off_t clen = -1;
    curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &s->status);
    curl_easy_getinfo(s->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &clen);
    if (s->status == 206) {
        if (!s->have_crange || s->crange_start != s->attempt_start)
            return ABORT_RANGE;
        if (s->crange_total != UINT64_MAX)
            s->total = (int64_t)s->crange_total;
        return ABORT_NONE;
    }
    if (s->status >= 200 && s->status < 300) {
        s->skip = s->attempt_start; /* a server that ignores Range sends everything again */
        if (clen >= 0)
            s->total = (int64_t)clen;
        return ABORT_NONE;
    }
    return ABORT_STATUS;
}

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
    upm_source *s = ud;
    size_t n = size * nmemb;

    if (!s->checked) {
        s->checked = 1;
        s->abort_kind = check_response(s);
    }
    if (s->abort_kind != ABORT_NONE)
        return CURL_WRITEFUNC_ERROR;
    size_t drop = s->skip < n ? (size_t)s->skip : n;
    if (n - drop > s->cap - s->len) {
        if (s->len > s->pos) {
            s->paused = 1;
            return CURL_WRITEFUNC_PAUSE; /* curl keeps the chunk and offers it again after unpausing */
        }
        s->pos = s->len = 0;
    }
    s->skip -= drop;
    ptr += drop;
    n -= drop;
    if (n > s->cap - s->len) {
        if (n > s->cap) { /* a chunk larger than the whole buffer: grow once to fit it */
            unsigned char *nb = realloc(s->buf, n);
            if (!nb) {
                s->abort_kind = ABORT_NOMEM;
                return CURL_WRITEFUNC_ERROR;
            }
            s->buf = nb;
            s->cap = n;
        }
    }
    memcpy(s->buf + s->len, ptr, n);
    s->len += n;
    s->offset += n;
    return size * nmemb;
}

/* ---- HTTP: attempts and their outcomes ---- */

static int transient(CURLcode r)
{
    switch (r) {
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_AGAIN:
        return 1;
    default:
        return 0;
    }
}

static void sleep_seconds(double sec)
{
    struct timespec ts;
    if (sec <= 0)
        return;
    ts.tv_sec = (time_t)sec;
    ts.tv_nsec = (long)((sec - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int http_start(upm_source *s, upm_err *err)
{
    const char *range = NULL;

    s->attempt_start = s->offset;
    s->skip = 0;
    s->checked = s->paused = 0;
    s->abort_kind = ABORT_NONE;
    s->status = 0;
    s->reason[0] = s->errbuf[0] = '\0';
    s->have_crange = s->crange_unsatisfied = 0;
    s->mark_t = driven_now(s);
    s->mark_b = 0;
    if (s->offset > 0) {
        snprintf(s->range, sizeof s->range, "%" PRIu64 "-", s->offset);
        range = s->range;
    }
    curl_easy_setopt(s->easy, CURLOPT_RANGE, range);
    CURLMcode mc = curl_multi_add_handle(s->multi, s->easy);
    if (mc != CURLM_OK)
        return fail(s, err, UPM_EIO, "%s: cannot start the transfer: %s", s->url, curl_multi_strerror(mc));
    s->in_multi = 1;
    return UPM_OK;
}

/* Describes a finished attempt that did not complete the stream; returns 1 when it may be retried, 0 when
 * the stream is over (end of data), -1 when it must fail at once with *code. */
static int judge(upm_source *s, CURLcode r, char *what, size_t wn, int *code)
{
    long st = s->status;
    if (!s->checked)
        curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &st);
    *code = UPM_EIO;
    if (s->abort_kind == ABORT_NOMEM) {
        *code = UPM_ENOMEM;
        snprintf(what, wn, "out of memory buffering the response");
        return -1;
    }
    if (s->abort_kind == ABORT_STALL) {
        snprintf(what, wn, "stalled: %" PRId64 " bytes in %.1f s (limit %ld bytes/s over %ld s)",
                 (int64_t)s->stall_bytes, s->stall_secs, s->o.low_speed_limit, s->o.low_speed_time_s);
        return 1;
    }
    if (s->abort_kind == ABORT_RANGE) {
        snprintf(what, wn, "asked for \"Range: bytes=%s\" but got HTTP %ld with %s Content-Range", s->range, st,
                 s->have_crange ? "a different" : "no");
        return -1;
    }
    if (st >= 300 && (r == CURLE_OK || s->abort_kind == ABORT_STATUS)) {
        snprintf(what, wn, "HTTP %ld%s%s", st, s->reason[0] ? " " : "", s->reason);
        if (st == 404 || st == 403 || st == 410) {
            *code = UPM_ENOTFOUND;
            return -1;
        }
        if (st == 416 && s->crange_unsatisfied && s->crange_total == s->offset)
            return 0; /* everything had arrived before the break */
        return st >= 500 || st == 408 || st == 429 ? 1 : -1;
    }
    if (r == CURLE_OK) {
        if (s->skip > 0) {
            snprintf(what, wn, "the server ignored the Range request and its answer is shorter than the %" PRIu64
                     " bytes already read", s->attempt_start);
            return -1;
        }
        if (s->total >= 0 && s->offset != (uint64_t)s->total) {
            snprintf(what, wn, "the transfer ended at byte %" PRIu64 " of %" PRId64, s->offset, s->total);
            return 1;
        }
        return 0;
    }
    snprintf(what, wn, "curl error %d (%s)", (int)r, s->errbuf[0] ? s->errbuf : curl_easy_strerror(r));
    return transient(r) ? 1 : -1;
}

/* Handles the end of an attempt: 1 = end of stream, 0 = a retry was scheduled, < 0 = failed. */
static int http_done(upm_source *s, CURLcode r, upm_err *err)
{
    char what[CURL_ERROR_SIZE + 160];
    int code;

    curl_multi_remove_handle(s->multi, s->easy);
    s->in_multi = 0;
    int verdict = judge(s, r, what, sizeof what, &code);
    if (verdict == 0)
        return 1;
    if (verdict < 0 && s->retries == 0)
        return fail(s, err, code, "%s: %s at byte %" PRIu64 " (not retried)", s->url, what, s->offset);
    if (verdict < 0)
        return fail(s, err, code, "%s: %s at byte %" PRIu64 " (not retried; after %d earlier retries)", s->url, what,
                    s->offset, s->retries);
    if (s->offset > s->attempt_start)
        s->consecutive = 0; /* progress was made: only fruitless attempts in a row count */
    if (s->consecutive >= s->o.max_retries)
        return fail(s, err, UPM_EIO, "%s: %s at byte %" PRIu64 "; gave up after %d retries (%d in a row)", s->url,
                    what, s->offset, s->retries, s->consecutive);
    double wait = s->o.initial_backoff_s;
    for (int i = 0; i < s->consecutive && wait < s->o.max_backoff_s; i++)
        wait *= 2;
    if (wait > s->o.max_backoff_s)
        wait = s->o.max_backoff_s;
    s->consecutive++;
    s->retries++;
    sleep_seconds(wait);
    return 0;
}

/* Drives the transfer until the buffer holds unread bytes or the stream ends. */
static int http_drive(upm_source *s, upm_err *err)
{
    for (;;) {
        int running = 0, rc, q;
        CURLMsg *m;

        if (!s->in_multi && (rc = http_start(s, err)) != 0)
            return rc;
        if (s->paused) {
            s->paused = 0;
            curl_easy_pause(s->easy, CURLPAUSE_CONT); /* may deliver the held chunk right here */
        }
        if (s->len > s->pos)
            return UPM_OK;
        CURLMcode mc = curl_multi_perform(s->multi, &running);
        if (mc != CURLM_OK)
            return fail(s, err, UPM_EIO, "%s: curl_multi_perform: %s", s->url, curl_multi_strerror(mc));
        if (s->len > s->pos)
            return UPM_OK;
        while ((m = curl_multi_info_read(s->multi, &q)) != NULL) {
            if (m->msg != CURLMSG_DONE)
                continue;
            rc = http_done(s, m->data.result, err);
            if (rc < 0)
                return rc;
            if (rc == 1) {
                s->eof = 1;
                return UPM_OK;
            }
            running = 1; /* retry scheduled: start again at the top */
            break;
        }
        if (s->in_multi && running && (mc = curl_multi_poll(s->multi, NULL, 0, 1000, NULL)) != CURLM_OK)
            return fail(s, err, UPM_EIO, "%s: curl_multi_poll: %s", s->url, curl_multi_strerror(mc));
    }
}

static int http_fill(upm_source *s, upm_err *err)
{
    s->fill_entry = upm_monotonic_s();
    int rc = http_drive(s, err);
    s->drive_base += upm_monotonic_s() - s->fill_entry;
    return rc;
}

/* ---- local files ---- */

static int file_fill(upm_source *s, upm_err *err)
{
    ssize_t n;
    do
        n = read(s->fd, s->buf, s->cap);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return fail(s, err, UPM_EIO, "%s: read error at byte %" PRIu64 ": %s", s->url, s->offset, strerror(errno));
    if (n == 0)
        s->eof = 1;
    s->len = (size_t)n;
    s->offset += (uint64_t)n;
    return UPM_OK;
}

/* ---- memory ---- */

static int mem_fill(upm_source *s)
{
    size_t left = s->mem_len - (size_t)s->offset, k = left < s->cap ? left : s->cap;
    memcpy(s->buf, s->mem + s->offset, k);
    if (k == 0)
        s->eof = 1;
    s->len = k;
    s->offset += k;
    return UPM_OK;
}

/* ---- reading ---- */

static int refill(upm_source *s, upm_err *err)
{
    if (s->failed) {
        if (err)
            *err = s->fail_err;
        return s->failed;
    }
    if (s->pos < s->len || s->eof)
        return UPM_OK;
    s->pos = s->len = 0;
    return s->kind == KIND_FILE ? file_fill(s, err) : s->kind == KIND_MEM ? mem_fill(s) : http_fill(s, err);
}

int upm_source_next(upm_source *s, const void **data, size_t *len, upm_err *err)
{
    *data = NULL;
    *len = 0;
    int rc = refill(s, err);
    if (rc)
        return rc;
    *data = s->buf + s->pos;
    *len = s->len - s->pos;
    s->handed += *len;
    s->pos = s->len;
    return UPM_OK;
}

int upm_source_read(upm_source *s, void *buf, size_t n, size_t *got, upm_err *err)
{
    *got = 0;
    if (n == 0)
        return UPM_OK;
    int rc = refill(s, err);
    if (rc)
        return rc;
    size_t k = s->len - s->pos < n ? s->len - s->pos : n;
    memcpy(buf, s->buf + s->pos, k);
    s->pos += k;
    s->handed += k;
    *got = k;
    return UPM_OK;
}

int upm_source_skip(upm_source *s, uint64_t n, uint64_t *skipped, upm_err *err)
{
    *skipped = 0;
    while (*skipped < n) {
        uint64_t k;
        if (s->failed)
            return refill(s, err);
        if (s->pos < s->len) {
            k = s->len - s->pos < n - *skipped ? s->len - s->pos : n - *skipped;
            s->pos += (size_t)k;
        } else if (s->eof) {
            return UPM_OK;
        } else if (s->seekable) {
            /* never past the end, so the offset stays the true position */
            uint64_t left = (uint64_t)s->total > s->offset ? (uint64_t)s->total - s->offset : 0;
            k = n - *skipped < left ? n - *skipped : left;
            if (k == 0)
                return UPM_OK;
            if (s->kind == KIND_FILE && lseek(s->fd, (off_t)k, SEEK_CUR) < 0)
                return fail(s, err, UPM_EIO, "%s: seek failed: %s", s->url, strerror(errno));
            s->offset += k;
        } else {
            int rc = refill(s, err);
            if (rc)
                return rc;
            continue;
        }
        s->handed += k;
        *skipped += k;
    }
    return UPM_OK;
}

int upm_source_can_seek(const upm_source *s)
{
    return s->seekable;
}

const char *upm_source_url(const upm_source *s)
{
    return s->url;
}

uint64_t upm_source_offset(const upm_source *s)
{
    return s->handed;
}

int upm_source_retries(const upm_source *s)
{
    return s->retries;
}
