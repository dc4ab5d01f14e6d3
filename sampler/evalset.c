/* The evaluation pass over one dataset (see evalset.h). */
#include "evalset.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formulation.h"
#include "pool.h"

struct upm_evalset {
    upm_evalset_opts o;
    upm_dataset dataset;
    upm_task task;
    int n_labels;
    int views; /* rows per sample: a video label task's crops x clips, else 1 */
    upm_urlpat *pat;
    upm_shardstream *stream;
    upm_pool *pool;
    uint64_t done, skipped, read;
    int ended;
    /* the batch being filled */
    upm_wds_sample *raw;
    int *status;
    upm_err *errs;
    uint64_t first; /* the pass index of raw[0] */
    upm_batch *b;
    int keep_texts;  /* pair tasks with a text target, caption tasks: the rows' whole caption fields are kept */
    char **texts;    /* [batch] */
    size_t *text_lens;
};

void upm_evalset_opts_default(upm_evalset_opts *o)
{
    memset(o, 0, sizeof *o);
    o->batch = 32;
    o->threads = 2;
    o->collate.image_size = 224;
    o->collate.frames = 8;
    o->collate.video_interval = 32;
    upm_shardstream_opts_default(&o->shards);
}

static void bad_sample(void *ctx, const upm_stream_report *r)
{
    upm_evalset *e = ctx;
    e->skipped++;
    if (e->o.shards.report)
        e->o.shards.report(e->o.shards.report_ctx, r);
}

int upm_evalset_open(upm_catalog *cat, const char *dataset, const upm_evalset_opts *o, upm_bpe *bpe,
                     upm_evalset **out, upm_err *err)
{
    *out = NULL;
    if (o->batch < 1 || o->threads < 1)
        return upm_errf(err, UPM_EUSAGE, "evaluation needs a batch and threads of at least 1");
    upm_evalset *e = calloc(1, sizeof *e);
    if (!e)
        return upm_errf(err, UPM_ENOMEM, "out of memory");
    e->o = *o;
    e->o.collate.train = 0;
    e->o.collate.strict_labels = !o->verify;
    e->o.collate.bpe = bpe;
    int rc = upm_dataset_get(cat, dataset, &e->dataset, err);
    if (!rc)
        rc = upm_task_get(cat, e->dataset.task, &e->task, err);
    if (!rc && !e->dataset.url_pattern[0])
        rc = upm_errf(err, UPM_EINVAL, "dataset %s has no shard URL yet (set it with 'upmoe-catalog set %s "
                      "url=PATTERN')", dataset, dataset);
    const upm_formulation_desc *fd = rc ? NULL : upm_formulation_desc_get(e->task.formulation);
    if (!rc && !fd)
        rc = upm_errf(err, UPM_EINVAL, "task %s: unknown formulation %d", e->task.name, (int)e->task.formulation);
    if (!rc && fd->targets == UPM_TARGETS_LABEL_TEXTS) {
        upm_labelset ls;
        const char *name = e->dataset.label_set[0] ? e->dataset.label_set : e->task.label_set;
        if (!(rc = upm_labelset_get(cat, name, &ls, err))) {
            e->n_labels = (int)ls.n;
            upm_labelset_free(&ls);
        }
    }
    e->o.collate.n_labels = e->n_labels;
    e->views = rc ? 1 : upm_collate_views(&e->task, &e->o.collate);
    if (e->views == 1) /* other tasks see one view: the centre crop of the centre clip */
        e->o.collate.video_crops = e->o.collate.video_clips = 1;
    else if (e->o.collate.video_crops > 1 && e->o.collate.video_crops != 3)
        rc = upm_errf(err, UPM_EUSAGE, "video crops must be 1 or 3 (got %d)", e->o.collate.video_crops);
    e->keep_texts = !rc && !o->verify && ((fd->targets == UPM_TARGETS_PAIRED && e->task.target_modality == UPM_MOD_TEXT) ||
                            fd->caption_queries); /* the gallery's captions; the references of generated ones */
    if (!rc && e->keep_texts && (!(e->texts = calloc((size_t)o->batch, sizeof *e->texts)) ||
                                 !(e->text_lens = calloc((size_t)o->batch, sizeof *e->text_lens))))
        rc = upm_errf(err, UPM_ENOMEM, "out of memory for a batch of %d", o->batch);
    if (!rc)
        rc = upm_urlpat_parse(e->dataset.url_pattern, &e->pat, err);
    upm_shardstream_opts so = o->shards;
    so.report = bad_sample, so.report_ctx = e;
    if (!rc)
        rc = upm_shardstream_open(e->pat, NULL, upm_urlpat_count(e->pat), 0, 0, &so, &e->stream, err);
    if (!rc)
        rc = upm_pool_new(o->threads, &e->pool, err);
    if (!rc && (!(e->raw = calloc((size_t)o->batch, sizeof *e->raw)) ||
                !(e->status = calloc((size_t)o->batch, sizeof *e->status)) ||
                !(e->errs = calloc((size_t)o->batch, sizeof *e->errs))))
        rc = upm_errf(err, UPM_ENOMEM, "out of memory for a batch of %d", o->batch);
    if (rc) {
        upm_evalset_close(e);
        return rc;
    }
    *out = e;
    return 0;
}

