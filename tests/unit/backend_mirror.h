/* The conformance suite's adapter: any backend, seen through host mirrors. mirror_open(name) returns a
 * backend (model/backend_wrap.h) whose memory is host memory the tests read and write directly; every op
 * runs on the real backend `name`: before it, every live mirror is uploaded to its device buffer with the
 * real backend's upload; after it, downloaded with its download, so the real backend is only reached
 * through upload/download, as the model reaches it. Each device buffer has guard bytes on both sides,
 * filled with a sentinel and checked after every op (an overrun fails the check naming the op); every
 * download after an op is folded into a hash, so two runs of the same tests can be compared bit for bit
 * (determinism). */
#ifndef UPM_BACKEND_MIRROR_H
#define UPM_BACKEND_MIRROR_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_check.h"
#include "backend_wrap.h"
#include "check.h"

enum { MIRROR_GUARD = 256, MIRROR_SENTINEL = 0xA5 };

typedef struct mirror_buf {
    char *host;
    char *dev; /* the real backend's allocation + MIRROR_GUARD */
    size_t bytes;
} mirror_buf;

typedef struct mirror {
    upm_backend *real;
    mirror_buf *b;
    int n, cap;
    uint64_t hash; /* FNV-1a over every download after an op */
    long ops;
    unsigned char guard[MIRROR_GUARD];
} mirror;

static mirror_buf *mirror_find(mirror *x, const void *p)
{
    for (int i = 0; i < x->n; i++)
        if ((const char *)p >= x->b[i].host && (const char *)p <= x->b[i].host + x->b[i].bytes)
            return &x->b[i];
    return NULL;
}

static void *mirror_alloc(void *ctx, size_t bytes)
{
    mirror *x = ctx;
    size_t n = (bytes + 63) & ~(size_t)63;
    char *host = aligned_alloc(64, n ? n : 64);
    char *dev = x->real->alloc(x->real, n + 2 * MIRROR_GUARD);
    if (!host || !dev || (x->n == x->cap && !(x->b = realloc(x->b, sizeof *x->b * (size_t)(x->cap = 2 * x->cap + 16))))) {
        fprintf(stderr, "mirror: out of memory\n");
        exit(1);
    }
    memset(host, 0, n ? n : 64);
    memset(x->guard, MIRROR_SENTINEL, sizeof x->guard);
    x->real->upload(x->real, dev, x->guard, MIRROR_GUARD);
    x->real->upload(x->real, dev + MIRROR_GUARD + bytes, x->guard, MIRROR_GUARD);
    x->b[x->n++] = (mirror_buf){host, dev + MIRROR_GUARD, bytes};
    return host;
}

static void mirror_free(void *ctx, void *p)
{
    mirror *x = ctx;
    for (int i = 0; i < x->n; i++)
        if (x->b[i].host == p) {
            x->real->free(x->real, x->b[i].dev - MIRROR_GUARD);
            free(x->b[i].host);
            x->b[i] = x->b[--x->n];
            return;
        }
    fprintf(stderr, "mirror: free of %p, not a mirror\n", p);
    failures++;
}

static void mirror_upload(void *ctx, void *dst, const void *src, size_t bytes) { (void)ctx, memmove(dst, src, bytes); }
static void mirror_download(void *ctx, void *dst, const void *src, size_t bytes) { (void)ctx, memmove(dst, src, bytes); }
static void mirror_copy(void *ctx, void *dst, const void *src, size_t bytes) { (void)ctx, memmove(dst, src, bytes); }
static void mirror_zero(void *ctx, void *p, size_t bytes) { (void)ctx, memset(p, 0, bytes); }

static void *mirror_dev(void *ctx, const void *p, size_t bytes, const char *op, const char *arg)
{
    if (!p)
        return NULL;
    mirror_buf *b = mirror_find(ctx, p);
    if (!b || (const char *)p + bytes > b->host + b->bytes) {
        fprintf(stderr, "mirror: %s: %s is %s\n", op, arg, b ? "past the end of its buffer" : "not a buffer");
        failures++;
        return NULL;
    }
    return b->dev + ((const char *)p - b->host);
}

