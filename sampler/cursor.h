/* The sampler's state as a small serialisable cursor. For each dataset of the plan: where the
 * current shuffle block starts in the rank's endless stream (epoch, the next reader, and for each
 * reader its position in its shard list and in that shard), the block's index, and how many of its
 * samples were consumed;
 * plus the stream's error counters, so the error budget carries across a resume. Resuming from the
 * cursor saved after step k yields exactly the batches of an uninterrupted run from step k + 1 on. */
#ifndef UPM_CURSOR_H
#define UPM_CURSOR_H

#include <stdint.h>

#include "err.h"
#include "records.h"

#define UPM_MAX_READERS 16

/* One reader's place: each reader (loader thread) of a dataset stream reads its own share of the
 * rank's shards; their samples are interleaved round robin. */
typedef struct upm_lane_pos {
    int64_t shard_pos; /* index into this reader's shard list of the epoch */
    int64_t sample;    /* samples of that shard already passed */
    int done;          /* this reader's list for the epoch is used up */
} upm_lane_pos;

typedef struct upm_stream_pos {
    uint64_t epoch;
    uint32_t rr;  /* the reader the next sample comes from */
    int readers;  /* 1..UPM_MAX_READERS */
    upm_lane_pos lane[UPM_MAX_READERS];
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
/* A cursor for rank `rank` of a new world size, from the cursors every rank of the old world saved
 * (old[0..n_old)): the next step is the old one; each dataset's stream starts afresh at the epoch after
 * the furthest epoch any old rank reached (no sample of a started epoch is seen twice; the rest of
 * those epochs is skipped); error counters are summed. The data order changes: the caller warns. */
int upm_cursor_regroup(const upm_cursor *old, int n_old, int rank, int world, int readers, upm_cursor *out,
                       upm_err *err);

#endif
