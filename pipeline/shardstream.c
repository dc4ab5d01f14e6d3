/* Shard streams: walks an order of shard indices over a URL pattern, one upm_wds at a time, skipping and
 * reporting bad shards and samples within an error budget, and resuming at (position, sample). */
#include "shardstream.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define URL_SMALL 4096
#define URL_LARGE (((size_t)1 << 20) + 1) /* an expansion is never longer than its pattern (<= 1 MiB) */

struct upm_shardstream {
    const upm_urlpat *pat;
    uint64_t *order; /* NULL: identity */
    uint64_t n, pos;
    uint64_t start_pos, start_sample;
    upm_shardstream_opts o;
    upm_wds *cur;
    uint64_t expect;  /* index of the next sample in the current shard */
    char *url;
    size_t url_cap;
    upm_shardstream_counters c;
    upm_err last_bad; /* the latest report, quoted when the budget runs out */
    int failed;
    upm_err fail_err;
};

void upm_shardstream_opts_default(upm_shardstream_opts *o)
{
    memset(o, 0, sizeof *o);
    upm_source_opts_default(&o->source);
    upm_wds_opts_default(&o->wds);
    o->max_bad_shards = 3;
    o->max_bad_sample_ratio = 0.01;
    o->min_samples = 1000;
}

int upm_shardstream_open(const upm_urlpat *pat, const uint64_t *order, uint64_t n, uint64_t start_pos,
                         uint64_t start_sample, const upm_shardstream_opts *opts, upm_shardstream **out,
                         upm_err *err)
{
    uint64_t count = upm_urlpat_count(pat);
    *out = NULL;
    if (!pat)
        return upm_errf(err, UPM_EUSAGE, "dataset stream: no URL pattern given");
    if (!order && n > count)
        return upm_errf(err, UPM_EINVAL, "dataset stream: %" PRIu64 " shards asked for but the pattern has %" PRIu64,
                        n, count);
    for (uint64_t i = 0; order && i < n; i++)
        if (order[i] >= count)
            return upm_errf(err, UPM_EINVAL, "dataset stream: shard index %" PRIu64 " at position %" PRIu64
                            " is out of range (the pattern has %" PRIu64 " shards)", order[i], i, count);
    if (start_pos > n)
        return upm_errf(err, UPM_EINVAL, "dataset stream: start position %" PRIu64 " is past the %" PRIu64
                        " shards of the order", start_pos, n);
    upm_shardstream *s = calloc(1, sizeof *s);
    if (!s)
        return upm_errf(err, UPM_ENOMEM, "dataset stream: out of memory");
    if (order && n > 0 && (n > SIZE_MAX / sizeof *order || !(s->order = malloc(n * sizeof *order)))) {
        free(s);
        return upm_errf(err, UPM_ENOMEM, "dataset stream: out of memory for an order of %" PRIu64 " shards", n);
    }
    if (s->order)
        memcpy(s->order, order, n * sizeof *order);
    s->pat = pat;
    s->n = n;
    s->pos = s->start_pos = start_pos;
    s->start_sample = start_sample;
    if (opts)
        s->o = *opts;
    else
        upm_shardstream_opts_default(&s->o);
    *out = s;
    return UPM_OK;
}

static void close_current(upm_shardstream *s)
{
    if (!s->cur)
        return;
    s->c.retries += (uint64_t)upm_source_retries(upm_wds_source(s->cur));
    upm_wds_close(s->cur);
    s->cur = NULL;
}

void upm_shardstream_close(upm_shardstream *s)
{
    if (!s)
        return;
    close_current(s);
    free(s->order);
    free(s->url);
    free(s);
}

static uint64_t shard_at(const upm_shardstream *s, uint64_t pos)
{
    return s->order ? s->order[pos] : pos;
}

static int stream_fail(upm_shardstream *s, upm_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int stream_fail(upm_shardstream *s, upm_err *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->fail_err.msg, sizeof s->fail_err.msg, fmt, ap);
    va_end(ap);
    s->fail_err.code = s->failed = code;
    close_current(s);
    if (err)
        *err = s->fail_err;
    return code;
}

/* Checks the error budget after a change of the counters. */
static int check_budget(upm_shardstream *s, upm_err *err)
{
    const upm_shardstream_counters *c = &s->c;
    uint64_t seen = c->samples + c->bad_samples;
    if (s->o.max_bad_shards >= 0 && c->bad_shards > (uint64_t)s->o.max_bad_shards)
        return stream_fail(s, err, UPM_EBADDATA, "dataset stream: %" PRIu64 " bad shards (limit %" PRId64 "): %s",
                           c->bad_shards, s->o.max_bad_shards, s->last_bad.msg);
    if (c->bad_samples > 0 && seen >= s->o.min_samples && (double)c->bad_samples > s->o.max_bad_sample_ratio * (double)seen)
        return stream_fail(s, err, UPM_EBADDATA, "dataset stream: %" PRIu64 " bad samples of %" PRIu64 " (%.2f%%, "
                           "limit %.2f%%): %s", c->bad_samples, seen, 100.0 * (double)c->bad_samples / (double)seen,
                           100.0 * s->o.max_bad_sample_ratio, s->last_bad.msg);
    return UPM_OK;
}

