/* upmoe-backend-compare: trains the same model on the same batches with two backends side by side (default
 * cpu against cuda) and prints each step's loss on both, their difference, and whether the second backend
 * gives the same bits when run again (losses and final weights). The batches are synthetic and learnable:
 * each of C classes has a random prototype image, a sample is its class's prototype plus noise, and the
 * label texts are fixed random token sequences; a few batches repeat, so the loss falls and the comparison
 * follows a real trajectory. tools/gpu-check runs it on a GPU; with --a cpu --b debug it runs anywhere.
 * Exit status: 0 when the first --strict steps agree within --tol and every step within --rel of the first
 * backend's loss, and the second backend repeats its bits; 1 otherwise; 2 for bad arguments; 77 when a
 * backend cannot run on this machine (no GPU: the test suite counts the check as skipped). */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loss.h"
#include "model.h"
#include "optim.h"
#include "rng.h"

#define PROG "upmoe-backend-compare"

typedef struct opts {
    const char *a, *b, *size, *pa, *pb; /* backends, model size, their precisions (NULL: the backend's default) */
    int moe, batch, classes, image, steps, strict, distinct, json;
    double tol, rel, lr;
} opts;

typedef struct data {
    int B, C, L, image;
    float *proto;  /* [C][3][image][image] */
    int32_t *tids, *tlens;
    uint8_t *a_img, *a_txt;
} data;

/* Batch k of the run (k mod distinct): pixels and labels, the same on every backend. */
static void batch_of(const data *d, int k, float *pixels, int32_t *labels)
{
    upm_rng r = upm_rng_stream(7, (uint64_t)k, 1, 2, 3);
    size_t per = (size_t)3 * d->image * d->image;
    for (int i = 0; i < d->B; i++) {
        labels[i] = (int32_t)upm_rng_below(&r, (uint64_t)d->C);
        for (size_t p = 0; p < per; p++)
            pixels[i * per + p] = d->proto[labels[i] * per + p] + 0.5f * (float)upm_rng_normal(&r);
    }
}

typedef struct run {
    upm_backend *be;
    upm_model *m;
    upm_optim opt;
    upm_pass *pin, *ptg;
    float *dU, *dV, *logits;
    int32_t *dlabels;
} run;

static int run_open(run *x, const char *backend, const char *precision, const upm_model_config *cfg, const data *d,
                    int steps, double lr, upm_err *err)
{
    memset(x, 0, sizeof *x);
    int rc = upm_backend_open(backend, NULL, &x->be, err);
    if (rc)
        return rc;
    upm_optim_config oc;
    upm_optim_config_default(&oc);
    oc.lr = (float)lr, oc.warmup_steps = 5, oc.total_steps = steps;
    if ((rc = upm_model_new(cfg, x->be, 1, &x->m, err)) || (rc = upm_optim_init(&x->opt, x->m, &oc, err)) ||
        (rc = upm_precision_parse(precision, x->be, &x->m->compute, err)))
        return rc;
    upm_backend *be = x->be;
    x->pin = upm_pass_new(), x->ptg = upm_pass_new();
    x->dU = be->alloc(be, sizeof(float) * (size_t)d->B * cfg->dim);
    x->dV = be->alloc(be, sizeof(float) * (size_t)d->C * cfg->dim);
    x->logits = be->alloc(be, sizeof(float) * (size_t)d->B * d->C);
    x->dlabels = be->alloc(be, sizeof(int32_t) * (size_t)d->B);
    if (!x->pin || !x->ptg || !x->dU || !x->dV || !x->logits || !x->dlabels)
        return upm_errf(err, UPM_ENOMEM, "%s: no memory", backend);
    return 0;
}