static void fill_row(void *ctx, int i, int worker)
{
    (void)worker;
    upm_evalset *e = ctx;
    /* evaluation transforms are deterministic; the stream is keyed by the sample's place in the pass */
    upm_rng rng = upm_rng_stream(0, UPM_RNG_AUGMENT, e->first + (uint64_t)i, 0, 0);
    upm_collate_opts co = e->o.collate;
    e->status[i] = 0;
    for (int v = 0; v < e->views && !e->status[i]; v++) { /* sample i's views are rows i*views .. */
        co.view = v;
        e->status[i] = upm_collate_row(&e->task, &co, &e->raw[i], e->b, i * e->views + v, &rng, &e->errs[i]);
    }
}

static int shape(upm_evalset *e, int n, upm_batch *b, upm_err *err)
{
    upm_batch_shape sh;
    int rc = upm_collate_shape(&e->task, &e->o.collate, n * e->views, &sh, err);
    return rc ? rc : upm_batch_realloc(b, &e->task, &sh, err);
}

int upm_evalset_next(upm_evalset *e, upm_batch *b, upm_err *err)
{
    int n = 0, rc = 0, B = e->o.batch;
    if (e->o.limit > 0 && (int64_t)e->read + B > e->o.limit)
        B = (int)(e->o.limit - (int64_t)e->read);
    while (!e->ended && n < B) {
        rc = upm_shardstream_next(e->stream, &e->raw[n], err);
        if (rc < 0)
            break;
        if (rc == 0)
            e->ended = 1;
        else
            n++;
        rc = 0;
    }
    if (e->o.limit > 0 && (int64_t)(e->read + (uint64_t)n) >= e->o.limit)
        e->ended = 1;
    if (!rc && n > 0) {
        e->first = e->read;
        e->read += (uint64_t)n;
        e->b = b;
        if (!(rc = shape(e, n, b, err))) {
            upm_pool_for(e->pool, n, fill_row, e);
            int good = 0;
            for (int i = 0; i < n && !rc; i++) {
                if (e->status[i] == 0)
                    good++;
                else if (e->status[i] != UPM_EBADDATA)
                    rc = e->status[i], *err = e->errs[i];
            }
            if (!rc && good < n) { /* leave the undecodable ones out and decode the rest again, in order */
                for (int i = 0; i < n; i++)
                    if (e->status[i]) {
                        upm_stream_report r = {.url = e->raw[i].url, .key = e->raw[i].key,
                                               .sample = e->raw[i].index, .code = UPM_EBADDATA, .msg = e->errs[i].msg,
                                               .decode = 1};
                        bad_sample(e, &r);
                    }
                for (int i = 0, w = 0; i < n; i++) /* stable: the good ones to the front, every sample kept */
                    if (e->status[i] == 0) {
                        upm_wds_sample t = e->raw[w];
                        e->raw[w++] = e->raw[i], e->raw[i] = t;
                    }
                if (good > 0 && !(rc = shape(e, good, b, err))) {
                    upm_pool_for(e->pool, good, fill_row, e);
                    for (int i = 0; i < good && !rc; i++)
                        if (e->status[i])
                            rc = e->status[i], *err = e->errs[i];
                }
            }
            for (int i = 0; !rc && e->keep_texts && i < good; i++) { /* every caption, for the gallery */
                char *text;
                size_t len;
                int owned;
                free(e->texts[i]);
                e->texts[i] = NULL;
                if (!(rc = upm_collate_field_text(&e->raw[i], e->task.target_field, &text, &len, &owned, err))) {
                    if ((e->texts[i] = malloc(len + 1))) {
                        memcpy(e->texts[i], text, len);
                        e->texts[i][len] = 0, e->text_lens[i] = len;
                    } else
                        rc = upm_errf(err, UPM_ENOMEM, "out of memory");
                    if (owned)
                        free(text);
                }
            }
            if (!rc) {
                snprintf(b->dataset, sizeof b->dataset, "%s", e->dataset.name);
                b->step = e->done;
                b->loss_weight = 1.0f;
                e->done += (uint64_t)good;
                if (good == 0) { /* a whole batch undecodable: go on with the next one */
                    for (int i = 0; i < n; i++)
                        upm_wds_sample_free(&e->raw[i]);
                    return upm_evalset_next(e, b, err);
                }
            }
        }
    }
    for (int i = 0; i < n; i++)
        upm_wds_sample_free(&e->raw[i]);
    if (rc)
        return rc;
    return n > 0 ? 1 : 0;
}

int upm_evalset_target_text(const upm_evalset *e, int row, const char **text, size_t *len)
{
    if (!e->keep_texts || row < 0 || row >= e->o.batch || !e->texts[row])
        return -1;
    *text = e->texts[row], *len = e->text_lens[row];
    return 0;
}

void upm_evalset_counters(const upm_evalset *e, upm_shardstream_counters *k)
{
    upm_shardstream_counters_get(e->stream, k);
}

const upm_task *upm_evalset_task(const upm_evalset *e) { return &e->task; }
const upm_dataset *upm_evalset_dataset(const upm_evalset *e) { return &e->dataset; }
int upm_evalset_labels(const upm_evalset *e) { return e->n_labels; }
int upm_evalset_views(const upm_evalset *e) { return e->views; }
uint64_t upm_evalset_done(const upm_evalset *e) { return e->done; }
uint64_t upm_evalset_skipped(const upm_evalset *e) { return e->skipped; }

void upm_evalset_close(upm_evalset *e)
{
    if (!e)
        return;
    upm_shardstream_close(e->stream);
    upm_urlpat_free(e->pat);
    upm_pool_free(e->pool);
    for (int i = 0; e->texts && i < e->o.batch; i++)
        free(e->texts[i]);
    free(e->texts);
    free(e->text_lens);
    free(e->raw);
    free(e->status);
    free(e->errs);
    free(e);
}
