/* The debug backend (backend.h): every op of the CPU backend, on pointers the host cannot dereference.
 * alloc returns the CPU allocation's address + TAG; each op's pointer arguments are checked and untagged
 * (backend_wrap.c passes them through dev) before the CPU op runs. Code outside the backend that touches
 * backend memory directly faults on the tagged address instead of working by accident, as it would on a
 * GPU. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_wrap.h"

/* Bit 52: above every user address of x86-64 (47 bits, or 56 with 5-level paging, where the kernel does
 * not hand out addresses this high unless asked) and of arm64 (48 bits; not in the top byte that
 * arm64's top-byte-ignore would let through). */
#define TAG ((uintptr_t)1 << 52)

typedef struct span {
    uintptr_t base; /* untagged */
    size_t bytes;
} span;

typedef struct dbg {
    upm_backend *cpu;
    pthread_mutex_t lk;
    span *live; /* sorted by base */
    int n, cap;
} dbg;

__attribute__((noreturn)) static void die(const char *op, const char *arg, const char *what)
{
    fprintf(stderr, "upmoe debug backend: %s: %s %s\n", op, arg, what);
    fflush(stderr);
    abort();
}

/* Index of the live allocation holding address r (untagged), or -1. */
static int find(dbg *d, uintptr_t r)
{
    int lo = 0, hi = d->n - 1, at = -1;
    while (lo <= hi) { /* the last base <= r */
        int mid = (lo + hi) / 2;
        if (d->live[mid].base <= r)
            at = mid, lo = mid + 1;
        else
            hi = mid - 1;
    }
    return at >= 0 && r <= d->live[at].base + d->live[at].bytes ? at : -1;
}

/* Backend memory h (tagged) as the CPU op's pointer, checking that [h, h + bytes) lies in one live
 * allocation; NULL stays NULL. */
static void *dev(void *ctx, const void *h, size_t bytes, const char *op, const char *arg)
{
    if (!h)
        return NULL;
    dbg *d = ctx;
    uintptr_t u = (uintptr_t)h;
    if (!(u & TAG))
        die(op, arg, "is a host pointer where backend memory belongs");
    uintptr_t r = u - TAG;
    pthread_mutex_lock(&d->lk);
    int i = find(d, r);
    int fits = i >= 0 && r + bytes <= d->live[i].base + d->live[i].bytes;
    pthread_mutex_unlock(&d->lk);
    if (i < 0)
        die(op, arg, "is not in a live allocation of this backend (freed, or never allocated here)");
    if (!fits)
        die(op, arg, "runs past the end of its allocation");
    return (void *)r;
}
static void host(void *ctx, const void *p, const char *op, const char *arg)
{
    (void)ctx;
    if ((uintptr_t)p & TAG)
        die(op, arg, "is backend memory where host memory belongs");
}

/* ---- memory ---- */

static void *d_alloc(void *ctx, size_t bytes)
{
    dbg *d = ctx;
    void *p = d->cpu->alloc(d->cpu, bytes);
    if (!p)
        return NULL;
    pthread_mutex_lock(&d->lk);
    if (d->n == d->cap) {
        int cap = d->cap ? 2 * d->cap : 64;
        span *x = realloc(d->live, sizeof *x * (size_t)cap);
        if (!x) {
            pthread_mutex_unlock(&d->lk);
            d->cpu->free(d->cpu, p);
            return NULL;
        }
        d->live = x, d->cap = cap;
    }
    int at = d->n;
    while (at > 0 && d->live[at - 1].base > (uintptr_t)p)
        at--;
    memmove(d->live + at + 1, d->live + at, sizeof *d->live * (size_t)(d->n - at));
    d->live[at] = (span){(uintptr_t)p, bytes};
    d->n++;
    pthread_mutex_unlock(&d->lk);
    return (void *)((uintptr_t)p + TAG);
}

static void d_free(void *ctx, void *h)
{
    if (!h)
        return;
    dbg *d = ctx;
    uintptr_t u = (uintptr_t)h;
    if (!(u & TAG))
        die("free", "p", "is a host pointer, not backend memory");
    pthread_mutex_lock(&d->lk);
    int i = find(d, u - TAG);
    int exact = i >= 0 && d->live[i].base == u - TAG;
    if (exact) {
        memmove(d->live + i, d->live + i + 1, sizeof *d->live * (size_t)(d->n - i - 1));
        d->n--;
    }
    pthread_mutex_unlock(&d->lk);
    if (!exact)
        die("free", "p", "is not the start of a live allocation (freed twice?)");
    d->cpu->free(d->cpu, (void *)(u - TAG));
}

static void d_upload(void *ctx, void *dst, const void *src, size_t bytes)
{
    dbg *d = ctx;
    host(ctx, src, "upload", "host_src");
    d->cpu->upload(d->cpu, dev(ctx, dst, bytes, "upload", "dst"), src, bytes);
}

static void d_download(void *ctx, void *dst, const void *src, size_t bytes)
{
    dbg *d = ctx;
    host(ctx, dst, "download", "host_dst");
    d->cpu->download(d->cpu, dst, dev(ctx, src, bytes, "download", "src"), bytes);
}

static void d_copy(void *ctx, void *dst, const void *src, size_t bytes)
{
    dbg *d = ctx;
    d->cpu->copy(d->cpu, dev(ctx, dst, bytes, "copy", "dst"), dev(ctx, src, bytes, "copy", "src"), bytes);
}

static void d_zero(void *ctx, void *p, size_t bytes)
{
    dbg *d = ctx;
    d->cpu->zero(d->cpu, dev(ctx, p, bytes, "zero", "p"), bytes);
}

static void d_destroy(void *ctx)
{
    dbg *d = ctx;
    pthread_mutex_destroy(&d->lk);
    free(d->live);
    free(d);
}

int upm_backend_debug_new(int threads, upm_backend **out, upm_err *err)
{
    *out = NULL;
    upm_backend *cpu = NULL;
    int rc = upm_backend_cpu_new(threads, &cpu, err);
    if (rc)
        return rc;
    dbg *d = calloc(1, sizeof *d);
    if (!d) {
        upm_backend_free(cpu);
        return upm_errf(err, UPM_ENOMEM, "debug backend: out of memory");
    }
    d->cpu = cpu;
    pthread_mutex_init(&d->lk, NULL);
    upm_backend_hooks h = {.name = "debug", .ctx = d, .alloc = d_alloc, .free = d_free, .upload = d_upload,
                           .download = d_download, .copy = d_copy, .zero = d_zero, .host_ptr = NULL, .dev = dev,
                           .host = host, .destroy = d_destroy};
    if ((rc = upm_backend_wrap(cpu, &h, out, err))) { /* the wrapper frees cpu only once it exists */
        d_destroy(d);
        upm_backend_free(cpu);
    }
    return rc;
}