/* One training step on batch (pixels, labels); its loss through the step's statistics. */
static int run_step(run *x, const data *d, float *pixels, const int32_t *labels, float *loss, upm_err *err)
{
    upm_backend *be = x->be;
    upm_model *m = x->m;
    int D = m->cfg.dim;
    upm_seq_input in = {.nseq = d->B, .spe_attr = 0x99, .nseg = 1}, tg = {.nseq = d->C, .spe_attr = 0x29, .nseg = 1};
    in.seg[0] = (upm_seq_segment){.kind = UPM_SEG_IMAGE, .T = 1, .H = d->image, .W = d->image, .pixels = pixels,
                                  .attrs = d->a_img};
    tg.seg[0] = (upm_seq_segment){.kind = UPM_SEG_TEXT, .L = d->L, .ids = d->tids, .lengths = d->tlens, .attrs = d->a_txt};
    upm_pass_opts train = {.train = 1};
    upm_model_zero_grad(m);
    be->zero(be, x->dU, sizeof(float) * (size_t)d->B * D);
    be->zero(be, x->dV, sizeof(float) * (size_t)d->C * D);
    be->upload(be, x->dlabels, labels, sizeof(int32_t) * (size_t)d->B);
    float lr;
    int rc = upm_pass_forward(m, x->pin, &in, &train, err);
    if (!rc)
        rc = upm_pass_forward(m, x->ptg, &tg, &train, err);
    if (!rc)
        rc = upm_loss_label(m, upm_pass_features(x->pin), d->B, upm_pass_features(x->ptg), d->C, x->dlabels, NULL, 1.0f,
                            x->dU, x->dV, x->logits, err);
    if (!rc)
        rc = upm_pass_backward(m, x->ptg, x->dV, err);
    if (!rc)
        rc = upm_pass_backward(m, x->pin, x->dU, err);
    if (!rc)
        rc = upm_optim_step(&x->opt, m, NULL, &lr, err);
    if (!rc)
        *loss = upm_loss_read(m, 0, d->B).loss;
    return rc ? rc : be->status(be, err);
}

static uint64_t weights_hash(run *x)
{
    size_t n = x->m->L.total;
    float *h = malloc(n * sizeof *h);
    uint64_t f = 1469598103934665603ull;
    if (!h)
        return 0;
    x->be->download(x->be, h, x->m->w, n * sizeof *h);
    const unsigned char *p = (const unsigned char *)h;
    for (size_t i = 0; i < n * sizeof *h; i++)
        f = (f ^ p[i]) * 1099511628211ull;
    free(h);
    return f;
}

static void run_close(run *x)
{
    if (!x->be)
        return;
    upm_backend *be = x->be;
    if (x->m) {
        upm_pass_free(x->m, x->pin);
        upm_pass_free(x->m, x->ptg);
        upm_optim_free(&x->opt, x->m);
    }
    void *bufs[] = {x->dU, x->dV, x->logits, x->dlabels};
    for (int i = 0; i < 4; i++)
        if (bufs[i])
            be->free(be, bufs[i]);
    upm_model_free(x->m);
    upm_backend_free(be);
}

/* Trains `steps` steps on backend; losses into out[steps]; the final weights' hash. */
static int train(const char *backend, const char *precision, const upm_model_config *cfg, const data *d, int steps,
                 int distinct, double lr, float *out, uint64_t *hash, upm_err *err)
{
    run x;
    size_t npx = (size_t)d->B * 3 * d->image * d->image;
    float *pixels = malloc(npx * sizeof *pixels);
    int32_t *labels = malloc(sizeof *labels * (size_t)d->B);
    int rc = pixels && labels ? run_open(&x, backend, precision, cfg, d, steps, lr, err)
                              : upm_errf(err, UPM_ENOMEM, "no memory");
    for (int k = 0; !rc && k < steps; k++) {
        batch_of(d, k % distinct, pixels, labels);
        rc = run_step(&x, d, pixels, labels, &out[k], err);
    }
    if (!rc)
        *hash = weights_hash(&x);
    run_close(&x);
    free(pixels), free(labels);
    return rc;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: " PROG " [--a cpu] [--b cuda] [--a-precision fp32|bf16] [--b-precision fp32|bf16] [--model ti]\n"
               "       [--moe attribute|modality|token|context|none] [--batch 16] [--classes 10] [--image 64] [--steps 50] [--distinct 4]\n"
               "       [--strict 20] [--tol 1e-3] [--rel 0.02] [--lr 5e-4] [--json]\n"
               "Trains the same model on the same synthetic, learnable batches with backends A and B; prints each\n"
               "step's losses (AdamW at the paper's settings, --lr after 5 warm-up steps, cosine) and checks: |A - B| <= tol for the first `strict` steps, <= rel x A for every step,\n"
               "and B's losses and final weights the same bits when run twice.\n");
}

