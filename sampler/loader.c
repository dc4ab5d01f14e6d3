/* The loader (see loader.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formulation.h"
#include "loader.h"
#include "pool.h"

#define MAX_REPLACEMENTS_PER_ROW 16 /* a dataset where this many samples in a row fail is broken */

struct upm_loader {
    upm_loader_opts o;
    upm_plan plan;
    upm_dstream **streams;      /* per member, opened on first use */
    upm_dataset_cursor *resume; /* per member: the cursor entry to open at, or NULL */
    int *n_labels;
    upm_bpe *bpe;
    upm_pool *pool;
    uint64_t step;
    uint64_t bad_rows;
    uint64_t decoded; /* rows filled (decoded) since open: resuming decodes nothing it skips */
    /* The next step's raw samples, read while the pool decodes the current step. The cursor reports
     * the stream where it stood before this read, so a prefetch never shows in a checkpoint. */
    struct {
        int valid, k, n, rc;
        upm_wds_sample *raw;
        upm_dataset_cursor before;
        upm_err err;
    } pre;
};

void upm_loader_opts_default(upm_loader_opts *o)
{
    memset(o, 0, sizeof *o);
    o->world = 1;
    o->threads = 2;
    o->block_size = 256;
    o->readers = 2;
    o->collate.train = 1;
    o->collate.image_size = 224;
    o->collate.frames = 8;
    o->collate.video_interval = 32;
    upm_shardstream_opts_default(&o->shards);
}

static int load_label_counts(upm_loader *l, upm_catalog *cat, upm_err *err)
{
    for (int i = 0; i < l->plan.n; i++) {
        const upm_plan_member *m = &l->plan.members[i];
        const upm_formulation_desc *fd = upm_formulation_desc_get(m->task.formulation);
        if (!fd || fd->targets != UPM_TARGETS_LABEL_TEXTS)
            continue;
        upm_labelset ls;
        const char *name = m->dataset.label_set[0] ? m->dataset.label_set : m->task.label_set;
        int rc = upm_labelset_get(cat, name, &ls, err);
        if (rc)
            return rc;
        l->n_labels[i] = (int)ls.n;
        upm_labelset_free(&ls);
    }
    return 0;
}

static int apply_cursor(upm_loader *l, const char *json, upm_err *err)
{
    upm_cursor c;
    int rc = upm_cursor_from_json(json, &c, err);
    if (rc)
        return rc;
    if (strcmp(c.mixture, l->plan.mixture) != 0 || c.seed != l->o.seed || c.rank != l->o.rank ||
        c.world != l->o.world || c.block_size != l->o.block_size)
        rc = upm_errf(err, UPM_EINVAL, "cursor is for mixture %s, seed %llu, rank %d of %d, block %u; this run is "
                      "mixture %s, seed %llu, rank %d of %d, block %u", c.mixture, (unsigned long long)c.seed, c.rank,
                      c.world, c.block_size, l->plan.mixture, (unsigned long long)l->o.seed, l->o.rank, l->o.world,
                      l->o.block_size);
    for (int i = 0; !rc && i < c.n; i++) {
        int found = -1;
        for (int k = 0; k < l->plan.n; k++)
            if (strcmp(l->plan.members[k].dataset.name, c.datasets[i].name) == 0)
                found = k;
        if (found < 0)
            rc = upm_errf(err, UPM_EINVAL, "cursor names dataset %s, which mixture %s no longer has",
                          c.datasets[i].name, l->plan.mixture);
        else
            l->resume[found] = c.datasets[i];
    }
    l->step = c.step;
    upm_cursor_free(&c);
    return rc;
}

