/* A fixed pool of worker threads running "parallel for" jobs. Results go to slots chosen by index,
 * never by finishing order, so work spread over threads stays deterministic. */
#ifndef UPM_POOL_H
#define UPM_POOL_H

#include "err.h"

typedef struct upm_pool upm_pool;

/* threads >= 1: the number of workers (the caller only waits). */
int upm_pool_new(int threads, upm_pool **out, upm_err *err);
/* Runs fn(ctx, i, worker) for every i in [0, n), spread over the workers; returns when all are done.
 * worker is in [0, threads): per-worker scratch can be indexed by it. */
void upm_pool_for(upm_pool *p, int n, void (*fn)(void *ctx, int i, int worker), void *ctx);
/* The same in two halves, so the caller can work meanwhile: start returns at once, wait returns when
 * every index is done. One job at a time. */
void upm_pool_start(upm_pool *p, int n, void (*fn)(void *ctx, int i, int worker), void *ctx);
void upm_pool_wait(upm_pool *p);
int upm_pool_threads(const upm_pool *p);
void upm_pool_free(upm_pool *p);

#endif
