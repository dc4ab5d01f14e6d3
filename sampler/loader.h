/* The loader: batches for one rank, step after step, from a catalog mixture. Each step picks one
 * dataset by weight (plan.h), takes the next B raw samples of that dataset's stream (stream.h), fills
 * the rows on a thread pool (collate.h) and returns the batch. The output depends only on (seed,
 * rank, world, mixture, options): rows are filled into fixed slots, unusable samples are replaced in
 * row order, so thread timing never changes a batch. The cursor after step k resumes at step k + 1
 * with identical batches. */
#ifndef UPM_LOADER_H
#define UPM_LOADER_H

#include "batch.h"
#include "collate.h"
#include "cursor.h"
#include "plan.h"
#include "stream.h"

typedef struct upm_loader_opts {
    uint64_t seed;
    int rank, world;
    int threads;            /* decode threads (>= 1) */
    uint32_t block_size;    /* shuffle block K (default 256) */
    int readers;            /* reader threads per dataset stream (default 2; part of the data order) */
    int batch_override;     /* > 0: this batch size for every dataset instead of the catalog's */
    double batch_scale;     /* > 0: every dataset's catalog batch size times this (rounded, >= 1) */
    const char *bpe_vocab;  /* the CLIP merges file; needed when a task has text */
    upm_batch_mem batch_mem; /* where the batches it fills live, when it allocates them (batch.h) */
    upm_collate_opts collate;
    upm_shardstream_opts shards;
} upm_loader_opts;

void upm_loader_opts_default(upm_loader_opts *o);

typedef struct upm_loader upm_loader;

/* cursor_json: NULL to start at step 0, or a cursor from upm_loader_cursor_json to resume. */
int upm_loader_open(upm_catalog *cat, const char *mixture, const upm_loader_opts *o, const char *cursor_json,
                    upm_loader **out, upm_err *err);
/* The batch of the next step into *out, which must be zeroed or hold an earlier batch: its memory is
 * reused (free the last one with upm_batch_free). */
int upm_loader_next(upm_loader *l, upm_batch *out, upm_err *err);
/* The cursor after the last batch returned (free() it). */
char *upm_loader_cursor_json(const upm_loader *l);
/* Samples replaced because they could not be decoded, so far. */
uint64_t upm_loader_bad_rows(const upm_loader *l);
/* Samples decoded since open (rows filled, replacements included). */
uint64_t upm_loader_decoded(const upm_loader *l);
void upm_loader_close(upm_loader *l);

#endif
