/* Unit test for common/pool.c: every index runs exactly once per job, on valid worker ids, over many
 * back-to-back jobs of varying sizes (including fewer items than threads). */
#include <stdatomic.h>
#include <string.h>

#include "check.h"
#include "pool.h"

typedef struct job {
    atomic_int hits[1000];
    atomic_int bad_worker;
    int threads;
} job;

static void fn(void *ctx, int i, int worker)
{
    job *j = ctx;
    atomic_fetch_add(&j->hits[i], 1);
    if (worker < 0 || worker >= j->threads)
        atomic_fetch_add(&j->bad_worker, 1);
}

int main(void)
{
    upm_pool *p;
    upm_err err;
    CHECK(upm_pool_new(0, &p, &err) == UPM_EUSAGE);
    CHECK(upm_pool_new(3, &p, &err) == 0 && upm_pool_threads(p) == 3);
    static job j;
    j.threads = 3;
    for (int round = 0; round < 200; round++) {
        int n = (round * 37) % 1000;
        for (int i = 0; i < 1000; i++)
            atomic_store(&j.hits[i], 0);
        upm_pool_for(p, n, fn, &j);
        int wrong = 0;
        for (int i = 0; i < 1000; i++)
            wrong += atomic_load(&j.hits[i]) != (i < n);
        CHECK(wrong == 0);
    }
    CHECK(atomic_load(&j.bad_worker) == 0);
    upm_pool_free(p);
    return CHECK_RESULT("test_pool");
}
