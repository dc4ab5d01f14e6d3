/* The gradient reduction waits for events, not for the host (trainer/gradsync.c, backend.h "order and
 * waiting"): on a backend whose events report "still running" at first, as a GPU's do while the backward
 * pass is in flight, each bucket's reduction starts later (at a later bucket's callback, or in finish,
 * after waiting), in the same order, and the averaged gradient is bit for bit the one of a backend whose
 * events are always complete. One attribute-MoE training step, local communicator. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gradsync.h"
#include "label_step.h"

static upm_backend *inner;
static long queries, not_yet, waits;

static int slow_query(upm_backend *be, upm_event *ev)
{
    (void)be;
    queries++;
    if (queries % 3) { /* two of every three answers: not yet */
        not_yet++;
        return 0;
    }
    return inner->query(inner, ev);
}

static void counted_wait(upm_backend *be, upm_event *ev)
{
    (void)be;
    waits++;
    inner->wait(inner, ev);
}

/* One step's averaged gradient (*n = L.total floats, host) on backend be. */
static float *step_gradient(upm_backend *be, upm_comm *c, size_t *n)
{
    upm_err err = {0};
    upm_model_config cfg = {.dim = 32, .heads = 2, .layers = 3, .mlp = 64, .vocab = 64, .max_text = 8,
                            .max_frames = 1, .moe = UPM_MOE_ATTRIBUTE, .experts = 4, .topk = 2, .moe_sa = 1,
                            .moe_ffn = 1, .moe_every = 1, .layerscale_init = 0.1f, .ln_eps = 1e-5f, .gate_noise = -1};
    upm_model *m = NULL;
    upm_gradsync *gs = NULL;
    CHECK(upm_model_new(&cfg, be, 7, &m, &err) == 0 && upm_gradsync_new(c, NULL, m, 1, &gs, &err) == 0);
    if (!m || !gs)
        exit(CHECK_RESULT("test_gradsync_events"));
    label_step ls;
    label_step_init(&ls, be, cfg.dim, 5);
    upm_loss_result res;
    upm_gradsync_stats st;
    label_step_forward(&ls, m, &res);
    CHECK(upm_gradsync_begin(gs, &err) == 0);
    CHECK(upm_pass_backward_cb(m, ls.pin, ls.dU, upm_gradsync_ready, gs, &err) == 0);
    CHECK(upm_gradsync_finish(gs, &st, &err) == 0 && st.buckets == cfg.layers + 2);
    float *g = malloc(sizeof(float) * m->L.total);
    be->download(be, g, m->g, sizeof(float) * m->L.total);
    *n = m->L.total;
    label_step_free(&ls, m);
    upm_gradsync_free(gs);
    upm_model_free(m);
    return g;
}

int main(void)
{
    upm_err err = {0};
    upm_comm *c = NULL;
    upm_comm_opts co;
    upm_comm_opts_default(&co);
    co.kind = UPM_COMM_LOCAL;
    CHECK(upm_comm_open(&co, &c, &err) == 0);
    CHECK(upm_backend_open(NULL, &(upm_backend_opts){.threads = 1}, &inner, &err) == 0);
    if (failures)
        return CHECK_RESULT("test_gradsync_events");
    upm_backend slow = *inner; /* the same ops; events that complete late */
    slow.query = slow_query, slow.wait = counted_wait;
    size_t n = 0, n2 = 0;
    float *want = step_gradient(inner, c, &n), *got = step_gradient(&slow, c, &n2);
    CHECK(n == n2);
    printf("%ld event queries, %ld answered 'not yet', %ld waits in finish\n", queries, not_yet, waits);
    CHECK(not_yet > 0 && waits > 0); /* some reductions were deferred, some waited for */
    CHECK(n > 0 && memcmp(want, got, sizeof(float) * n) == 0);
    int nonzero = 0;
    for (size_t i = 0; i < n; i++)
        nonzero += want[i] != 0.0f;
    CHECK(nonzero > 0);
    free(want), free(got);
    upm_backend_free(inner);
    upm_comm_close(c, 0);
    return CHECK_RESULT("test_gradsync_events");
}
