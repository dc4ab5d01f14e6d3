/* A backend wrapping another: its memory is the hooks' own, its compute ops are the inner backend's with
 * every backend-memory argument translated by hooks.dev. The debug backend (tagged memory the host cannot
 * touch) and the conformance suite's host-mirror adapter (tests/unit/backend_mirror.h) are built on it. */
#ifndef UPM_BACKEND_WRAP_H
#define UPM_BACKEND_WRAP_H

#include "backend.h"

typedef struct upm_backend_hooks {
    const char *name;
    void *ctx;
    /* the wrapper's memory */
    void *(*alloc)(void *ctx, size_t bytes);
    void (*free)(void *ctx, void *p);
    void (*upload)(void *ctx, void *dst, const void *host_src, size_t bytes);
    void (*download)(void *ctx, void *host_dst, const void *src, size_t bytes);
    void (*copy)(void *ctx, void *dst, const void *src, size_t bytes);
    void (*zero)(void *ctx, void *p, size_t bytes);
    void *(*host_ptr)(void *ctx, void *p); /* may be NULL: never host-addressable */
    /* p, the wrapper's memory given to op as argument arg, as the inner backend's pointer (NULL stays
     * NULL); bytes: the extent the op touches from p when the wrapper knows it, else 0 */
    void *(*dev)(void *ctx, const void *p, size_t bytes, const char *op, const char *arg);
    /* a host array argument (pack's ranges); may be NULL */
    void (*host)(void *ctx, const void *p, const char *op, const char *arg);
    /* around every inner compute op; may be NULL */
    void (*before)(void *ctx, const char *op);
    void (*after)(void *ctx, const char *op);
    /* host staging memory; may be NULL: the inner backend's */
    void *(*host_alloc)(void *ctx, size_t bytes);
    void (*host_free)(void *ctx, void *p);
    /* everything queued so far has completed (sync, an event's wait, a query answering 1); may be NULL.
     * download reaches the hooks' own download, which is such a point too. */
    void (*complete)(void *ctx, const char *op);
    void (*destroy)(void *ctx); /* may be NULL */
} upm_backend_hooks;

/* The wrapper takes ownership of inner (freed with it). */
int upm_backend_wrap(upm_backend *inner, const upm_backend_hooks *h, upm_backend **out, upm_err *err);

#endif
