/* Shard orders and block permutations (see order.h). */
#include <stdlib.h>

#include "order.h"
#include "rng.h"

int64_t upm_rank_shards(uint64_t seed, uint64_t dataset_id, uint64_t epoch, int64_t n_shards, int rank, int world,
                        int64_t *out)
{
    if (n_shards <= 0 || world <= 0 || rank < 0 || rank >= world)
        return 0;
    upm_rng r = upm_rng_stream(seed, UPM_RNG_SHARD_ORDER, dataset_id, epoch, 0);
    /* Fisher-Yates over all positions, then keep this rank's share (8 bytes per shard meanwhile). */
    int64_t *perm = malloc((size_t)n_shards * sizeof *perm);
    if (!perm)
        return -1;
    for (int64_t i = 0; i < n_shards; i++)
        perm[i] = i;
    for (int64_t i = n_shards - 1; i > 0; i--) {
        int64_t j = (int64_t)upm_rng_below(&r, (uint64_t)i + 1);
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    int64_t n = 0;
    if (n_shards < world) {
        out[n++] = perm[rank % n_shards];
    } else {
        for (int64_t j = rank; j < n_shards; j += world)
            out[n++] = perm[j];
    }
    free(perm);
    return n;
}

void upm_block_perm(uint64_t seed, uint64_t dataset_id, int rank, uint64_t block, uint32_t k, uint32_t *perm)
{
    upm_rng r = upm_rng_stream(seed, UPM_RNG_SHUFFLE, dataset_id, (uint64_t)rank, block);
    for (uint32_t i = 0; i < k; i++)
        perm[i] = i;
    for (uint32_t i = k; i > 1; i--) {
        uint32_t j = (uint32_t)upm_rng_below(&r, i);
        uint32_t t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
}
