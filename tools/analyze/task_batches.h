/* Per-task batches for the analyses of upmoe-analyze that read data (interference, token-routing gate maps):
 * the mixture's tasks, and a walk over the mixture's own sampler that runs a step on each wanted batch. */
#ifndef UPM_ANALYZE_TASK_BATCHES_H
#define UPM_ANALYZE_TASK_BATCHES_H

#include "trainer_state.h"

#define UPM_ANALYZE_MAX_TASKS 64

typedef struct upm_task_list {
    int n;
    char name[UPM_ANALYZE_MAX_TASKS][128];
} upm_task_list;

/* The distinct tasks of mixture `mixture`, in the plan's order (datasets by name). */
int upm_task_list_load(upm_catalog *cat, const char *mixture, upm_task_list *l, upm_err *err);
/* The index of `task` in l, or -1. */
int upm_task_list_find(const upm_task_list *l, const char *task);

/* Runs the trainer t (open on the mixture) over the mixture's sampler: every batch of a listed task that has
 * had fewer than `batches` steps is stepped (upm_trainer_batch_step, with t->step naming the draw) and then
 * handed to fn with the task's index; others are skipped. Ends when every task has had `batches`; a task the
 * sampler does not reach in 1000 x batches x tasks draws is an error naming it. */
typedef int (*upm_task_batch_fn)(void *ctx, trainer *t, int task, upm_err *err);
int upm_each_task_batch(trainer *t, const upm_task_list *l, int batches, upm_task_batch_fn fn, void *ctx,
                        upm_err *err);

#endif
