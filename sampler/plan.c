/* Loading a mixture into a plan, and the weighted per-step dataset choice. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"
#include "rng.h"

uint64_t upm_hash_name(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    return h;
}

typedef struct collect_ctx {
    upm_catalog *cat;
    upm_plan *plan;
    upm_err *err;
    int cap;
} collect_ctx;

static int add_member(const upm_mixture_member *m, void *p)
{
    collect_ctx *x = p;
    upm_plan *plan = x->plan;
    if (plan->n == x->cap) {
        x->cap = x->cap ? x->cap * 2 : 16;
        void *q = realloc(plan->members, (size_t)x->cap * sizeof *plan->members);
        if (!q)
            return upm_errf(x->err, UPM_ENOMEM, "out of memory loading mixture %s", plan->mixture);
        plan->members = q;
    }
    upm_plan_member *pm = &plan->members[plan->n];
    memset(pm, 0, sizeof *pm);
    int rc = upm_dataset_get(x->cat, m->dataset, &pm->dataset, x->err);
    if (!rc)
        rc = upm_task_get(x->cat, pm->dataset.task, &pm->task, x->err);
    if (rc)
        return rc;
    pm->sampling_weight = m->sampling_weight >= 0 ? m->sampling_weight : pm->dataset.sampling_weight;
    pm->loss_weight = m->loss_weight >= 0 ? m->loss_weight
                      : pm->dataset.loss_weight >= 0 ? pm->dataset.loss_weight : pm->task.loss_weight;
    pm->id = upm_hash_name(m->dataset);
    if (pm->sampling_weight > 0 && !pm->dataset.url_pattern[0])
        return upm_errf(x->err, UPM_EINVAL, "mixture %s: dataset %s has no shard URL yet (set it with "
                        "'upmoe-catalog set %s url=PATTERN')", plan->mixture, m->dataset, m->dataset);
    plan->n++;
    return 0;
}

int upm_plan_load(upm_catalog *cat, const char *mixture, upm_plan *out, upm_err *err)
{
    memset(out, 0, sizeof *out);
    snprintf(out->mixture, sizeof out->mixture, "%s", mixture);
    collect_ctx x = {cat, out, err, 0};
    int rc = upm_mixture_foreach_member(cat, mixture, add_member, &x, err);
    for (int i = 0; !rc && i < out->n; i++)
        out->total_weight += out->members[i].sampling_weight;
    if (!rc && out->n == 0)
        rc = upm_errf(err, UPM_EINVAL, "mixture %s has no datasets", mixture);
    else if (!rc && !(out->total_weight > 0))
        rc = upm_errf(err, UPM_EINVAL, "mixture %s: every sampling weight is 0", mixture);
    if (rc)
        upm_plan_free(out);
    return rc;
}

void upm_plan_free(upm_plan *p)
{
    free(p->members);
    p->members = NULL;
    p->n = 0;
}

int upm_plan_pick(const upm_plan *p, uint64_t seed, int rank, uint64_t step)
{
    upm_rng r = upm_rng_stream(seed, UPM_RNG_TASK, step, (uint64_t)rank, 0);
    double u = upm_rng_uniform(&r) * p->total_weight, acc = 0;
    int last = 0;
    for (int i = 0; i < p->n; i++) {
        if (p->members[i].sampling_weight <= 0)
            continue;
        acc += p->members[i].sampling_weight;
        last = i;
        if (u < acc)
            return i;
    }
    return last; /* u rounded up to the total */
}
