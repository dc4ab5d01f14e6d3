/* See task_batches.h. */
#include "task_batches.h"

#include <stdio.h>
#include <string.h>

#include "loader.h"
#include "plan.h"

int upm_task_list_find(const upm_task_list *l, const char *task)
{
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->name[i], task))
            return i;
    return -1;
}

int upm_task_list_load(upm_catalog *cat, const char *mixture, upm_task_list *l, upm_err *err)
{
    upm_plan plan;
    l->n = 0;
    int rc = upm_plan_load(cat, mixture, &plan, err);
    for (int i = 0; !rc && i < plan.n; i++)
        if (upm_task_list_find(l, plan.members[i].task.name) < 0 && l->n < UPM_ANALYZE_MAX_TASKS)
            snprintf(l->name[l->n++], sizeof l->name[0], "%s", plan.members[i].task.name);
    if (!rc)
        upm_plan_free(&plan);
    return rc;
}

int upm_each_task_batch(trainer *t, const upm_task_list *l, int batches, upm_task_batch_fn fn, void *ctx,
                        upm_err *err)
{
    int count[UPM_ANALYZE_MAX_TASKS] = {0}, done = 0, rc = 0;
    long limit = 1000L * batches * (l->n ? l->n : 1), it = 0;
    while (!rc && done < l->n) {
        if (++it > limit) {
            for (int i = 0; i < l->n && !rc; i++)
                if (count[i] < batches)
                    rc = upm_errf(err, UPM_EINVAL, "task %s drew %d of %d batches in %ld draws of mixture %s (is its "
                                  "sampling weight 0?)", l->name[i], count[i], batches, limit, t->o->mixture);
            break;
        }
        if ((rc = upm_loader_next(t->loader, &t->batch, err)))
            break;
        int ti = upm_task_list_find(l, t->batch.task);
        if (ti < 0 || count[ti] >= batches)
            continue;
        upm_metric_row row;
        t->step = it - 1; /* names a dumped step file, keys sampled candidates */
        if ((rc = upm_trainer_batch_step(t, &row, err)) || (rc = fn(ctx, t, ti, err)))
            break;
        if (++count[ti] == batches)
            done++;
        rc = t->be->status(t->be, err);
    }
    return rc;
}