static void mirror_before(void *ctx, const char *op)
{
    (void)op;
    mirror *x = ctx;
    for (int i = 0; i < x->n; i++)
        x->real->upload(x->real, x->b[i].dev, x->b[i].host, x->b[i].bytes);
}

static void mirror_after(void *ctx, const char *op)
{
    mirror *x = ctx;
    unsigned char g[MIRROR_GUARD];
    x->ops++;
    for (int i = 0; i < x->n; i++) {
        mirror_buf *b = &x->b[i];
        x->real->download(x->real, b->host, b->dev, b->bytes);
        for (size_t k = 0; k < b->bytes; k++)
            x->hash = (x->hash ^ (unsigned char)b->host[k]) * 0x100000001b3ull;
        for (int side = 0; side < 2; side++) {
            x->real->download(x->real, g, side ? b->dev + b->bytes : b->dev - MIRROR_GUARD, MIRROR_GUARD);
            if (memcmp(g, x->guard, MIRROR_GUARD)) {
                fprintf(stderr, "mirror: %s wrote %s a buffer of %zu bytes (%s backend)\n", op,
                        side ? "past the end of" : "before the start of", b->bytes, x->real->name);
                failures++;
                x->real->upload(x->real, side ? b->dev + b->bytes : b->dev - MIRROR_GUARD, x->guard, MIRROR_GUARD);
            }
        }
    }
}

static void mirror_destroy(void *ctx)
{
    mirror *x = ctx;
    while (x->n)
        mirror_free(x, x->b[0].host);
    free(x->b);
    free(x);
}

/* Backend real seen through host mirrors (the mirror owns it); *m (may be NULL) its state. */
static upm_backend *mirror_of(upm_backend *real, mirror **m)
{
    upm_err err = {0};
    upm_backend *w = NULL;
    mirror *x = calloc(1, sizeof *x);
    x->real = real, x->hash = 0xcbf29ce484222325ull;
    upm_backend_hooks h = {.name = real->name, .ctx = x, .alloc = mirror_alloc, .free = mirror_free,
                           .upload = mirror_upload, .download = mirror_download, .copy = mirror_copy,
                           .zero = mirror_zero, .host_ptr = NULL, .dev = mirror_dev, .before = mirror_before,
                           .after = mirror_after, .destroy = mirror_destroy};
    if (upm_backend_wrap(real, &h, &w, &err)) {
        fprintf(stderr, "mirror: %s\n", err.msg);
        exit(1);
    }
    if (m)
        *m = x;
    return w;
}

/* Backend `name` (registry) with threads, seen through host mirrors. */
static upm_backend *mirror_open(const char *name, int threads, mirror **m)
{
    upm_err err = {0};
    upm_backend *real = NULL;
    if (upm_backend_open(name, &(upm_backend_opts){.threads = threads}, &real, &err)) {
        fprintf(stderr, "mirror: %s\n", err.msg);
        exit(1);
    }
    return mirror_of(real, m);
}

/* The conformance suites' loop: run() on every backend this build can open, twice from the same random
 * state, the two passes' results compared bit for bit; one line per backend ("NAME backend: WHAT within
 * bounds, N ops, results H twice"; tools/gpu-check reads the cuda line). */
static void every_backend_twice(const char *what, void (*run)(void))
{
    char list[256], *save = NULL;
    upm_backend_list(list, sizeof list);
    for (char *name = strtok_r(list, ", ", &save); name; name = strtok_r(NULL, ", ", &save)) {
        uint64_t hash[2];
        long ops = 0;
        int before = failures;
        for (int rep = 0; rep < 2; rep++) {
            mirror *x;
            rng_state = 0x9E3779B97F4A7C15ull;
            be = mirror_open(name, 0, &x);
            run();
            hash[rep] = x->hash, ops = x->ops;
            upm_backend_free(be);
        }
        CHECK(hash[0] == hash[1]);
        printf("%s backend: %s %s, %ld ops, results %016llx twice%s\n", name, what,
               failures == before ? "within bounds" : "FAILED (see above)", ops, (unsigned long long)hash[0],
               hash[0] == hash[1] ? "" : " (NOT the same bits)");
    }
}

#endif
