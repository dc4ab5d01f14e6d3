/* Dataset streams (see stream.h): R readers per stream, each on its own thread with its own share of
 * the rank's shards, interleaved round robin; then the block shuffle. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "order.h"
#include "stream.h"

#define LANE_QUEUE 32 /* samples a reader may read ahead */

typedef struct queued {
    upm_wds_sample s;
    uint64_t pos, sample; /* the reader's position after this sample */
} queued;

/* One reader: its shard list of the epoch, its shard stream, and the samples it read ahead. */
typedef struct lane {
    uint64_t *order;
    uint64_t n_order;
    upm_shardstream *ss;
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    queued q[LANE_QUEUE];
    int head, count;
    int ended, stop; /* ended: the reader met the end of its list (rc 0) or failed (rc < 0) */
    int rc;
    upm_err err;
    upm_lane_pos at; /* the consumer's position in this lane */
} lane;

struct upm_dstream {
    const upm_plan_member *m;
    upm_dstream_opts o;
    upm_urlpat *pat;
    int64_t n_shards;
    int readers;
    uint64_t epoch;
    uint32_t rr;
    lane lanes[UPM_MAX_READERS];
    uint64_t done_bad_samples, done_bad_shards; /* of closed shard streams */
    uint64_t consumed;                                        /* raw samples handed out */
    /* the current block */
    uint64_t block;
    upm_stream_pos block_start;
    upm_wds_sample *items;
    uint32_t *perm;
    uint32_t offset; /* emitted so far; == block_size when the block must be (re)loaded */
    int loaded;
};

static void *reader(void *arg)
{
    lane *ln = arg;
    for (;;) {
        pthread_mutex_lock(&ln->mu);
        while (ln->count == LANE_QUEUE && !ln->stop)
            pthread_cond_wait(&ln->cv, &ln->mu);
        int stop = ln->stop;
        pthread_mutex_unlock(&ln->mu);
        if (stop)
            return NULL;
        queued item = {0};
        upm_err err = {0};
        int rc = upm_shardstream_next(ln->ss, &item.s, &err);
        upm_shardstream_tell(ln->ss, &item.pos, &item.sample);
        pthread_mutex_lock(&ln->mu);
        if (rc == 1) {
            ln->q[(ln->head + ln->count) % LANE_QUEUE] = item;
            ln->count++;
        } else {
            ln->ended = 1, ln->rc = rc, ln->err = err;
        }
        pthread_cond_broadcast(&ln->cv);
        pthread_mutex_unlock(&ln->mu);
        if (rc != 1)
            return NULL;
    }
}

/* Stops a reader and releases what it holds; its counters go to the stream's totals. */
static void lane_close(upm_dstream *d, lane *ln)
{
    if (ln->started) {
        pthread_mutex_lock(&ln->mu);
        ln->stop = 1;
        pthread_cond_broadcast(&ln->cv);
        pthread_mutex_unlock(&ln->mu);
        pthread_join(ln->thread, NULL);
        pthread_mutex_destroy(&ln->mu);
        pthread_cond_destroy(&ln->cv);
        ln->started = 0;
    }
    for (; ln->count > 0; ln->count--, ln->head = (ln->head + 1) % LANE_QUEUE)
        upm_wds_sample_free(&ln->q[ln->head].s);
    if (ln->ss) {
        upm_shardstream_counters c;
        upm_shardstream_counters_get(ln->ss, &c);
        d->done_bad_samples += c.bad_samples, d->done_bad_shards += c.bad_shards;
        upm_shardstream_close(ln->ss);
        ln->ss = NULL;
    }
    free(ln->order);
    ln->order = NULL;
}

/* Opens every reader of `epoch` at the positions in p (p->epoch is ignored). */
static int open_epoch(upm_dstream *d, uint64_t epoch, const upm_stream_pos *p, upm_err *err)
{
    for (int t = 0; t < d->readers; t++)
        lane_close(d, &d->lanes[t]);
    int64_t *positions = malloc(((size_t)d->n_shards / (size_t)d->o.world + 2) * sizeof *positions);
    if (!positions)
        return upm_errf(err, UPM_ENOMEM, "dataset %s: out of memory", d->m->dataset.name);
    int64_t n = upm_rank_shards(d->o.seed, d->m->id, epoch, d->n_shards, d->o.rank, d->o.world, positions);
    if (n <= 0) {
        free(positions);
        return upm_errf(err, UPM_EINVAL, "dataset %s: rank %d of %d has no shards", d->m->dataset.name, d->o.rank,
                        d->o.world);
    }
    d->epoch = epoch;
    d->rr = p->rr;
    int rc = 0;
    for (int t = 0; t < d->readers && !rc; t++) { /* reader t: the rank's positions t, t + R, ... */
        lane *ln = &d->lanes[t];
        memset(ln, 0, sizeof *ln);
        ln->at = p->lane[t];
        if (!(ln->order = calloc((size_t)(n / d->readers + 1), sizeof *ln->order))) {
            rc = upm_errf(err, UPM_ENOMEM, "dataset %s: out of memory", d->m->dataset.name);
            break;
        }
        for (int64_t j = t; j < n; j += d->readers)
            ln->order[ln->n_order++] = (uint64_t)positions[j];
        if (ln->at.done || ln->n_order == 0) { /* nothing left to read this epoch */
            ln->at.done = 1, ln->ended = 1;
            continue;
        }
        rc = upm_shardstream_open(d->pat, ln->order, ln->n_order, (uint64_t)ln->at.shard_pos, (uint64_t)ln->at.sample,
                                  &d->o.shards, &ln->ss, err);
        if (!rc) {
            pthread_mutex_init(&ln->mu, NULL);
            pthread_cond_init(&ln->cv, NULL);
            if (pthread_create(&ln->thread, NULL, reader, ln) != 0) {
                pthread_mutex_destroy(&ln->mu);
                pthread_cond_destroy(&ln->cv);
                rc = upm_errf(err, UPM_ENOMEM, "dataset %s: cannot start a reader thread", d->m->dataset.name);
            } else {
                ln->started = 1;
            }
        }
    }
    free(positions);
    return rc;
}

