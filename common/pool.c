/* Thread pool (see pool.h): workers sleep on a condition variable between jobs and take indices
 * from a shared counter under the pool's mutex (jobs are coarse: one sample decode each). */
#include "pool.h"

#include <pthread.h>
#include <stdlib.h>

struct upm_pool {
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    pthread_t *threads;
    int nthreads;
    /* the current job */
    void (*fn)(void *, int, int);
    void *ctx;
    int n, next, finished;
    unsigned long generation;
    int quit;
};

typedef struct worker_arg {
    upm_pool *p;
    int id;
} worker_arg;

static void *worker(void *arg)
{
    worker_arg *w = arg;
    upm_pool *p = w->p;
    int id = w->id;
    free(w);
    unsigned long seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->quit && (p->generation == seen || p->next >= p->n))
            pthread_cond_wait(&p->work, &p->mu);
        if (p->quit)
            break;
        seen = p->generation;
        while (p->next < p->n) {
            int i = p->next++;
            pthread_mutex_unlock(&p->mu);
            p->fn(p->ctx, i, id);
            pthread_mutex_lock(&p->mu);
            if (++p->finished == p->n)
                pthread_cond_signal(&p->done);
        }
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int upm_pool_new(int threads, upm_pool **out, upm_err *err)
{
    *out = NULL;
    if (threads < 1 || threads > 1024)
        return upm_errf(err, UPM_EUSAGE, "thread count %d is out of range (1..1024)", threads);
    upm_pool *p = calloc(1, sizeof *p);
    if (!p || !(p->threads = calloc((size_t)threads, sizeof *p->threads))) {
        free(p);
        return upm_errf(err, UPM_ENOMEM, "out of memory creating a thread pool");
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->done, NULL);
    for (int i = 0; i < threads; i++) {
        worker_arg *w = malloc(sizeof *w);
        if (!w || (w->p = p, w->id = i, pthread_create(&p->threads[i], NULL, worker, w) != 0)) {
            free(w);
            upm_pool_free(p);
            return upm_errf(err, UPM_ENOMEM, "cannot start thread %d of %d", i + 1, threads);
        }
        p->nthreads++;
    }
    *out = p;
    return 0;
}

void upm_pool_start(upm_pool *p, int n, void (*fn)(void *ctx, int i, int worker), void *ctx)
{
    pthread_mutex_lock(&p->mu);
    p->fn = fn, p->ctx = ctx, p->n = n > 0 ? n : 0, p->next = 0, p->finished = 0;
    p->generation++;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
}

void upm_pool_wait(upm_pool *p)
{
    pthread_mutex_lock(&p->mu);
    while (p->finished < p->n)
        pthread_cond_wait(&p->done, &p->mu);
    p->n = 0;
    pthread_mutex_unlock(&p->mu);
}

void upm_pool_for(upm_pool *p, int n, void (*fn)(void *ctx, int i, int worker), void *ctx)
{
    upm_pool_start(p, n, fn, ctx);
    upm_pool_wait(p);
}

int upm_pool_threads(const upm_pool *p) { return p->nthreads; }

void upm_pool_free(upm_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->done);
    free(p->threads);
    free(p);
}
