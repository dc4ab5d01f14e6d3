/* Which shards a rank reads, in which order, and how samples are shuffled: pure functions of
 * (seed, dataset, epoch, rank, world), so any position of any stream can be recomputed.
 *
 * Shard order: every epoch, a seeded Fisher-Yates permutation of the dataset's shards; rank r of W
 * takes the positions j with j mod W == r (with fewer shards than ranks, rank r reads shard
 * perm[r mod S], so every rank still has data). The stream repeats forever, epoch after epoch.
 *
 * Sample shuffle: a seeded *block* shuffle. The rank's stream is cut into blocks of K consecutive
 * samples; each block is emitted in a permutation keyed by its index. Unlike webdataset's reservoir
 * buffer, its state is just a position (block start + offset), which keeps the cursor tiny and
 * makes resuming exact without storing buffered samples. */
#ifndef UPM_ORDER_H
#define UPM_ORDER_H

#include <stdint.h>

/* Positions (shard indices) that rank reads in epoch `epoch`, in reading order, into out (room for
 * n_shards / world + 1 entries). Returns how many. */
int64_t upm_rank_shards(uint64_t seed, uint64_t dataset_id, uint64_t epoch, int64_t n_shards, int rank, int world,
                        int64_t *out);

/* The permutation of block `block` (K entries) of a rank's stream of a dataset. */
void upm_block_perm(uint64_t seed, uint64_t dataset_id, int rank, uint64_t block, uint32_t k, uint32_t *perm);

#endif