/* Where the stream stands: the next sample's reader and each reader's consumed position. */
static upm_stream_pos raw_tell(const upm_dstream *d)
{
    upm_stream_pos p = {.epoch = d->epoch, .rr = d->rr, .readers = d->readers};
    for (int t = 0; t < d->readers; t++)
        p.lane[t] = d->lanes[t].at;
    return p;
}

/* The next sample of the interleave: reader rr, or the next reader that still has samples; a new
 * epoch once every reader is done. */
static int raw_next(upm_dstream *d, upm_wds_sample *out, upm_err *err)
{
    for (int idle = 0;;) {
        int all_done = 1;
        for (int t = 0; t < d->readers; t++)
            all_done &= d->lanes[t].at.done;
        if (all_done) {
            if (++idle > 1)
                return upm_errf(err, UPM_EBADDATA, "dataset %s: a whole epoch of rank %d yielded no sample",
                                d->m->dataset.name, d->o.rank);
            upm_stream_pos start = {.readers = d->readers};
            int rc = open_epoch(d, d->epoch + 1, &start, err);
            if (rc)
                return rc;
            continue;
        }
        lane *ln = &d->lanes[d->rr];
        d->rr = (d->rr + 1) % (uint32_t)d->readers;
        if (ln->at.done)
            continue;
        pthread_mutex_lock(&ln->mu);
        while (ln->count == 0 && !ln->ended)
            pthread_cond_wait(&ln->cv, &ln->mu);
        int got = ln->count > 0, rc = ln->rc;
        if (got) {
            queued *q = &ln->q[ln->head];
            *out = q->s;
            ln->at.shard_pos = (int64_t)q->pos, ln->at.sample = (int64_t)q->sample;
            ln->head = (ln->head + 1) % LANE_QUEUE;
            ln->count--;
            pthread_cond_broadcast(&ln->cv);
        } else if (rc < 0) {
            *err = ln->err;
        }
        pthread_mutex_unlock(&ln->mu);
        if (got) {
            d->consumed++;
            return 0;
        }
        if (rc < 0)
            return rc;
        ln->at.done = 1; /* this reader's list is used up for the epoch */
    }
}

static void free_items(upm_dstream *d)
{
    for (uint32_t i = 0; d->items && i < d->o.block_size; i++)
        upm_wds_sample_free(&d->items[i]);
}

/* Reads block `block` from the stream's current raw position. */
static int load_block(upm_dstream *d, uint64_t block, upm_err *err)
{
    free_items(d);
    d->loaded = 0;
    d->block_start = raw_tell(d);
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
    int readers = o->readers > 0 ? o->readers : 1;
    if (o->block_size < 1 || o->world < 1 || o->rank < 0 || o->rank >= o->world || readers > UPM_MAX_READERS)
        return upm_errf(err, UPM_EUSAGE, "dataset stream: bad options (block %u, rank %d of %d, %d readers)",
                        o->block_size, o->rank, o->world, o->readers);
    if (at && at->block_start.readers != readers)
        return upm_errf(err, UPM_EINVAL, "cursor of %s was saved with %d readers, this run has %d", m->dataset.name,
                        at->block_start.readers, readers);
    upm_dstream *d = calloc(1, sizeof *d);
    if (!d)
        return upm_errf(err, UPM_ENOMEM, "out of memory");
    d->m = m;
    d->o = *o;
    d->readers = readers;
    int rc = upm_urlpat_parse(m->dataset.url_pattern, &d->pat, err);
    if (!rc) {
        d->n_shards = (int64_t)upm_urlpat_count(d->pat);
        d->items = calloc(o->block_size, sizeof *d->items);
        d->perm = calloc(o->block_size, sizeof *d->perm);
        if (!d->items || !d->perm)
            rc = upm_errf(err, UPM_ENOMEM, "dataset %s: out of memory for a block of %u", m->dataset.name, o->block_size);
    }
    if (!rc && at) {
        d->done_bad_samples = at->bad_samples, d->done_bad_shards = at->bad_shards;
        d->consumed = at->samples;
        rc = open_epoch(d, at->block_start.epoch, &at->block_start, err);
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
        upm_stream_pos start = {.readers = readers};
        rc = open_epoch(d, 0, &start, err);
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
    } else { /* nothing read yet: the start of epoch 0, block 0 */
        out->block_start = (upm_stream_pos){.readers = d->readers};
    }
    /* Samples handed out (deterministic); bad items as counted by the readers closed so far (readers
     * read ahead, so their live counts depend on timing and stay out of the cursor). */
    out->samples = d->consumed;
    out->bad_samples = d->done_bad_samples, out->bad_shards = d->done_bad_shards;
}

void upm_dstream_close(upm_dstream *d)
{
    if (!d)
        return;
    free_items(d);
    for (int t = 0; t < d->readers; t++)
        lane_close(d, &d->lanes[t]);
    upm_urlpat_free(d->pat);
    free(d->items);
    free(d->perm);
    free(d);
}
