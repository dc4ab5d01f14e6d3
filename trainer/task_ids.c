/* Task ids for task routing and task-specific weights (docs/model.md, "Routings"): the model's task table
 * gets one slot per task of the mixture, in the plan's order (datasets sorted by name, so every rank
 * assigns the same ids), when a run starts or resumes; passes carry their batch's id. A task the model never
 * met in training has no trained embedding (or weights): evaluation refuses it with the model's task list. */
#include <stdio.h>
#include <string.h>

#include "catalog_ops.h"
#include "inputs.h"
#include "plan.h"
#include "trainer_state.h"

int upm_trainer_task_table(trainer *t, int fresh, upm_err *err)
{
    upm_model_config *c = &t->cfg;
    if (!upm_moe_needs_task(c->moe) || t->eval || !t->o->mixture)
        return 0;
    upm_plan plan;
    int rc = upm_plan_load(t->cat, t->o->mixture, &plan, err);
    if (rc)
        return rc;
    if (fresh) { /* the table: --task-slots, or one slot per task of the mixture */
        int n = 0;
        for (int i = 0; i < plan.n; i++) {
            int seen = 0;
            for (int j = 0; j < i; j++)
                seen |= !strcmp(plan.members[j].task.name, plan.members[i].task.name);
            n += !seen;
        }
        if (c->task_slots > 0 && c->task_slots < n)
            rc = upm_errf(err, UPM_EUSAGE, "--task-slots %d is smaller than mixture %s's %d tasks", c->task_slots,
                          t->o->mixture, n);
        else if (n > UPM_MAX_TASK_SLOTS)
            rc = upm_errf(err, UPM_EUSAGE, "mixture %s has %d tasks; task routing holds at most %d", t->o->mixture, n,
                          UPM_MAX_TASK_SLOTS);
        if (!rc && c->task_slots <= 0)
            c->task_slots = n;
        c->ntasks = 0;
        if (c->moe == UPM_MOE_TASK_SPECIFIC) /* one expert per task, chosen with weight 1 */
            c->experts = c->task_slots, c->topk = 1;
    }
    for (int i = 0; !rc && i < plan.n; i++) {
        int id;
        rc = upm_model_task_assign(c, plan.members[i].task.name, &id, err);
    }
    /* the training's evaluation sets: a task without an id would stop the run at its first evaluation */
    for (int i = 0; !rc && i < t->o->n_eval_datasets; i++) {
        upm_dataset d;
        char names[512];
        if (!(rc = upm_dataset_get(t->cat, t->o->eval_datasets[i], &d, err)) && !upm_model_task_id(c, d.task))
            rc = upm_errf(err, UPM_EUSAGE, "--eval-dataset %s: its task %s is not in mixture %s, so this %s model has no "
                          "routing for it (its tasks: %s)", d.name, d.task, t->o->mixture, upm_moe_kind_name(c->moe),
                          upm_model_task_list(c, names, sizeof names));
    }
    upm_plan_free(&plan);
    return rc;
}

int upm_trainer_task_id(trainer *t, const char *task, int *id, upm_err *err)
{
    *id = 0;
    if (!upm_moe_needs_task(t->cfg.moe))
        return 0;
    if ((*id = upm_model_task_id(&t->cfg, task)))
        return 0;
    char names[512];
    return upm_errf(err, UPM_EINVAL,
                    "task %s was not met in training by this %s model (its tasks: %s): it has no trained routing; "
                    "evaluate it with a model whose mixture had it, or with attribute routing, which shares experts "
                    "by token kind and so reaches tasks it was not trained on",
                    task, upm_moe_kind_name(t->cfg.moe), upm_model_task_list(&t->cfg, names, sizeof names));
}

int upm_trainer_side_input(trainer *t, const upm_batch *b, upm_side side, upm_seq_input *in, upm_err *err)
{
    int rc = upm_batch_side_input(b, side, in, err);
    return rc ? rc : upm_trainer_task_id(t, b->task, &in->task, err);
}
