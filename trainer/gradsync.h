/* Data-parallel gradient averaging (docs/distributed.md): the gradient buffer is cut into one bucket
 * per parameter group (upm_param_group: the head, each block, the embeddings), in the order the
 * backward pass completes them; each bucket's all-reduce starts as soon as the last backward pass has
 * finished its group, so communication overlaps the rest of the backward. Expert slices that no rank
 * chose this step (their gradients are exactly zero everywhere) are left out of the reduction.
 *
 *   upm_gradsync_begin(gs)                       after every forward of the step, before the last backward
 *   upm_pass_backward_cb(m, p, dU, upm_gradsync_ready, gs, err)
 *   upm_gradsync_finish(gs)                      m->g is now the mean over the ranks
 *
 * The earlier backward passes of the step (label texts, paired targets, vocabulary candidates) run
 * without the callback. */
#ifndef UPM_GRADSYNC_H
#define UPM_GRADSYNC_H

#include "comm.h"
#include "devcomm.h"
#include "model.h"

typedef struct upm_gradsync upm_gradsync;

typedef struct upm_gradsync_stats {
    double floats_reduced;  /* this step */
    double floats_all;      /* the whole gradient (what a plain all-reduce sends) */
    double sync_s;          /* begin(): the all-gather of used experts, where ranks meet before the last
                               backward pass (mostly waiting for ranks with a longer step so far) */
    double wait_s;          /* time finish() waited for reductions not yet done */
    double comm_s;          /* time in the buckets' communicator calls (start, progress, wait): the
                               reduction time not hidden behind the backward pass */
    int buckets;
} upm_gradsync_stats;

/* skip_experts: leave out experts nobody used (on by default in the trainer). dev: NULL (sums over c, on
 * the host), or a device communicator (devcomm.h): each bucket is then packed, summed and written back on
 * the backend's stream, in bucket order, with no host copy and no wait inside the step. */
int upm_gradsync_new(upm_comm *c, upm_devcomm *dev, upm_model *m, int skip_experts, upm_gradsync **out,
                     upm_err *err);
void upm_gradsync_free(upm_gradsync *gs);
/* Agrees with every rank on the experts used this step (model->expert_used, OR over ranks). */
int upm_gradsync_begin(upm_gradsync *gs, upm_err *err);
/* The backward callback (ctx = gs): starts the reduction of `group`; errors are kept for finish. */
void upm_gradsync_ready(void *ctx, int group);
/* Waits for every bucket (starting those not started: a backward without the callback reduces after
 * the pass, one bucket after the other) and scales by 1/world. */
int upm_gradsync_finish(upm_gradsync *gs, upm_gradsync_stats *st, upm_err *err);
/* With a device communicator: waits (at most the patience) for the sums queued this step, so that a hung
 * rank is an error rather than a stream that never drains; call it before the step's download. 0 at once
 * without one. */
int upm_gradsync_settle(upm_gradsync *gs, upm_err *err);

#endif
