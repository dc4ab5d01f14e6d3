/* Dataset streams (see stream.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "order.h"
#include "stream.h"

struct upm_dstream {
    const upm_plan_member *m;
    upm_dstream_opts o;
    upm_urlpat *pat;
    int64_t n_shards;
    /* the epoch being read */
    uint64_t epoch;
    uint64_t *order;
    uint64_t n_order;
    upm_shardstream *ss;
    uint64_t done_samples, done_bad_samples, done_bad_shards; /* of closed shardstreams */
    /* the current block */
    uint64_t block;
    upm_stream_pos block_start;
    upm_wds_sample *items;
    uint32_t *perm;
    uint32_t offset; /* emitted so far; == block_size when the block must be (re)loaded */
    int loaded;
};

/* Opens the shard stream of `epoch` at (pos, sample). */
static int open_epoch(upm_dstream *d, uint64_t epoch, uint64_t pos, uint64_t sample, upm_err *err)
{
    if (d->ss) {
        upm_shardstream_counters c;
        upm_shardstream_counters_get(d->ss, &c);
        d->done_samples += c.samples, d->done_bad_samples += c.bad_samples, d->done_bad_shards += c.bad_shards;
        upm_shardstream_close(d->ss);
        d->ss = NULL;
    }
    int64_t *positions = malloc(((size_t)d->n_shards / (size_t)d->o.world + 2) * sizeof *positions);
    if (!positions)
        return upm_errf(err, UPM_ENOMEM, "dataset %s: out of memory", d->m->dataset.name);
    int64_t n = upm_rank_shards(d->o.seed, d->m->id, epoch, d->n_shards, d->o.rank, d->o.world, positions);
    for (int64_t i = 0; i < n; i++)
        d->order[i] = (uint64_t)positions[i];
    free(positions);
    if (n <= 0)
        return upm_errf(err, UPM_EINVAL, "dataset %s: rank %d of %d has no shards", d->m->dataset.name, d->o.rank,
                        d->o.world);
    d->epoch = epoch;
    d->n_order = (uint64_t)n;
    return upm_shardstream_open(d->pat, d->order, d->n_order, pos, sample, &d->o.shards, &d->ss, err);
}

/* The position of the next raw sample, normalised so that the end of an epoch reads as the start of
 * the next one. */
static upm_stream_pos raw_tell(const upm_dstream *d)
{
    uint64_t pos, sample;
    upm_shardstream_tell(d->ss, &pos, &sample);
    upm_stream_pos p = {d->epoch, (int64_t)pos, (int64_t)sample};
    if (pos >= d->n_order)
        p.epoch++, p.shard_pos = 0, p.sample = 0;
    return p;
}

/* One raw sample, moving on to the next epoch at the end of one. */
static int raw_next(upm_dstream *d, upm_wds_sample *out, upm_err *err)
{
    for (int empty_epochs = 0;;) {
        int rc = upm_shardstream_next(d->ss, out, err);
        if (rc != 0)
            return rc < 0 ? rc : 0;
        if (++empty_epochs > 1)
            return upm_errf(err, UPM_EBADDATA, "dataset %s: a whole epoch of rank %d yielded no sample",
                            d->m->dataset.name, d->o.rank);
        if ((rc = open_epoch(d, d->epoch + 1, 0, 0, err)))
            return rc;
    }
}

static void free_items(upm_dstream *d)
{
    for (uint32_t i = 0; d->items && i < d->o.block_size; i++)
        upm_wds_sample_free(&d->items[i]);
}

/* Reads block `block` starting at the stream's current raw position. */
static int load_block(upm_dstream *d, uint64_t block, upm_err *err)
{
    free_items(d);
    d->loaded = 0;
    d->block_start = raw_tell(d);
    if (d->block_start.epoch != d->epoch) {
        int rc = open_epoch(d, d->block_start.epoch, 0, 0, err);
        if (rc)
            return rc;
    }
    for (uint32_t i = 0; i < d->o.block_size; i++) {
        int rc = raw_next(d, &d->items[i], err);
        if (rc < 0)
            return rc;
    }
    d->block = block;
    upm_block_perm(d->o.seed, d->m->id, d->o.rank, block, d->o.block_size, d->perm);
    d->loaded = 1;
    return 0;
}