int upm_loader_open(upm_catalog *cat, const char *mixture, const upm_loader_opts *o, const char *cursor_json,
                    upm_loader **out, upm_err *err)
{
    *out = NULL;
    upm_loader *l = calloc(1, sizeof *l);
    if (!l)
        return upm_errf(err, UPM_ENOMEM, "out of memory");
    l->o = *o;
    int rc = upm_plan_load(cat, mixture, &l->plan, err);
    if (!rc) {
        l->streams = calloc((size_t)l->plan.n, sizeof *l->streams);
        l->resume = calloc((size_t)l->plan.n, sizeof *l->resume);
        l->n_labels = calloc((size_t)l->plan.n, sizeof *l->n_labels);
        if (!l->streams || !l->resume || !l->n_labels)
            rc = upm_errf(err, UPM_ENOMEM, "out of memory");
    }
    if (!rc)
        rc = load_label_counts(l, cat, err);
    int needs_text = 0;
    for (int i = 0; !rc && i < l->plan.n; i++) {
        const upm_task *t = &l->plan.members[i].task;
        const upm_formulation_desc *fd = upm_formulation_desc_get(t->formulation);
        for (int k = 0; k < t->n_inputs; k++)
            needs_text |= t->inputs[k].modality == UPM_MOD_TEXT || (fd && fd->target_segment);
    }
    if (!rc && needs_text && !o->bpe_vocab)
        rc = upm_errf(err, UPM_EUSAGE, "mixture %s has text: give the CLIP BPE vocabulary file", mixture);
    if (!rc && o->bpe_vocab)
        rc = upm_bpe_load(o->bpe_vocab, &l->bpe, err);
    if (!rc)
        rc = upm_pool_new(o->threads, &l->pool, err);
    for (int i = 0; !rc && i < l->plan.n; i++)
        l->resume[i].name[0] = '\0';
    if (!rc && cursor_json)
        rc = apply_cursor(l, cursor_json, err);
    if (rc) {
        upm_loader_close(l);
        return rc;
    }
    *out = l;
    return 0;
}

typedef struct row_job {
    upm_loader *l;
    const upm_plan_member *m;
    upm_collate_opts co;
    upm_wds_sample *raw;
    upm_batch *b;
    int *status;
    upm_err *errs;
} row_job;

static void fill_row(void *ctx, int i, int worker)
{
    (void)worker;
    row_job *j = ctx;
    upm_rng rng = upm_rng_stream(j->l->o.seed, UPM_RNG_AUGMENT, j->l->step, (uint64_t)j->l->o.rank, (uint64_t)i);
    j->status[i] = upm_collate_row(&j->m->task, &j->co, &j->raw[i], j->b, i, &rng, &j->errs[i]);
}

static upm_dstream *ds_of(upm_loader *l, int k) { return l->streams[k]; }

static int stream_of(upm_loader *l, int k, upm_dstream **out, upm_err *err)
{
    if (!l->streams[k]) {
        upm_dstream_opts so = {.seed = l->o.seed, .rank = l->o.rank, .world = l->o.world,
                                .block_size = l->o.block_size, .readers = l->o.readers, .shards = l->o.shards};
        int rc = upm_dstream_open(&l->plan.members[k], &so, l->resume[k].name[0] ? &l->resume[k] : NULL,
                                  &l->streams[k], err);
        if (rc)
            return rc;
    }
    *out = l->streams[k];
    return 0;
}

/* Rows that failed get new samples, in row order, one at a time (deterministic). */
static int replace_bad_rows(upm_loader *l, row_job *j, upm_dstream *ds, int B, upm_err *err)
{
    for (int i = 0; i < B; i++) {
        for (int tries = 0; j->status[i] != 0; tries++) {
            if (j->status[i] != UPM_EBADDATA) {
                *err = j->errs[i];
                return j->status[i];
            }
            if (l->o.shards.report) { /* the caller logs it like a bad sample of the stream */
                upm_stream_report r = {.url = j->raw[i].url, .key = j->raw[i].key, .sample = j->raw[i].index,
                                       .code = UPM_EBADDATA, .msg = j->errs[i].msg, .decode = 1};
                l->o.shards.report(l->o.shards.report_ctx, &r);
            }
            l->bad_rows++;
            if (tries == MAX_REPLACEMENTS_PER_ROW)
                return upm_errf(err, UPM_EBADDATA, "dataset %s: %d unusable samples in a row, the last: %s",
                                j->m->dataset.name, tries, j->errs[i].msg);
            upm_wds_sample_free(&j->raw[i]);
            int rc = upm_dstream_next(ds, &j->raw[i], err);
            if (rc)
                return rc;
            fill_row(j, i, 0);
            l->decoded++;
        }
    }
    return 0;
}

