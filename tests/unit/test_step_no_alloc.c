/* A training step allocates nothing and reads back only its metrics once the largest batch has been seen
 * (backend.h, issue 16): an attribute-MoE model's step (image and label-text passes, the label loss, both
 * backward passes, training passes that mark the experts used, AdamW) runs on a counting wrapper of the
 * backend; from the second step on it makes no alloc or free, two downloads (the record of experts used,
 * which the gradient reduction of data-parallel training reads, and the step's statistics: losses and
 * gradient norm together, after the update is queued) and uploads no position table (the first step's
 * uploads include it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "label_step.h"
#include "optim.h"

static upm_backend *inner;
static long allocs, frees, downloads, uploads;

static void *c_alloc(upm_backend *be, size_t bytes)
{
    (void)be;
    allocs++;
    return inner->alloc(inner, bytes);
}

static void c_free(upm_backend *be, void *p)
{
    (void)be;
    frees++;
    inner->free(inner, p);
}

static void c_download(upm_backend *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    downloads++;
    inner->download(inner, dst, src, bytes);
}

static void c_upload(upm_backend *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    uploads++;
    inner->upload(inner, dst, src, bytes);
}

int main(void)
{
    upm_err err = {0};
    CHECK(upm_backend_open(NULL, &(upm_backend_opts){.threads = 1}, &inner, &err) == 0);
    if (failures)
        return CHECK_RESULT("test_step_no_alloc");
    upm_backend counting = *inner; /* the same ops and context; memory traffic counted */
    counting.alloc = c_alloc, counting.free = c_free, counting.download = c_download, counting.upload = c_upload;
    upm_backend *be = &counting;
    upm_model_config cfg = {.dim = 32, .heads = 2, .layers = 2, .mlp = 64, .vocab = 64, .max_text = 8,
                            .max_frames = 1, .moe = UPM_MOE_ATTRIBUTE, .experts = 4, .topk = 2, .moe_sa = 1,
                            .moe_ffn = 1, .moe_every = 1, .layerscale_init = 1e-3f, .ln_eps = 1e-5f, .gate_noise = -1};
    upm_model *m = NULL;
    upm_optim opt;
    upm_optim_config oc;
    upm_optim_config_default(&oc);
    oc.total_steps = 10;
    CHECK(upm_model_new(&cfg, be, 1, &m, &err) == 0 && upm_optim_init(&opt, m, &oc, &err) == 0);
    label_step ls;
    label_step_init(&ls, be, cfg.dim, 3);
    long first_uploads = 0;
    for (int step = 0; step < 4 && m; step++) {
        allocs = frees = downloads = uploads = 0;
        float lr, st[UPM_NSTATS];
        label_step_forward(&ls, m, NULL);
        CHECK(upm_pass_backward(m, ls.pin, ls.dU, &err) == 0);
        const uint8_t *used = upm_model_experts_used(m); /* what the gradient reduction reads, once */
        CHECK(used != NULL);
        CHECK(upm_optim_step(&opt, m, NULL, &lr, &err) == 0);
        upm_model_stats_read(m, st);
        upm_loss_result res = upm_loss_result_of(st, 0, LS_B);
        CHECK(res.loss > 0 && st[UPM_STAT_SUMSQ] > 0);
        printf("step %d: %ld allocs, %ld frees, %ld downloads, %ld uploads, loss %.4f\n", step + 1, allocs, frees,
               downloads, uploads, res.loss);
        if (step == 0) {
            first_uploads = uploads;
            CHECK(allocs > 0); /* the counting sees the first step's arenas */
        } else {
            CHECK(allocs == 0 && frees == 0);
            CHECK(downloads == 2); /* experts used; the step's statistics */
            CHECK(uploads == first_uploads - 1); /* the position table stays on the backend */
        }
    }
    label_step_free(&ls, m);
    upm_optim_free(&opt, m);
    upm_model_free(m);
    upm_backend_free(inner);
    return CHECK_RESULT("test_step_no_alloc");
}
