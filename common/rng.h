/* Counter-based randomness: every random number is a pure function of (seed, purpose, step, rank,
 * ...) and a counter, so any step can be replayed exactly and threads never share RNG state.
 * A stream is keyed by mixing its coordinates with SplitMix64; draws hash (key, counter). */
#ifndef UPM_RNG_H
#define UPM_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct upm_rng {
    uint64_t key;
    uint64_t counter;
} upm_rng;

/* Purposes keep streams of one step apart (task choice never shares numbers with augmentation). */
enum {
    UPM_RNG_TASK = 1,
    UPM_RNG_SHARD_ORDER,
    UPM_RNG_SHUFFLE,
    UPM_RNG_AUGMENT,
    UPM_RNG_MASK,
    UPM_RNG_FRAMES,
    UPM_RNG_GATE_NOISE,
    UPM_RNG_DROP_PATH,
    UPM_RNG_INIT,
    UPM_RNG_LABEL,
};

static inline uint64_t upm_splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* A stream for (seed, purpose, a, b, c): e.g. (seed, UPM_RNG_AUGMENT, step, rank, sample index). */
static inline upm_rng upm_rng_stream(uint64_t seed, uint64_t purpose, uint64_t a, uint64_t b, uint64_t c)
{
    uint64_t k = upm_splitmix64(seed);
    k = upm_splitmix64(k ^ purpose);
    k = upm_splitmix64(k ^ a);
    k = upm_splitmix64(k ^ b);
    k = upm_splitmix64(k ^ c);
    upm_rng r = {k, 0};
    return r;
}

static inline uint64_t upm_rng_u64(upm_rng *r) { return upm_splitmix64(r->key ^ upm_splitmix64(r->counter++)); }

/* Uniform in [0, 1) with 53 random bits. */
static inline double upm_rng_uniform(upm_rng *r) { return (double)(upm_rng_u64(r) >> 11) * 0x1.0p-53; }

/* Uniform integer in [0, n) (n > 0), without modulo bias. */
static inline uint64_t upm_rng_below(upm_rng *r, uint64_t n)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % n, x;
    do
        x = upm_rng_u64(r);
    while (x >= limit);
    return x % n;
}

/* Standard normal (Box-Muller; one value per call, two draws). */
static inline double upm_rng_normal(upm_rng *r)
{
    double u1 = upm_rng_uniform(r), u2 = upm_rng_uniform(r);
    return sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2);
}

#endif
