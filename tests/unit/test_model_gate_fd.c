/* Finite-difference check of the attribute gate path: for a small attribute-MoE model on a two-pattern
 * input, the analytic gradients of every gate parameter (attribute projection, the gate's LayerNorm,
 * the expert logits) and of the expert weights equal central differences of the loss. The PyTorch
 * oracle checks the same gradients against autograd; this checks them against the loss alone. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "loss.h"
#include "model.h"
#include "rng.h"

enum { B = 3, C = 3, L = 4, IMG = 16 };

typedef struct fixture {
    upm_backend *be;
    upm_model *m;
    upm_pass *pin, *ptg;
    upm_seq_input in, tg;
    float pixels[B * 3 * IMG * IMG];
    int32_t ids[B * L], lens[B], tids[C * L], tlens[C], labels[B];
    uint8_t a_img[B], a_txt[B * L], a_tgt[C * L];
    float *dU, *dV, *logits;
    int32_t *dlabels;
} fixture;

static float loss_of(fixture *f, int backward)
{
    upm_err err = {0};
    upm_backend *be = f->be;
    upm_loss_result res = {0};
    be->zero(be, f->dU, sizeof(float) * B * f->m->cfg.dim);
    be->zero(be, f->dV, sizeof(float) * C * f->m->cfg.dim);
    if (upm_pass_forward(f->m, f->pin, &f->in, NULL, &err) || upm_pass_forward(f->m, f->ptg, &f->tg, NULL, &err) ||
        upm_loss_label(f->m, upm_pass_features(f->pin), B, upm_pass_features(f->ptg), C, f->dlabels, NULL, 1.0f, f->dU,
                       f->dV, f->logits, &err) ||
        (backward && (upm_pass_backward(f->m, f->ptg, f->dV, &err) || upm_pass_backward(f->m, f->pin, f->dU, &err)))) {
        fprintf(stderr, "step failed: %s\n", err.msg);
        failures++;
    }
    res = upm_loss_read(f->m, 0, B);
    return res.loss;
}

static void setup(fixture *f, int renorm)
{
    upm_err err = {0};
    upm_model_config cfg = {.dim = 16, .heads = 2, .layers = 1, .mlp = 32, .vocab = 64, .max_text = 8,
                            .max_frames = 1, .moe = UPM_MOE_ATTRIBUTE, .experts = 4, .topk = 2, .moe_sa = 1,
                            .moe_ffn = 1, .moe_every = 1, .layerscale_init = 1e-3f, .ln_eps = 1e-5f, .gate_noise = -1,
                            .gate_renorm = renorm};
    CHECK(upm_backend_open(NULL, &(upm_backend_opts){.threads = 1}, &f->be, &err) == 0);
    CHECK(upm_model_new(&cfg, f->be, 5, &f->m, &err) == 0);
    /* move away from the initial values so every path carries signal (LayerScale 1e-3 would hide it) */
    upm_model *m = f->m;
    float *w = malloc(sizeof(float) * m->L.total);
    m->be->download(m->be, w, m->w, sizeof(float) * m->L.total);
    upm_rng r = upm_rng_stream(11, 1, 2, 3, 4);
    for (int i = 0; i < m->L.n; i++)
        for (size_t j = 0; j < m->L.p[i].numel; j++)
            w[m->L.p[i].offset + j] += (float)(0.3 * upm_rng_normal(&r));
    m->be->upload(m->be, m->w, w, sizeof(float) * m->L.total);
    free(w);
    for (size_t i = 0; i < sizeof f->pixels / sizeof f->pixels[0]; i++)
        f->pixels[i] = (float)upm_rng_normal(&r);
    for (int i = 0; i < B * L; i++)
        f->ids[i] = 1 + (int32_t)upm_rng_below(&r, 63);
    for (int i = 0; i < C * L; i++)
        f->tids[i] = 1 + (int32_t)upm_rng_below(&r, 63);
    for (int b = 0; b < B; b++)
        f->lens[b] = 2 + b % 3, f->labels[b] = b % C;
    for (int c = 0; c < C; c++)
        f->tlens[c] = 2 + (c + 1) % 3;
    memset(f->a_img, 0x9b, sizeof f->a_img);  /* an image token of an image+text task */
    memset(f->a_txt, 0xab, sizeof f->a_txt);  /* its text tokens */
    memset(f->a_tgt, 0x2b, sizeof f->a_tgt);  /* target texts */
    f->in = (upm_seq_input){.nseq = B, .spe_attr = 0x9b, .nseg = 2};
    f->in.seg[0] = (upm_seq_segment){.kind = UPM_SEG_IMAGE, .T = 1, .H = IMG, .W = IMG, .pixels = f->pixels,
                                     .attrs = f->a_img};
    f->in.seg[1] = (upm_seq_segment){.kind = UPM_SEG_TEXT, .L = L, .ids = f->ids, .lengths = f->lens,
                                     .attrs = f->a_txt};
    f->tg = (upm_seq_input){.nseq = C, .spe_attr = 0x2b, .nseg = 1};
    f->tg.seg[0] = (upm_seq_segment){.kind = UPM_SEG_TEXT, .L = L, .ids = f->tids, .lengths = f->tlens,
                                     .attrs = f->a_tgt};
    f->pin = upm_pass_new(), f->ptg = upm_pass_new();
    f->dU = f->be->alloc(f->be, sizeof(float) * B * cfg.dim);
    f->dV = f->be->alloc(f->be, sizeof(float) * C * cfg.dim);
    f->logits = f->be->alloc(f->be, sizeof(float) * B * C);
    f->dlabels = f->be->alloc(f->be, sizeof(int32_t) * B);
    f->be->upload(f->be, f->dlabels, f->labels, sizeof f->labels);
}

