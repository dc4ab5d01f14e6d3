/* Merging the experts for a task's attribute patterns (paper §3.3), for every data-independent routing
 * (attribute, modality, task, task-specific): the merged model has no gates and one dense weight per
 * pattern, its features equal the routed model's on inputs of those patterns, and an input with another
 * pattern is refused; a dense model and a task outside the trained table cannot merge. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "merge.h"
#include "rng.h"

enum { B = 3, L = 5, IMG = 32, D = 32 };

static upm_model_config config(upm_moe_kind kind)
{
    upm_model_config c = {.dim = D, .heads = 2, .layers = 3, .mlp = 4 * D, .vocab = 100, .max_text = 8,
                          .max_frames = 1, .moe = kind, .experts = 4, .topk = 2, .moe_sa = 1, .moe_ffn = 1,
                          .moe_every = 1, .layerscale_init = 1e-3f, .ln_eps = 1e-5f, .gate_noise = -1, .gate_renorm = 1};
    if (upm_moe_needs_task(kind)) { /* three tasks met in training; the merge serves the second */
        c.task_slots = 4, c.ntasks = 3;
        strcpy(c.task_names[0], "a"), strcpy(c.task_names[1], "b"), strcpy(c.task_names[2], "c");
        if (kind == UPM_MOE_TASK_SPECIFIC)
            c.experts = 4, c.topk = 1;
    }
    return c;
}

static void check_kind(upm_backend *be, upm_moe_kind kind)
{
    const char *name = upm_moe_kind_name(kind);
    upm_err err = {0};
    upm_model *m = NULL, *d = NULL;
    upm_model_config cfg = config(kind);
    CHECK(upm_model_new(&cfg, be, 3, &m, &err) == 0);
    if (!m) {
        fprintf(stderr, "%s: %s\n", name, err.msg);
        return;
    }
    float *w = malloc(sizeof(float) * m->L.total);
    be->download(be, w, m->w, sizeof(float) * m->L.total);
    upm_rng r = upm_rng_stream(9, 8, 7, 6, 5);
    for (size_t i = 0; i < m->L.total; i++) /* every path carries signal, gates far from ties */
        w[i] += (float)(0.3 * upm_rng_normal(&r));
    be->upload(be, m->w, w, sizeof(float) * m->L.total);
    free(w);
    float pixels[B * 3 * IMG * IMG];
    int32_t ids[B * L], lens[B] = {5, 3, 1};
    uint8_t a_img[B * 4], a_txt[B * L];
    for (size_t i = 0; i < sizeof pixels / sizeof pixels[0]; i++)
        pixels[i] = (float)upm_rng_normal(&r);
    for (int i = 0; i < B * L; i++)
        ids[i] = 1 + (int32_t)upm_rng_below(&r, 99);
    memset(a_img, 0x9b, sizeof a_img);
    memset(a_txt, 0xab, sizeof a_txt);
    upm_seq_input in = {.nseq = B, .spe_attr = 0x9b, .nseg = 2, .task = upm_moe_needs_task(kind) ? 2 : 0};
    in.seg[0] = (upm_seq_segment){.kind = UPM_SEG_IMAGE, .T = 1, .H = IMG, .W = IMG, .pixels = pixels, .attrs = a_img};
    in.seg[1] = (upm_seq_segment){.kind = UPM_SEG_TEXT, .L = L, .ids = ids, .lengths = lens, .attrs = a_txt};
    upm_pass *p = upm_pass_new(), *q = upm_pass_new();
    float u1[B * D], u2[B * D];
    CHECK(upm_pass_forward(m, p, &in, NULL, &err) == 0);
    be->download(be, u1, upm_pass_features(p), sizeof u1);

    const uint8_t pats[] = {0xab, 0x2b, 0x9b, 0xab}; /* the task's kinds, unordered, one repeated */
    CHECK(upm_model_merge(m, pats, 4, 0, in.task, &d, &err) == 0);
    if (d) {
        CHECK(d->cfg.moe == UPM_MOE_MERGED && d->cfg.npatterns == 3 && d->cfg.patterns[0] == 0x2b);
        int qkv = upm_layout_find(&d->L, "blocks.1.attn.qkv.weight");
        CHECK(qkv >= 0 && d->L.p[qkv].shape[0] == 3 && d->L.p[qkv].shape[1] == 3 * D);
        CHECK(upm_layout_find(&d->L, "blocks.1.attn.gate.proj.weight") < 0);
        CHECK(upm_layout_count(&d->L) < upm_layout_count(&m->L));
        CHECK(upm_pass_forward(d, q, &in, NULL, &err) == 0);
        be->download(be, u2, upm_pass_features(q), sizeof u2);
        double worst = 0;
        for (int i = 0; i < B * D; i++)
            worst = fmax(worst, fabs((double)u1[i] - u2[i]));
        printf("%s: merged vs routed features: max |diff| %.3g (%s)\n", name, worst,
               memcmp(u1, u2, sizeof u1) ? "DIFFERENT bits" : "identical");
        /* the same bits: the gate's rows and the mixed experts do not depend on the other patterns (on a host
         * whose BLAS rounds a row differently beside other rows this once differed by 2e-7) */
        CHECK(!memcmp(u1, u2, sizeof u1));
        /* an input with an attribute byte the export did not cover */
        uint8_t other[B * L];
        memset(other, 0xaa, sizeof other);
        in.seg[1].attrs = other;
        CHECK(upm_pass_forward(d, q, &in, NULL, &err) == UPM_EINVAL && strstr(err.msg, "170"));
        in.seg[1].attrs = a_txt;
    }
    if (upm_moe_needs_task(kind)) { /* the merge of another task differs; a task beyond the table is refused */
        upm_model *d3 = NULL, *bad = NULL;
        CHECK(upm_model_merge(m, pats, 4, 0, 3, &d3, &err) == 0);
        if (d3) {
            CHECK(upm_pass_forward(d3, q, &in, NULL, &err) == 0);
            be->download(be, u2, upm_pass_features(q), sizeof u2);
            CHECK(memcmp(u1, u2, sizeof u1) != 0);
        }
        upm_model_free(d3);
        CHECK(upm_model_merge(m, pats, 4, 0, 4, &bad, &err) == UPM_EINVAL && bad == NULL &&
              strstr(err.msg, "task id 4"));
        in.task = 4; /* slot 4 exists but no task was trained in it */
        CHECK(upm_pass_forward(m, p, &in, NULL, &err) == UPM_EINVAL && strstr(err.msg, "task id 4"));
        in.task = 0;
        CHECK(upm_pass_forward(m, p, &in, NULL, &err) == UPM_EINVAL && strstr(err.msg, "needs the pass's task id"));
    }
    upm_pass_free(m, p);
    upm_pass_free(d, q);
    upm_model_free(d);
    upm_model_free(m);
}

