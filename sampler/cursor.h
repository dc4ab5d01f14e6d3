/* The sampler's state as a small serialisable cursor. For each dataset of the plan: where the
 * current shuffle block starts in the rank's endless stream (epoch, position in the rank's shard
 * list, sample index in that shard), the block's index, and how many of its samples were consumed;
 * plus the stream's error counters, so the error budget carries across a resume. Resuming from the
 * cursor saved after step k yields exactly the batches of an uninterrupted run from step k + 1 on. */
#ifndef UPM_CURSOR_H
#define UPM_CURSOR_H

#include <stdint.h>

#include "err.h"
#include "records.h"

typedef struct upm_stream_pos {
    uint64_t epoch;
    int64_t shard_pos; /* index into the rank's shard list of that epoch */
    int64_t sample;    /* samples of that shard already passed */
} upm_stream_pos;

typedef struct upm_dataset_cursor {
    char name[UPM_NAME_MAX + 1];
    upm_stream_pos block_start;
    uint64_t block;  /* index of the current block in the rank's stream */
    uint32_t offset; /* samples of the block already emitted */
    uint64_t samples, bad_samples, bad_shards;
} upm_dataset_cursor;

typedef struct upm_cursor {
    char mixture[UPM_NAME_MAX + 1];
    uint64_t seed;
    int rank, world;
    uint32_t block_size;
    uint64_t step; /* the next step to produce */
    int n;
    upm_dataset_cursor *datasets;
} upm_cursor;

/* JSON text (caller frees with free()). */
char *upm_cursor_to_json(const upm_cursor *c);
/* Parses a cursor; every field is checked (names its path on error). */
int upm_cursor_from_json(const char *text, upm_cursor *out, upm_err *err);
void upm_cursor_free(upm_cursor *c);

#endif