static int batch_size_of(const upm_loader *l, int k)
{
    int b = l->o.batch_override > 0 ? l->o.batch_override : l->plan.members[k].dataset.batch_size;
    if (l->o.batch_override <= 0 && l->o.batch_scale > 0) { /* e.g. the paper's per-GPU batches on a small machine */
        double s = (double)b * l->o.batch_scale + 0.5;
        b = s < 1 ? 1 : s > 1e6 ? 1000000 : (int)s;
    }
    return b;
}

/* Reads B raw samples of member k in stream order into a new array (*got of them on failure). */
static int read_raw(upm_loader *l, int k, int B, upm_wds_sample **raw, int *got, upm_err *err)
{
    upm_dstream *ds;
    *got = 0;
    *raw = calloc((size_t)B, sizeof **raw);
    if (!*raw)
        return upm_errf(err, UPM_ENOMEM, "out of memory for a batch of %d", B);
    int rc = stream_of(l, k, &ds, err);
    for (; !rc && *got < B; (*got)++)
        rc = upm_dstream_next(ds, &(*raw)[*got], err);
    return rc;
}

static void free_raw(upm_wds_sample *raw, int n)
{
    for (int i = 0; raw && i < n; i++)
        upm_wds_sample_free(&raw[i]);
    free(raw);
}

/* Reads the raw samples of step l->step + 1 (called while the pool decodes l->step). */
static void prefetch(upm_loader *l)
{
    int k = upm_plan_pick(&l->plan, l->o.seed, l->o.rank, l->step + 1);
    upm_dstream *ds;
    memset(&l->pre, 0, sizeof l->pre);
    l->pre.valid = 1;
    l->pre.k = k;
    if ((l->pre.rc = stream_of(l, k, &ds, &l->pre.err)) != 0)
        return;
    upm_dstream_tell(ds, &l->pre.before);
    l->pre.rc = read_raw(l, k, batch_size_of(l, k), &l->pre.raw, &l->pre.n, &l->pre.err);
}

/* Undoes a prefetch of member k: the samples go back to its stream (reopened where it stood), so
 * that replacements of bad rows read exactly what they would have read without prefetching. */
static int unprefetch(upm_loader *l, upm_err *err)
{
    if (!l->pre.valid)
        return 0;
    int k = l->pre.k, rc = 0;
    free_raw(l->pre.raw, l->pre.n);
    if (l->streams[k] && l->pre.rc == 0) {
        upm_dstream_close(l->streams[k]);
        l->streams[k] = NULL;
        upm_dstream_opts so = {.seed = l->o.seed, .rank = l->o.rank, .world = l->o.world,
                                .block_size = l->o.block_size, .readers = l->o.readers, .shards = l->o.shards};
        rc = upm_dstream_open(&l->plan.members[k], &so, &l->pre.before, &l->streams[k], err);
    }
    memset(&l->pre, 0, sizeof l->pre);
    return rc;
}

