/* A full pass over one dataset, for evaluation: every sample exactly once, the shards in URL-pattern
 * order and each shard's samples in tar order, decoded with the evaluation transforms, in batches of B
 * rows (the last batch holds what is left). No shuffling, no epochs, no randomness that depends on
 * anything but the sample's place: two passes give the same batches. A sample that cannot be decoded is
 * reported and left out (the batch it would have joined is shorter), so the pass scores every usable
 * sample once; upm_evalset_skipped says how many were left out. */
#ifndef UPM_EVALSET_H
#define UPM_EVALSET_H

#include <stdint.h>

#include "batch.h"
#include "catalog_ops.h"
#include "collate.h"
#include "shardstream.h"

typedef struct upm_evalset_opts {
    int batch;      /* rows per batch (>= 1) */
    int threads;    /* decode threads (>= 1) */
    int64_t limit;  /* > 0: stop after this many samples (a quick look); 0: the whole split */
    upm_collate_opts collate; /* train is forced to 0; bpe and n_labels are filled by open */
    upm_shardstream_opts shards;
    int verify;     /* 1: every unusable sample is reported (decode = 1) and left out, a class index outside
                       the label set included (evaluation refuses that as an error), and no captions are kept:
                       the pass of `upmoe-catalog verify --decode` */
} upm_evalset_opts;

void upm_evalset_opts_default(upm_evalset_opts *o);

typedef struct upm_evalset upm_evalset;

/* Opens the pass over catalog dataset `dataset` (its task and label set read once; bpe is needed when
 * the task has text and must outlive the pass). A dataset without a URL is refused. */
int upm_evalset_open(upm_catalog *cat, const char *dataset, const upm_evalset_opts *o, upm_bpe *bpe,
                     upm_evalset **out, upm_err *err);
/* 1 with the next batch in *b (which must be zeroed or hold an earlier batch: its memory is reused; b->B
 * rows: upm_evalset_views rows per sample, a sample's views consecutive), 0 when every sample was read,
 * or a negative UPM_E*. */
int upm_evalset_next(upm_evalset *e, upm_batch *b, upm_err *err);
/* Pair tasks with a text target and caption tasks: the whole caption field of row `row` of the last batch
 * (every caption of the sample, one per line: upm_caption_lines), valid until the next batch; 0, or -1 for
 * other tasks. */
int upm_evalset_target_text(const upm_evalset *e, int row, const char **text, size_t *len);
const upm_task *upm_evalset_task(const upm_evalset *e);
const upm_dataset *upm_evalset_dataset(const upm_evalset *e);
int upm_evalset_labels(const upm_evalset *e); /* classes of a label task's label set, else 0 */
/* Rows per sample: collate.video_crops x video_clips for a label task with a video input (the views whose
 * scores are averaged), else 1. */
int upm_evalset_views(const upm_evalset *e);
uint64_t upm_evalset_done(const upm_evalset *e);    /* samples delivered in batches so far */
uint64_t upm_evalset_skipped(const upm_evalset *e); /* samples (or whole bad shards) left out, each reported */
/* The shard stream's counters: samples and bytes read, structural bad samples and bad shards. */
void upm_evalset_counters(const upm_evalset *e, upm_shardstream_counters *k);
void upm_evalset_close(upm_evalset *e);

#endif
