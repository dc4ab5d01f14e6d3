/* The debug backend (backend.h): every op of the CPU backend, on pointers the host cannot dereference.
 * alloc returns the CPU allocation's address + TAG; each op's pointer arguments are checked and untagged
 * (backend_wrap.c passes them through dev) before the CPU op runs. Code outside the backend that touches
 * backend memory directly faults on the tagged address instead of working by accident, as it would on a
 * GPU.
 *
 * It also holds callers to the rule for uploads from host_alloc memory, which a GPU copies
 * asynchronously: each such upload's source is fingerprinted, and at the next point where the copy must
 * have completed (a download, sync, an event's wait or a query answering 1, host_free) the source must
 * still be what it was, else the program aborts naming the upload. With UPMOE_DEBUG_BACKEND_REPORT set,
 * destroying the backend prints how many uploads and bytes came from host_alloc memory and from other
 * host memory (the largest of those too), so a test can see which data a GPU would upload unstaged. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "backend_wrap.h"

/* Bit 52: above every user address of x86-64 (47 bits, or 56 with 5-level paging, where the kernel does
 * not hand out addresses this high unless asked) and of arm64 (48 bits; not in the top byte that
 * arm64's top-byte-ignore would let through). */
#define TAG ((uintptr_t)1 << 52)

typedef struct span {
    uintptr_t base; /* untagged */
    size_t bytes;
} span;

typedef struct pending { /* an upload from host_alloc memory not yet known complete */
    const void *src;
    size_t bytes;
    uint64_t hash;
} pending;

typedef struct dbg {
    upm_backend *cpu;
    pthread_mutex_t lk;
    span *live; /* sorted by base */
    int n, cap;
    span *hlive; /* host_alloc blocks (few: batches, staging), under lk */
    int hn, hcap;
    pending *pend; /* uploads in flight (the uploading thread's) */
    int pn, pcap;
    uint64_t up_pinned, up_pinned_bytes, up_other, up_other_bytes, up_other_max;
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

/* ---- host_alloc memory and the uploads from it ---- */

static int in_host_block(dbg *d, const void *p, size_t bytes)
{
    uintptr_t u = (uintptr_t)p;
    for (int i = 0; i < d->hn; i++)
        if (u >= d->hlive[i].base && u + bytes <= d->hlive[i].base + d->hlive[i].bytes)
            return 1;
    return 0;
}

static void *d_host_alloc(void *ctx, size_t bytes)
{
    dbg *d = ctx;
    void *p = d->cpu->host_alloc(d->cpu, bytes);
    if (!p)
        return NULL;
    pthread_mutex_lock(&d->lk);
    if (d->hn == d->hcap) {
        int cap = d->hcap ? 2 * d->hcap : 16;
        span *x = realloc(d->hlive, sizeof *x * (size_t)cap);
        if (!x) {
            pthread_mutex_unlock(&d->lk);
            d->cpu->host_free(d->cpu, p);
            return NULL;
        }
        d->hlive = x, d->hcap = cap;
    }
    d->hlive[d->hn++] = (span){(uintptr_t)p, bytes};
    pthread_mutex_unlock(&d->lk);
    return p;
}

/* Every upload in flight must have read an unchanged source by now (op: the completion point); lk held. */
static void check_pending(dbg *d, const char *op)
{
    for (int i = 0; i < d->pn; i++)
        if (XXH3_64bits(d->pend[i].src, d->pend[i].bytes) != d->pend[i].hash) {
            char what[160];
            snprintf(what, sizeof what,
                     "was rewritten while its upload (%zu bytes) could still be in flight: wait for a download "
                     "or an event first",
                     d->pend[i].bytes);
            die(op, "host_alloc memory", what);
        }
    d->pn = 0;
}

static void d_complete(void *ctx, const char *op)
{
    dbg *d = ctx;
    pthread_mutex_lock(&d->lk);
    check_pending(d, op);
    pthread_mutex_unlock(&d->lk);
}

static void d_host_free(void *ctx, void *p)
{
    dbg *d = ctx;
    if (!p)
        return;
    pthread_mutex_lock(&d->lk);
    int i = 0;
    while (i < d->hn && d->hlive[i].base != (uintptr_t)p)
        i++;
    if (i == d->hn)
        die("host_free", "p", "is not a live host_alloc block of this backend");
    span blk = d->hlive[i];
    d->hlive[i] = d->hlive[--d->hn];
    for (int k = 0; k < d->pn; k++) /* freeing page-locked memory waits for its copies (cudaFreeHost does) */
        if ((uintptr_t)d->pend[k].src >= blk.base && (uintptr_t)d->pend[k].src < blk.base + blk.bytes) {
            check_pending(d, "host_free");
            break;
        }
    pthread_mutex_unlock(&d->lk);
    d->cpu->host_free(d->cpu, p);
}

static void d_upload(void *ctx, void *dst, const void *src, size_t bytes)
{
    dbg *d = ctx;
    host(ctx, src, "upload", "host_src");
    void *r = dev(ctx, dst, bytes, "upload", "dst");
    pthread_mutex_lock(&d->lk);
    if (in_host_block(d, src, bytes)) {
        d->up_pinned++, d->up_pinned_bytes += bytes;
        if (d->pn == d->pcap) {
            int cap = d->pcap ? 2 * d->pcap : 64;
            pending *x = realloc(d->pend, sizeof *x * (size_t)cap);
            if (!x)
                die("upload", "", "out of memory for the record of uploads in flight");
            d->pend = x, d->pcap = cap;
        }
        d->pend[d->pn++] = (pending){src, bytes, XXH3_64bits(src, bytes)};
    } else {
        d->up_other++, d->up_other_bytes += bytes;
        if (bytes > d->up_other_max)
            d->up_other_max = bytes;
    }
    pthread_mutex_unlock(&d->lk);
    d->cpu->upload(d->cpu, r, src, bytes);
}

static void d_download(void *ctx, void *dst, const void *src, size_t bytes)
{
    dbg *d = ctx;
    host(ctx, dst, "download", "host_dst");
    d_complete(d, "download"); /* the stream reaches the download after the uploads before it */
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
    if (getenv("UPMOE_DEBUG_BACKEND_REPORT"))
        fprintf(stderr,
                "upmoe debug backend: uploads from host_alloc memory: %llu (%llu bytes); from other host memory: "
                "%llu (%llu bytes, largest %llu)\n",
                (unsigned long long)d->up_pinned, (unsigned long long)d->up_pinned_bytes,
                (unsigned long long)d->up_other, (unsigned long long)d->up_other_bytes,
                (unsigned long long)d->up_other_max);
    pthread_mutex_destroy(&d->lk);
    free(d->live);
    free(d->hlive);
    free(d->pend);
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
                           .host = host, .host_alloc = d_host_alloc, .host_free = d_host_free,
                           .complete = d_complete, .destroy = d_destroy};
    if ((rc = upm_backend_wrap(cpu, &h, out, err))) { /* the wrapper frees cpu only once it exists */
        d_destroy(d);
        upm_backend_free(cpu);
    }
    return rc;
}