/* Reports a skipped shard (key == NULL) or sample, counts it and checks the budget. */
static int skipped(upm_shardstream *s, const upm_err *e, const char *key, uint64_t sample, upm_err *err)
{
    upm_stream_report r = {s->url, key, s->pos, shard_at(s, s->pos), sample, e->code, e->msg, 0};
    s->last_bad = *e;
    if (key)
        s->c.bad_samples++;
    else
        s->c.bad_shards++;
    if (s->o.report)
        s->o.report(s->o.report_ctx, &r);
    if (!key) {
        close_current(s);
        s->pos++;
    }
    return check_budget(s, err);
}

static int make_url(upm_shardstream *s, upm_err *err)
{
    uint64_t i = shard_at(s, s->pos);
    for (size_t want = URL_SMALL;; want = URL_LARGE) {
        if (s->url_cap < want) {
            char *u = realloc(s->url, want);
            if (!u)
                return stream_fail(s, err, UPM_ENOMEM, "dataset stream: out of memory");
            s->url = u;
            s->url_cap = want;
        }
        int rc = upm_urlpat_get(s->pat, i, s->url, s->url_cap, err);
        if (rc >= 0)
            return UPM_OK;
        if (want == URL_LARGE)
            return stream_fail(s, err, rc, "dataset stream: %s", err ? err->msg : "cannot build a shard URL");
    }
}

/* Opens the shard at s->pos and skips to the start sample when resuming into it. Returns 1 when a
 * shard is open, 0 when the shard was bad (reported, s->pos moved on), < 0 when the stream failed. */
static int open_current(upm_shardstream *s, upm_err *err)
{
    upm_err e;
    uint64_t skip = s->pos == s->start_pos ? s->start_sample : 0, done = 0;
    int rc = make_url(s, err);
    if (rc)
        return rc;
    s->expect = 0;
    upm_source *src;
    rc = upm_source_open(s->url, &s->o.source, &src, &e);
    if (!rc && (rc = upm_wds_open_source(src, &s->o.wds, &s->cur, &e)) != 0) {
        s->c.retries += (uint64_t)upm_source_retries(src);
        upm_source_close(src);
    }
    if (!rc && skip > 0) {
        rc = upm_wds_skip(s->cur, skip, &done, &e);
        s->c.skipped_samples += done;
        s->expect = done;
    }
    if (rc == UPM_ENOMEM)
        return stream_fail(s, err, rc, "%s", e.msg);
    if (rc)
        return (rc = skipped(s, &e, NULL, s->expect, err)) < 0 ? rc : 0;
    return 1;
}

int upm_shardstream_next(upm_shardstream *s, upm_wds_sample *out, upm_err *err)
{
    memset(out, 0, sizeof *out);
    for (;;) {
        upm_err e;
        int rc;
        if (s->failed) {
            if (err)
                *err = s->fail_err;
            return s->failed;
        }
        if (!s->cur) {
            if (s->pos >= s->n)
                return 0;
            if ((rc = open_current(s, err)) <= 0) {
                if (rc < 0)
                    return rc;
                continue;
            }
        }
        rc = upm_wds_next(s->cur, out, &e);
        if (rc == 1) {
            s->expect = out->index + 1;
            s->c.samples++;
            for (size_t i = 0; i < out->n_fields; i++)
                s->c.bytes += out->fields[i].size;
            if ((rc = check_budget(s, err)) < 0) {
                upm_wds_sample_free(out);
                return rc;
            }
            return 1;
        }
        if (rc == 0) {
            close_current(s);
            s->c.shards_done++;
            s->pos++;
            continue;
        }
        if (rc == UPM_ENOMEM)
            return stream_fail(s, err, rc, "%s", e.msg);
        if (upm_wds_broken(s->cur)) {
            rc = skipped(s, &e, NULL, s->expect, err);
        } else {
            s->expect = upm_wds_next_index(s->cur);
            const char *key = upm_wds_last_key(s->cur);
            rc = skipped(s, &e, key ? key : "", s->expect - 1, err);
        }
        if (rc < 0)
            return rc;
    }
}

void upm_shardstream_tell(const upm_shardstream *s, uint64_t *pos, uint64_t *sample)
{
    if (s->cur && upm_wds_at_end(s->cur)) {
        *pos = s->pos + 1;
        *sample = 0;
    } else if (s->cur) {
        *pos = s->pos;
        *sample = s->expect;
    } else {
        *pos = s->pos;
        *sample = s->pos == s->start_pos ? s->start_sample : 0;
    }
}

void upm_shardstream_counters_get(const upm_shardstream *s, upm_shardstream_counters *c)
{
    *c = s->c;
    if (s->cur)
        c->retries += (uint64_t)upm_source_retries(upm_wds_source(s->cur));
}
