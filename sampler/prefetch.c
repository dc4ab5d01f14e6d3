/* One batch decoded ahead (prefetch.h): a thread and a one-slot handoff under a mutex. */
#include "prefetch.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"

struct upm_prefetch {
    upm_loader *l;
    pthread_t thread;
    pthread_mutex_t lk;
    pthread_cond_t cv;
    int full, quit, rc;   /* the slot holds a decoded batch (or the error rc) */
    upm_batch slot;       /* being decoded, or ready */
    char *slot_cursor;    /* the loader's cursor after the slot's batch */
    char *cursor;         /* after the last batch handed out */
    upm_err err;
    double wait_s;
};

static void *produce(void *arg)
{
    upm_prefetch *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->lk);
        while (p->full && !p->quit)
            pthread_cond_wait(&p->cv, &p->lk);
        int quit = p->quit;
        pthread_mutex_unlock(&p->lk);
        if (quit)
            return NULL;
        upm_err err = {0};
        int rc = upm_loader_next(p->l, &p->slot, &err);
        char *cursor = rc ? NULL : upm_loader_cursor_json(p->l);
        if (!rc && !cursor)
            rc = upm_errf(&err, UPM_ENOMEM, "no memory for the sampler cursor");
        pthread_mutex_lock(&p->lk);
        free(p->slot_cursor);
        p->slot_cursor = cursor, p->rc = rc, p->err = err, p->full = 1;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->lk);
        if (rc) /* the loader failed: the error is handed out, nothing more is read */
            return NULL;
    }
}

int upm_prefetch_open(upm_loader *l, upm_prefetch **out, upm_err *err)
{
    *out = NULL;
    upm_prefetch *p = calloc(1, sizeof *p);
    if (!p || !(p->cursor = upm_loader_cursor_json(l))) {
        free(p);
        return upm_errf(err, UPM_ENOMEM, "no memory for prefetching");
    }
    p->l = l;
    pthread_mutex_init(&p->lk, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (pthread_create(&p->thread, NULL, produce, p)) {
        pthread_mutex_destroy(&p->lk);
        pthread_cond_destroy(&p->cv);
        free(p->cursor);
        free(p);
        return upm_errf(err, UPM_ENOMEM, "cannot start the prefetching thread");
    }
    *out = p;
    return 0;
}

int upm_prefetch_next(upm_prefetch *p, upm_batch *out, upm_err *err)
{
    double t0 = upm_monotonic_s();
    pthread_mutex_lock(&p->lk);
    while (!p->full)
        pthread_cond_wait(&p->cv, &p->lk);
    p->wait_s += upm_monotonic_s() - t0;
    int rc = p->rc;
    if (rc) {
        *err = p->err;
        pthread_mutex_unlock(&p->lk);
        return rc;
    }
    upm_batch t = *out; /* the batch out, its old memory to the thread */
    *out = p->slot, p->slot = t;
    free(p->cursor);
    p->cursor = p->slot_cursor, p->slot_cursor = NULL;
    p->full = 0;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->lk);
    return 0;
}

char *upm_prefetch_cursor_json(upm_prefetch *p)
{
    pthread_mutex_lock(&p->lk);
    char *c = p->cursor ? strdup(p->cursor) : NULL;
    pthread_mutex_unlock(&p->lk);
    return c;
}

double upm_prefetch_wait_s(const upm_prefetch *p) { return p->wait_s; }

void upm_prefetch_close(upm_prefetch *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lk);
    p->quit = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->lk);
    pthread_join(p->thread, NULL);
    pthread_mutex_destroy(&p->lk);
    pthread_cond_destroy(&p->cv);
    upm_batch_free(&p->slot);
    free(p->slot_cursor);
    free(p->cursor);
    free(p);
}