int upm_loader_next(upm_loader *l, upm_batch *out, upm_err *err)
{
    int k = upm_plan_pick(&l->plan, l->o.seed, l->o.rank, l->step);
    const upm_plan_member *m = &l->plan.members[k];
    int B = batch_size_of(l, k);
    upm_dstream *ds;
    upm_batch_shape sh;
    row_job j = {.l = l, .m = m, .co = l->o.collate, .b = out};
    j.co.bpe = l->bpe;
    j.co.n_labels = l->n_labels[k];
    if (m->dataset.augment != UPM_AUGMENT_INHERIT) /* the dataset's own choice wins over the run's */
        j.co.augment = m->dataset.augment;
    int rc = stream_of(l, k, &ds, err), got = 0;
    if (!rc)
        rc = upm_collate_shape(&m->task, &j.co, B, &sh, err);
    if (!out->mem) /* a fresh batch: in the caller's memory */
        out->memfn = l->o.batch_mem;
    if (!rc)
        rc = upm_batch_realloc(out, &m->task, &sh, err);
    j.status = calloc((size_t)B, sizeof *j.status);
    j.errs = calloc((size_t)B, sizeof *j.errs);
    if (!rc && (!j.status || !j.errs))
        rc = upm_errf(err, UPM_ENOMEM, "out of memory for a batch of %d", B);
    if (!rc && l->pre.valid) { /* read during the previous step */
        j.raw = l->pre.raw, got = l->pre.n, rc = l->pre.rc;
        if (rc)
            *err = l->pre.err;
        memset(&l->pre, 0, sizeof l->pre);
    } else if (!rc) {
        rc = read_raw(l, k, B, &j.raw, &got, err);
    }
    if (!rc) {
        upm_pool_start(l->pool, B, fill_row, &j);
        prefetch(l); /* I/O of the next step overlaps this step's decoding */
        upm_pool_wait(l->pool);
        l->decoded += (uint64_t)B;
        int bad = 0;
        for (int i = 0; i < B; i++)
            bad |= j.status[i] != 0;
        if (bad && l->pre.k == k) /* replacements come from this stream: give the prefetch back first */
            rc = unprefetch(l, err);
        if (!rc)
            rc = replace_bad_rows(l, &j, ds_of(l, k), B, err);
    }
    free_raw(j.raw, got);
    free(j.status), free(j.errs);
    if (rc) {
        upm_batch_free(out);
        return rc;
    }
    snprintf(out->dataset, sizeof out->dataset, "%s", m->dataset.name);
    out->step = l->step++;
    out->loss_weight = (float)m->loss_weight;
    return 0;
}

char *upm_loader_cursor_json(const upm_loader *l)
{
    upm_cursor c = {.seed = l->o.seed, .rank = l->o.rank, .world = l->o.world, .block_size = l->o.block_size,
                    .step = l->step};
    snprintf(c.mixture, sizeof c.mixture, "%s", l->plan.mixture);
    c.datasets = calloc((size_t)l->plan.n + 1, sizeof *c.datasets);
    if (!c.datasets)
        return NULL;
    for (int i = 0; i < l->plan.n; i++) {
        if (l->pre.valid && l->pre.k == i && l->pre.rc == 0)
            c.datasets[c.n++] = l->pre.before; /* the prefetched samples belong to the next step */
        else if (l->streams[i])
            upm_dstream_tell(l->streams[i], &c.datasets[c.n++]);
        else if (l->resume[i].name[0]) /* resumed but not used since: keep where it was */
            c.datasets[c.n++] = l->resume[i];
    }
    char *json = upm_cursor_to_json(&c);
    free(c.datasets);
    return json;
}

uint64_t upm_loader_bad_rows(const upm_loader *l) { return l->bad_rows; }
uint64_t upm_loader_decoded(const upm_loader *l) { return l->decoded; }

void upm_loader_close(upm_loader *l)
{
    if (!l)
        return;
    free_raw(l->pre.raw, l->pre.n);
    for (int i = 0; l->streams && i < l->plan.n; i++)
        upm_dstream_close(l->streams[i]);
    free(l->streams);
    free(l->resume);
    free(l->n_labels);
    upm_bpe_free(l->bpe);
    upm_pool_free(l->pool);
    upm_plan_free(&l->plan);
    free(l);
}