/* Central differences of the entries of parameter i with the largest analytic gradients. */
static void check_param(fixture *f, const char *name, const float *grad_host)
{
    upm_model *m = f->m;
    int i = upm_layout_find(&m->L, name);
    CHECK(i >= 0);
    if (i < 0)
        return;
    const upm_param *p = &m->L.p[i];
    const float *g = grad_host + p->offset;
    size_t pickv[3];
    int npick = 0;
    for (int pick = 0; pick < 3 && (size_t)pick < p->numel; pick++) { /* the 3 largest |g|, distinct */
        size_t best = SIZE_MAX;
        for (size_t j = 0; j < p->numel; j++) {
            int taken = 0;
            for (int q = 0; q < npick; q++)
                taken |= pickv[q] == j;
            if (!taken && (best == SIZE_MAX || fabsf(g[j]) > fabsf(g[best])))
                best = j;
        }
        pickv[npick++] = best;
    }
    for (int pick = 0; pick < npick; pick++) {
        size_t best = pickv[pick];
        float v, h = 1e-2f;
        float *w = upm_model_w(m, i) + best;
        f->be->download(f->be, &v, w, sizeof v);
        float up = v + h, dn = v - h;
        f->be->upload(f->be, w, &up, sizeof up);
        double lp = loss_of(f, 0);
        f->be->upload(f->be, w, &dn, sizeof dn);
        double lm = loss_of(f, 0);
        f->be->upload(f->be, w, &v, sizeof v);
        double fd = (lp - lm) / (2.0 * h), an = g[best];
        int ok = fabs(fd - an) <= 3e-2 * fabs(an) + 2e-4;
        if (!ok)
            fprintf(stderr, "%s[%zu]: analytic %.6g, finite difference %.6g\n", name, best, an, fd);
        CHECK(ok);
    }
}

/* The gate gradients of one model: Eq. 3 as written (renorm 0) or renormalised over the kept k (1). */
static void check_model(int renorm)
{
    fixture f = {0};
    setup(&f, renorm);
    if (failures)
        return;
    upm_model *m = f.m;
    upm_model_zero_grad(m);
    float l0 = loss_of(&f, 1);
    CHECK(isfinite(l0) && l0 > 0);
    float *g = malloc(sizeof(float) * m->L.total);
    m->be->download(m->be, g, m->g, sizeof(float) * m->L.total);
    static const char *gates[] = {"attn.gate", "mlp.gate1", "mlp.gate2"};
    static const char *parts[] = {"attr.weight", "attr.bias", "norm.weight", "norm.bias", "proj.weight"};
    char name[96];
    for (int gi = 0; gi < 3; gi++)
        for (int k = 0; k < 5; k++) {
            snprintf(name, sizeof name, "blocks.0.%s.%s", gates[gi], parts[k]);
            check_param(&f, name, g);
        }
    check_param(&f, "blocks.0.attn.qkv.weight", g);
    check_param(&f, "blocks.0.mlp.fc2.bias", g);
    check_param(&f, "logit_scale", g);
    free(g);
    upm_pass_free(m, f.pin);
    upm_pass_free(m, f.ptg);
    f.be->free(f.be, f.dU);
    f.be->free(f.be, f.dV);
    f.be->free(f.be, f.logits);
    f.be->free(f.be, f.dlabels);
    upm_model_free(m);
    upm_backend_free(f.be);
}

int main(void)
{
    check_model(0);
    check_model(1);
    return CHECK_RESULT("test_model_gate_fd");
}