int main(void)
{
    upm_err err = {0};
    upm_backend *be = NULL;
    CHECK(upm_backend_open(NULL, &(upm_backend_opts){.threads = 1}, &be, &err) == 0);
    if (failures)
        return CHECK_RESULT("test_model_merge");
    check_kind(be, UPM_MOE_ATTRIBUTE);
    check_kind(be, UPM_MOE_MODALITY);
    check_kind(be, UPM_MOE_TASK);
    check_kind(be, UPM_MOE_TASK_SPECIFIC);
    /* a dense model has nothing to merge */
    upm_model *dense = NULL, *none = NULL;
    upm_model_config cfg = config(UPM_MOE_NONE);
    const uint8_t pats[] = {0x9b};
    CHECK(upm_model_new(&cfg, be, 3, &dense, &err) == 0);
    CHECK(upm_model_merge(dense, pats, 1, 0, 0, &none, &err) == UPM_EINVAL && none == NULL &&
          strstr(err.msg, "data-independent routing"));
    upm_model_free(dense);
    /* token and context routing's gates read the data: nothing to merge, and the error says why */
    const upm_moe_kind data[] = {UPM_MOE_TOKEN, UPM_MOE_CONTEXT};
    for (int i = 0; i < 2; i++) {
        char want[96];
        cfg = config(data[i]);
        cfg.gate_noise = 0, cfg.capacity = 1, cfg.eval_capacity = 2, cfg.balance = 0.01f;
        CHECK(upm_model_new(&cfg, be, 3, &dense, &err) == 0);
        snprintf(want, sizeof want, "%s routing's gates read each token's representation", upm_moe_kind_name(data[i]));
        CHECK(upm_model_merge(dense, pats, 1, 0, 0, &none, &err) == UPM_EINVAL && none == NULL && strstr(err.msg, want));
        upm_model_free(dense);
    }
    upm_backend_free(be);
    return CHECK_RESULT("test_model_merge");
}
