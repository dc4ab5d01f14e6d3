/* A dataset stream: the endless, shuffled sequence of raw WebDataset samples one rank reads from one
 * dataset. Epoch after epoch it reads the rank's share of the shards in that epoch's order
 * (order.h), cuts the samples into blocks of K and emits each block permuted (the block shuffle).
 * Its position is a upm_dataset_cursor; opening at a cursor re-reads only the current block's raw
 * bytes (tar headers and member bytes, nothing decoded) and skips whole shards unopened. */
#ifndef UPM_STREAM_H
#define UPM_STREAM_H

#include "cursor.h"
#include "plan.h"
#include "shardstream.h"

typedef struct upm_dstream upm_dstream;

typedef struct upm_dstream_opts {
    uint64_t seed;
    int rank, world;
    uint32_t block_size;           /* K */
    int readers;                   /* reader threads, each with its own share of the shards (default 1) */
    upm_shardstream_opts shards;   /* sources, error budget (per epoch), report callback */
} upm_dstream_opts;

/* Opens the stream of plan member m (which must outlive it), at the start or at `at` (NULL: start). */
int upm_dstream_open(const upm_plan_member *m, const upm_dstream_opts *o, const upm_dataset_cursor *at,
                     upm_dstream **out, upm_err *err);
void upm_dstream_close(upm_dstream *d);
/* The next raw sample (the caller owns it: upm_wds_sample_free). Never ends; fails when a whole epoch
 * yields no sample or the error budget is exceeded. */
int upm_dstream_next(upm_dstream *d, upm_wds_sample *out, upm_err *err);
/* Where the stream stands: reopening here continues with the next sample. */
void upm_dstream_tell(const upm_dstream *d, upm_dataset_cursor *out);

#endif
