/* upm_shardstream: WebDataset samples from a list of shards, in a given order, from a given position;
 * bad shards and bad samples are skipped, counted and reported, within an error budget.
 *
 * The shards are a upm_urlpat plus an order array of shard indices (the sampler passes its shuffled
 * order); the stream opens one shard at a time (one upm_wds, so memory is one source buffer plus one
 * sample). Resume: start at (position p in the order, sample s in that shard): shards before p are never
 * opened, and the first s samples of shard p are skipped reading tar headers only (no field bytes are
 * copied, nothing is decoded). upm_shardstream_tell gives the position to store in a checkpoint.
 *
 * Errors: a shard that cannot be opened (404, retries exhausted, not a tar) or breaks part-way (damaged
 * or truncated tar) is a bad shard: what it delivered before the damage stands, the rest is skipped. A
 * bad sample (duplicate extension, oversized member) is skipped. Each is passed to the report callback
 * with URL, key and message. Beyond the budget (more than max_bad_shards bad shards, or, once at least
 * min_samples samples were met, a bad-sample ratio above max_bad_sample_ratio) the stream fails for good
 * with a message such as "dataset stream: 4 bad shards (limit 3): https://host/s-3.tar: HTTP 404 ...". */
#ifndef UPM_SHARDSTREAM_H
#define UPM_SHARDSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "source.h"
#include "urlpattern.h"
#include "wds.h"

/* One skipped item, for logging. Strings are valid during the callback only. */
typedef struct upm_stream_report {
    const char *url;
    const char *key;      /* the bad sample's key; NULL for a shard error */
    uint64_t position;    /* position in the order */
    uint64_t shard;       /* shard index in the pattern */
    uint64_t sample;      /* index of the bad sample in its shard; for a shard error, of the first sample lost */
    int code;             /* UPM_ENOTFOUND, UPM_EIO, UPM_EBADDATA */
    const char *msg;      /* the full one-line message, starting with the URL */
    int decode;           /* 1: the sample was read whole but its content does not decode (an undecodable
                             image or video, a bad label, text that is not UTF-8: upm_evalset), 0: the
                             shard's structure (tar damage, a duplicate member, a missing or failed shard) */
} upm_stream_report;

typedef void (*upm_stream_report_fn)(void *ctx, const upm_stream_report *r);

typedef struct upm_shardstream_opts {
    upm_source_opts source;
    upm_wds_opts wds;
    int64_t max_bad_shards;      /* fail when more shards than this are bad; < 0: no limit (default 3) */
    double max_bad_sample_ratio; /* fail when bad / (good + bad) exceeds this ... (default 0.01) */
    uint64_t min_samples;        /* ... once good + bad >= this (default 1000) */
    upm_stream_report_fn report; /* called for every skipped shard or sample (may be NULL) */
    void *report_ctx;
} upm_shardstream_opts;

void upm_shardstream_opts_default(upm_shardstream_opts *o);

typedef struct upm_shardstream_counters {
    uint64_t samples;         /* good samples returned */
    uint64_t bytes;           /* field bytes of those samples */
    uint64_t bad_samples;
    uint64_t bad_shards;
    uint64_t shards_done;     /* shards read to their end */
    uint64_t skipped_samples; /* samples skipped to reach the start position */
    uint64_t retries;         /* HTTP retries over all shards */
} upm_shardstream_counters;

typedef struct upm_shardstream upm_shardstream;

/* pat must outlive the stream. order holds n shard indices (each < upm_urlpat_count(pat)), copied; with
 * order == NULL the stream reads shards 0..n-1 in pattern order. Starts at position start_pos, skipping
 * start_sample samples of that shard. opts may be NULL for the defaults. Nothing is opened here. */
int upm_shardstream_open(const upm_urlpat *pat, const uint64_t *order, uint64_t n, uint64_t start_pos,
                         uint64_t start_sample, const upm_shardstream_opts *opts, upm_shardstream **out,
                         upm_err *err);
void upm_shardstream_close(upm_shardstream *s);

/* Returns 1 with the next good sample in *out (free it with upm_wds_sample_free), 0 when every shard has
 * been read, or a negative UPM_E* when the stream failed (error budget exceeded, out of memory); a failed
 * stream returns the same error again. */
int upm_shardstream_next(upm_shardstream *s, upm_wds_sample *out, upm_err *err);

/* The position of the next sample: resuming with (*pos, *sample) continues right after the last sample
 * returned. */
void upm_shardstream_tell(const upm_shardstream *s, uint64_t *pos, uint64_t *sample);
void upm_shardstream_counters_get(const upm_shardstream *s, upm_shardstream_counters *c);

#endif