int upm_dstream_open(const upm_plan_member *m, const upm_dstream_opts *o, const upm_dataset_cursor *at,
                     upm_dstream **out, upm_err *err)
{
    *out = NULL;
    if (o->block_size < 1 || o->world < 1 || o->rank < 0 || o->rank >= o->world)
        return upm_errf(err, UPM_EUSAGE, "dataset stream: bad options (block %u, rank %d of %d)", o->block_size,
                        o->rank, o->world);
    upm_dstream *d = calloc(1, sizeof *d);
    if (!d)
        return upm_errf(err, UPM_ENOMEM, "out of memory");
    d->m = m;
    d->o = *o;
    int rc = upm_urlpat_parse(m->dataset.url_pattern, &d->pat, err);
    if (!rc) {
        d->n_shards = (int64_t)upm_urlpat_count(d->pat);
        d->order = calloc((size_t)d->n_shards / (size_t)o->world + 2, sizeof *d->order);
        d->items = calloc(o->block_size, sizeof *d->items);
        d->perm = calloc(o->block_size, sizeof *d->perm);
        if (!d->order || !d->items || !d->perm)
            rc = upm_errf(err, UPM_ENOMEM, "dataset %s: out of memory for a block of %u", m->dataset.name, o->block_size);
    }
    if (!rc && at) {
        d->done_samples = at->samples, d->done_bad_samples = at->bad_samples, d->done_bad_shards = at->bad_shards;
        rc = open_epoch(d, at->block_start.epoch, (uint64_t)at->block_start.shard_pos, (uint64_t)at->block_start.sample, err);
        if (!rc)
            rc = load_block(d, at->block, err);
        if (!rc && at->offset > o->block_size)
            rc = upm_errf(err, UPM_EINVAL, "cursor of %s: offset %u beyond the block size %u", m->dataset.name,
                          at->offset, o->block_size);
        /* Samples before the offset were consumed before the checkpoint: drop them unread. */
        for (uint32_t i = 0; !rc && i < at->offset; i++)
            upm_wds_sample_free(&d->items[d->perm[i]]);
        d->offset = at->offset;
    } else if (!rc) {
        rc = open_epoch(d, 0, 0, 0, err);
        d->offset = o->block_size; /* the first next() loads block 0 */
        d->block = UINT64_MAX;
    }
    if (rc) {
        upm_dstream_close(d);
        return rc;
    }
    *out = d;
    return 0;
}

int upm_dstream_next(upm_dstream *d, upm_wds_sample *out, upm_err *err)
{
    if (d->offset >= d->o.block_size) {
        int rc = load_block(d, d->block + 1, err); /* UINT64_MAX + 1 == 0: the first block */
        if (rc)
            return rc;
        d->offset = 0;
    }
    *out = d->items[d->perm[d->offset]];
    memset(&d->items[d->perm[d->offset]], 0, sizeof *out);
    d->offset++;
    return 0;
}

void upm_dstream_tell(const upm_dstream *d, upm_dataset_cursor *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", d->m->dataset.name);
    if (d->loaded) {
        out->block_start = d->block_start;
        out->block = d->block;
        out->offset = d->offset;
    } else { /* nothing read yet */
        out->block_start = (upm_stream_pos){0, 0, 0};
        out->block = 0;
        out->offset = 0;
    }
    upm_shardstream_counters c = {0};
    if (d->ss)
        upm_shardstream_counters_get(d->ss, &c);
    out->samples = d->done_samples + c.samples;
    out->bad_samples = d->done_bad_samples + c.bad_samples;
    out->bad_shards = d->done_bad_shards + c.bad_shards;
}

void upm_dstream_close(upm_dstream *d)
{
    if (!d)
        return;
    free_items(d);
    upm_shardstream_close(d->ss);
    upm_urlpat_free(d->pat);
    free(d->items);
    free(d->perm);
    free(d->order);
    free(d);
}