int main(int argc, char **argv)
{
    opts o = {"cpu", "cuda", "ti", NULL, NULL, UPM_MOE_ATTRIBUTE, 16, 10, 64, 50, 20, 4, 0, 1e-3, 0.02, 5e-4};
    static const struct option lo[] = {{"a", 1, 0, 'a'},      {"b", 1, 0, 'b'},        {"model", 1, 0, 'M'},
                                       {"moe", 1, 0, 'm'},    {"batch", 1, 0, 'B'},    {"classes", 1, 0, 'C'},
                                       {"image", 1, 0, 'i'},  {"steps", 1, 0, 's'},    {"strict", 1, 0, 'S'},
                                       {"distinct", 1, 0, 'd'}, {"tol", 1, 0, 't'},   {"rel", 1, 0, 'r'},
                                       {"json", 0, 0, 'j'},   {"help", 0, 0, 'h'},     {"a-precision", 1, 0, 'p'},
                                       {"b-precision", 1, 0, 'q'}, {"lr", 1, 0, 'l'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'a': o.a = optarg; break;
        case 'b': o.b = optarg; break;
        case 'M': o.size = optarg; break;
        case 'm': { /* the routings that need no task table (the batches have no task) */
            upm_moe_kind k;
            if (upm_moe_kind_parse(optarg, 1, &k, NULL) || upm_moe_needs_task(k)) {
                fprintf(stderr, PROG ": error: --moe takes attribute, modality, token, context or none, not '%s'\n",
                        optarg);
                return 2;
            }
            o.moe = (int)k;
            break;
        }
        case 'B': o.batch = atoi(optarg); break;
        case 'C': o.classes = atoi(optarg); break;
        case 'i': o.image = atoi(optarg); break;
        case 's': o.steps = atoi(optarg); break;
        case 'S': o.strict = atoi(optarg); break;
        case 'd': o.distinct = atoi(optarg); break;
        case 't': o.tol = atof(optarg); break;
        case 'r': o.rel = atof(optarg); break;
        case 'j': o.json = 1; break;
        case 'p': o.pa = optarg; break;
        case 'l': o.lr = atof(optarg); break;
        case 'q': o.pb = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc || o.batch < 1 || o.classes < 2 || o.image < 16 || o.image % 16 || o.steps < 1 || o.strict < 0 ||
        o.distinct < 1 || !(o.tol >= 0) || !(o.rel >= 0) || !(o.lr > 0) || (o.pa && strcmp(o.pa, "fp32") && strcmp(o.pa, "bf16")) ||
        (o.pb && strcmp(o.pb, "fp32") && strcmp(o.pb, "bf16"))) {
        fprintf(stderr, PROG ": error: bad arguments\n");
        usage(stderr);
        return 2;
    }
    upm_err err = {0};
    char why[512];
    const char *names[2] = {o.a, o.b};
    for (int i = 0; i < 2; i++)
        if (upm_backend_why_not(names[i], why, sizeof why)) {
            printf(PROG ": skipped: backend '%s' cannot run here: %s; on a machine with a GPU, tools/gpu-check runs "
                   "this comparison\n",
                   names[i], why);
            return 77;
        }
    upm_model_config cfg;
    if (upm_model_config_preset(o.size, &cfg, &err)) {
        fprintf(stderr, PROG ": error: %s\n", err.msg);
        return 2;
    }
    cfg.moe = o.moe;
    data d = {o.batch, o.classes, 4, o.image, NULL, NULL, NULL, NULL, NULL};
    size_t per = (size_t)3 * o.image * o.image;
    int tok = (o.image / 16) * (o.image / 16);
    d.proto = malloc(sizeof(float) * per * (size_t)o.classes);
    d.tids = malloc(sizeof(int32_t) * (size_t)o.classes * d.L);
    d.tlens = malloc(sizeof(int32_t) * (size_t)o.classes);
    d.a_img = malloc((size_t)o.batch * tok);
    d.a_txt = malloc((size_t)o.classes * d.L);
    float *la = malloc(sizeof(float) * (size_t)o.steps * 3);
    if (!d.proto || !d.tids || !d.tlens || !d.a_img || !d.a_txt || !la) {
        fprintf(stderr, PROG ": error: no memory\n");
        return 1;
    }
    upm_rng r = upm_rng_stream(11, 0, 0, 0, 0);
    for (size_t i = 0; i < per * (size_t)o.classes; i++)
        d.proto[i] = (float)upm_rng_normal(&r);
    for (int i = 0; i < o.classes * d.L; i++)
        d.tids[i] = 1 + (int32_t)upm_rng_below(&r, (uint64_t)cfg.vocab - 1);
    for (int i = 0; i < o.classes; i++)
        d.tlens[i] = 2 + i % 3;
    memset(d.a_img, 0x99, (size_t)o.batch * tok);
    memset(d.a_txt, 0x29, (size_t)o.classes * d.L);
    float *lb = la + o.steps, *lb2 = lb + o.steps;
    uint64_t ha = 0, hb = 0, hb2 = 0;
    if (train(o.a, o.pa, &cfg, &d, o.steps, o.distinct, o.lr, la, &ha, &err) ||
        train(o.b, o.pb, &cfg, &d, o.steps, o.distinct, o.lr, lb, &hb, &err) ||
        train(o.b, o.pb, &cfg, &d, o.steps, o.distinct, o.lr, lb2, &hb2, &err)) {
        fprintf(stderr, PROG ": error: %s\n", err.msg);
        return 1;
    }
    double max_first = 0, max_rel = 0;
    upm_backend *probe = NULL;
    upm_dtype ta = UPM_F32, tb = UPM_F32;
    if (!upm_backend_open(o.a, NULL, &probe, &err)) { /* the precisions the runs used, for the report */
        upm_precision_parse(o.pa, probe, &ta, &err);
        upm_backend_free(probe);
    }
    if (!upm_backend_open(o.b, NULL, &probe, &err)) {
        upm_precision_parse(o.pb, probe, &tb, &err);
        upm_backend_free(probe);
    }
    const char *pa = ta == UPM_BF16 ? "bf16" : "fp32", *pb = tb == UPM_BF16 ? "bf16" : "fp32";
    int same = hb == hb2 && memcmp(lb, lb2, sizeof(float) * (size_t)o.steps) == 0;
    if (!o.json)
        printf("step  %-12s %-12s |diff|\n", o.a, o.b);
    for (int k = 0; k < o.steps; k++) {
        double dd = fabs((double)la[k] - lb[k]);
        if (k < o.strict && !(dd <= max_first))
            max_first = dd;
        double rr = dd / fmax(fabs((double)la[k]), 1e-12);
        if (!(rr <= max_rel))
            max_rel = rr;
        if (!o.json)
            printf("%4d  %-12.6f %-12.6f %.3g\n", k + 1, (double)la[k], (double)lb[k], dd);
    }
    int ok = max_first <= o.tol && max_rel <= o.rel && same;
    if (o.json)
        printf("{\"a\": \"%s\", \"a_precision\": \"%s\", \"b\": \"%s\", \"b_precision\": \"%s\", \"steps\": %d, \"first_loss\": %.6f, \"last_loss_a\": %.6f, "
               "\"last_loss_b\": %.6f, \"max_abs_diff_first\": %.3g, \"strict\": %d, \"max_rel_diff\": %.3g, "
               "\"b_repeats_bits\": %s, \"ok\": %s}\n",
               o.a, pa, o.b, pb, o.steps, (double)la[0], (double)la[o.steps - 1], (double)lb[o.steps - 1], max_first, o.strict,
               max_rel, same ? "true" : "false", ok ? "true" : "false");
    else
        printf("%s (%s) vs %s (%s), %s %s, %d steps: loss %.4f -> %.4f (%s) / %.4f (%s); max |diff| over the first %d steps "
               "%.3g (bound %.3g), max relative diff %.3g (bound %.3g); %s run twice: %s\n",
               o.a, pa, o.b, pb, o.size, o.moe == UPM_MOE_NONE ? "dense" : upm_moe_kind_name((upm_moe_kind)o.moe), o.steps, (double)la[0],
               (double)la[o.steps - 1], o.a, (double)lb[o.steps - 1], o.b, o.strict, max_first, o.tol, max_rel, o.rel,
               o.b, same ? "the same bits" : "DIFFERENT bits");
    free(d.proto), free(d.tids), free(d.tlens), free(d.a_img), free(d.a_txt), free(la);
    return ok ? 0 : 1;
}
