/* upm_source: a readable byte stream for ONE shard URL (plain path, file://, http://, https://), with
 * bounded memory, retries with exponential backoff, and byte-exact resume of broken HTTP transfers.
 *
 * Design. Pull model, no threads, no temporary files: the reader asks for bytes and the source drives
 * a private curl_multi handle until its buffer holds some. The buffer has a fixed capacity (opts
 * buffer_size); when it is full the curl write callback answers CURL_WRITEFUNC_PAUSE, so curl stops
 * reading the socket (TCP flow control then holds the server back) and memory stays bounded per stream
 * whatever the shard size. Every byte curl accepts into the buffer counts toward the stream offset.
 * When a transfer breaks (connection reset, timeout, a stall under the low-speed limit, HTTP 5xx/408/429,
 * a body shorter than announced), the source waits initial_backoff * 2^k seconds and asks again with
 * "Range: bytes=OFFSET-": a 206 must carry "Content-Range: bytes OFFSET-..." (anything else is an error,
 * never silently spliced), and a 200 (a server that ignores Range) is accepted by discarding the first
 * OFFSET bytes. So the reader sees every byte of the shard exactly once, however often it broke.
 * The retry count resets whenever an attempt delivered bytes, so a long shard may survive many breaks
 * but a dead server fails after max_retries consecutive fruitless attempts. 404, 403 and 410 fail at
 * once with UPM_ENOTFOUND; other 4xx and non-transient curl errors (bad TLS certificate, malformed URL)
 * fail at once with UPM_EIO. Every error message starts with the URL and says what happened (HTTP
 * status, curl error, retries used). A missing local file is UPM_ENOTFOUND. */
#ifndef UPM_SOURCE_H
#define UPM_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct upm_source_opts {
    double connect_timeout_s;   /* TCP + TLS connect, per attempt (default 30) */
    long low_speed_limit;       /* a transfer that receives fewer than low_speed_limit bytes/s ... */
    long low_speed_time_s;      /* ... over a window of this many seconds is stalled (defaults 1024, 30);
                                 * only time spent waiting inside a read counts; 0 disables */
    int max_retries;            /* consecutive failed attempts allowed after the first (default 5) */
    double initial_backoff_s;   /* wait before the first retry; doubles each time (default 1) */
    double max_backoff_s;       /* cap on one wait (default 30) */
    size_t buffer_size;         /* bytes buffered per stream (default 1 MiB; at least 64 KiB is used) */
    const char *ca_bundle;      /* https: a PEM file of CAs to trust instead of the system's (a private CA);
                                 * default $UPMOE_CA_BUNDLE when set, else NULL (the system's CAs) */
} upm_source_opts;

/* Fills o with the defaults above. */
void upm_source_opts_default(upm_source_opts *o);

typedef struct upm_source upm_source;

/* Opens url. opts may be NULL for the defaults. Local files are opened here (UPM_ENOTFOUND when
 * missing, UPM_EIO when unreadable or a directory); an HTTP transfer starts on the first read, so HTTP
 * errors surface from upm_source_next/read. Schemes other than file/http/https are UPM_EUSAGE (the
 * rules of common/urlpattern.h: no ftp:, pipe:, gopher:...). */
int upm_source_open(const char *url, const upm_source_opts *opts, upm_source **out, upm_err *err);
void upm_source_close(upm_source *s);

/* A source over bytes already in memory (data[0..n), which must outlive it), named `name` in messages:
 * read in chunks of at most opts->buffer_size as a local file is, and seekable. For tools that hold a
 * shard's bytes and for the fuzz harnesses (fuzz/), which feed the real readers from memory. */
int upm_source_open_mem(const void *data, size_t n, const char *name, const upm_source_opts *opts, upm_source **out,
                        upm_err *err);

/* Zero-copy read: points *data at the next *len bytes (len > 0), or sets *len = 0 at the end of the
 * stream. The bytes stay valid until the next call on s. Returns 0 or a negative UPM_E*; after an
 * error the source stays failed and returns the same error again. */
int upm_source_next(upm_source *s, const void **data, size_t *len, upm_err *err);

/* Copying read of up to n bytes into buf; *got = 0 only at the end of the stream. */
int upm_source_read(upm_source *s, void *buf, size_t n, size_t *got, upm_err *err);

/* Skips up to n bytes without handing them out; *skipped says how many (fewer only at the end of the
 * stream). Local files seek; HTTP streams read and drop (a new Range request would cost a round trip and
 * is not worth it for the within-shard skips a resumed stream does). */
int upm_source_skip(upm_source *s, uint64_t n, uint64_t *skipped, upm_err *err);

/* 1 when upm_source_skip can seek (local regular files), so libarchive may use it. */
int upm_source_can_seek(const upm_source *s);

const char *upm_source_url(const upm_source *s);
/* Bytes handed to the reader so far (the stream position). */
uint64_t upm_source_offset(const upm_source *s);
/* Retries made so far (all attempts after the first, over the stream's life). */
int upm_source_retries(const upm_source *s);

#endif
