/* A label task's training step for the unit tests that watch what a step does (test_step_no_alloc.c,
 * test_gradsync_events.c): 4 random images against 3 label texts of up to 4 tokens, in passes that mark
 * the experts used; forward of both sides, the label loss, the targets' backward. The input's backward is
 * the caller's (plain, or with the gradient reduction's callback). */
#ifndef UPM_LABEL_STEP_H
#define UPM_LABEL_STEP_H

#include <string.h>

#include "check.h"
#include "loss.h"
#include "model.h"
#include "rng.h"

enum { LS_B = 4, LS_C = 3, LS_L = 4, LS_IMG = 32 };

typedef struct label_step {
    float pixels[LS_B * 3 * LS_IMG * LS_IMG];
    int32_t tids[LS_C * LS_L], tlens[LS_C], labels[LS_B];
    uint8_t a_img[LS_B * 4], a_tgt[LS_C * LS_L];
    upm_seq_input in, tg;
    upm_backend *be;
    int dim;
    float *dU, *dV, *logits; /* backend memory */
    int32_t *dlabels;
    upm_pass *pin, *ptg;
} label_step;

/* Inputs drawn from seed; buffers on be for features of width dim. s must not move afterwards. */
static void label_step_init(label_step *s, upm_backend *be, int dim, uint64_t seed)
{
    static const int32_t tlens[LS_C] = {3, 2, 4}, labels[LS_B] = {0, 2, 1, 2};
    memset(s, 0, sizeof *s);
    s->be = be, s->dim = dim;
    memcpy(s->tlens, tlens, sizeof tlens);
    memcpy(s->labels, labels, sizeof labels);
    upm_rng r = upm_rng_stream(seed, 4, 3, 2, 1);
    for (size_t i = 0; i < sizeof s->pixels / sizeof s->pixels[0]; i++)
        s->pixels[i] = (float)upm_rng_normal(&r);
    for (int i = 0; i < LS_C * LS_L; i++)
        s->tids[i] = 1 + (int32_t)upm_rng_below(&r, 60);
    memset(s->a_img, 0x99, sizeof s->a_img);
    memset(s->a_tgt, 0x29, sizeof s->a_tgt);
    s->in = (upm_seq_input){.nseq = LS_B, .spe_attr = 0x99, .nseg = 1};
    s->tg = (upm_seq_input){.nseq = LS_C, .spe_attr = 0x29, .nseg = 1};
    s->in.seg[0] = (upm_seq_segment){.kind = UPM_SEG_IMAGE, .T = 1, .H = LS_IMG, .W = LS_IMG, .pixels = s->pixels,
                                     .attrs = s->a_img};
    s->tg.seg[0] = (upm_seq_segment){.kind = UPM_SEG_TEXT, .L = LS_L, .ids = s->tids, .lengths = s->tlens,
                                     .attrs = s->a_tgt};
    s->dU = be->alloc(be, sizeof(float) * LS_B * dim), s->dV = be->alloc(be, sizeof(float) * LS_C * dim);
    s->logits = be->alloc(be, sizeof(float) * LS_B * LS_C);
    s->dlabels = be->alloc(be, sizeof s->labels);
    be->upload(be, s->dlabels, s->labels, sizeof s->labels);
    s->pin = upm_pass_new(), s->ptg = upm_pass_new();
}

/* Zeroes m's gradients and the feature gradients, then forward, loss and the targets' backward. */
static void label_step_forward(label_step *s, upm_model *m, upm_loss_result *res)
{
    upm_err err = {0};
    upm_backend *be = s->be;
    upm_pass_opts train = {.train = 1};
    upm_model_zero_grad(m);
    be->zero(be, s->dU, sizeof(float) * LS_B * s->dim);
    be->zero(be, s->dV, sizeof(float) * LS_C * s->dim);
    CHECK(upm_pass_forward(m, s->pin, &s->in, &train, &err) == 0 &&
          upm_pass_forward(m, s->ptg, &s->tg, &train, &err) == 0);
    CHECK(upm_loss_label(m, upm_pass_features(s->pin), LS_B, upm_pass_features(s->ptg), LS_C, s->dlabels, NULL, 1.0f,
                         s->dU, s->dV, s->logits, &err) == 0);
    CHECK(upm_pass_backward(m, s->ptg, s->dV, &err) == 0);
    if (res) /* a wait: the step then reads its statistics once more, with the optimizer's */
        *res = upm_loss_read(m, 0, LS_B);
}

static void label_step_free(label_step *s, upm_model *m)
{
    upm_pass_free(m, s->pin);
    upm_pass_free(m, s->ptg);
    s->be->free(s->be, s->dU), s->be->free(s->be, s->dV), s->be->free(s->be, s->logits);
    s->be->free(s->be, s->dlabels);
}

#endif
