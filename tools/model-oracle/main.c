/* upmoe-model-oracle: runs one training step's forward and backward of a small model on random inputs
 * and writes everything (config, parameters, inputs, gate noise, drop-path factors, features, logits,
 * loss and every parameter gradient) to a safetensors file, which tests/model/ checks against an
 * independent PyTorch implementation of docs/model.md. Parameters are perturbed away from their
 * initial values so that every path (LayerScale, gates, norms) carries signal. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loss.h"
#include "model.h"
#include "rng.h"
#include "safetensors.h"
#include "stepfile.h"
#include "vocab.h"

#define PROG "upmoe-model-oracle"

typedef struct args {
    const char *formulation, *input, *moe, *text_attn, *out, *backend;
    int vocab_sampled, vocab_chunk;
    int moe_sa, moe_ffn, moe_every, dim, layers, heads, experts, topk, vocab, batch, image, text, classes;
    float drop_path;
    int gate_noise, gate_renorm;
    int task_slots, task_id; /* task routing / task-specific weights: the table and the passes' task */
    float capacity, balance; /* token routing */
    upm_moe_kind moe_kind;
    unsigned long long seed;
} args;

static const char usage[] =
    "usage: " PROG " --formulation label|pair|mlm|caption --input image|text|image+text|video\n"
    "       --moe none|attribute|modality|task|task-specific|token|context [--task-slots 3] [--task-id 2]\n"
    "       [--capacity-factor 1] [--balance-loss 0.01]   (token, context routing)\n"
    "       [--vocab-targets full|sampled:N] [--vocab-chunk N]   (mlm: text input; caption: image + text)\n"
    "       [--moe-sa 0|1] [--moe-ffn 0|1] [--moe-every N] [--dim 64] [--layers 2] [--heads 4] [--experts 4]\n"
    "       [--topk 2] [--vocab 512] [--batch 4] [--image 32] [--text 8] [--text-attn full|causal]\n"
    "       [--classes 5] [--drop-path P] [--gate-noise] [--gate-renorm 0|1] [--seed S] [--backend cpu|debug]\n"
    "       --out FILE.safetensors\n"
    "Writes one training step of a small model (forward, loss, backward) for the PyTorch oracle.\n";

/* Attribute bytes of paper Table 2 for the oracle's made-up tasks. */
static uint8_t attr(int in_visual, int in_text, int tgt_text, int tok_visual, int causal, int from_input)
{
    return (uint8_t)(in_visual | in_text << 1 | tgt_text << 3 | tok_visual << 4 | !tok_visual << 5 | causal << 6 |
                     from_input << 7);
}

static int parse(int argc, char **argv, args *a)
{
    *a = (args){.moe_sa = 1, .moe_ffn = 1, .moe_every = 1, .dim = 64, .layers = 2, .heads = 4, .experts = 4,
                .topk = 2, .vocab = 512, .batch = 4, .image = 32, .text = 8, .classes = 5, .seed = 1,
                .text_attn = "full", .vocab_chunk = 4096, .gate_renorm = 1, .task_slots = 3, .task_id = 2, .capacity = 1.0f,
                .balance = 1e-2f};
    enum { O_FORM = 256, O_INPUT, O_MOE, O_SA, O_FFN, O_EVERY, O_DIM, O_LAYERS, O_HEADS, O_EXPERTS, O_TOPK, O_VOCAB,
           O_BATCH, O_IMAGE, O_TEXT, O_TATTN, O_CLASSES, O_DROP, O_NOISE, O_SEED, O_OUT, O_VT, O_VC, O_RENORM, O_BACKEND, O_TSLOTS, O_TID, O_CAP, O_BAL };
    static const struct option opts[] = {
        {"formulation", 1, 0, O_FORM}, {"input", 1, 0, O_INPUT}, {"moe", 1, 0, O_MOE}, {"moe-sa", 1, 0, O_SA},
        {"moe-ffn", 1, 0, O_FFN}, {"moe-every", 1, 0, O_EVERY}, {"dim", 1, 0, O_DIM}, {"layers", 1, 0, O_LAYERS},
        {"heads", 1, 0, O_HEADS}, {"experts", 1, 0, O_EXPERTS}, {"topk", 1, 0, O_TOPK}, {"vocab", 1, 0, O_VOCAB},
        {"batch", 1, 0, O_BATCH}, {"image", 1, 0, O_IMAGE}, {"text", 1, 0, O_TEXT}, {"text-attn", 1, 0, O_TATTN},
        {"classes", 1, 0, O_CLASSES}, {"drop-path", 1, 0, O_DROP}, {"gate-noise", 0, 0, O_NOISE},
        {"seed", 1, 0, O_SEED}, {"out", 1, 0, O_OUT}, {"vocab-targets", 1, 0, O_VT}, {"vocab-chunk", 1, 0, O_VC}, {"gate-renorm", 1, 0, O_RENORM},
        {"backend", 1, 0, O_BACKEND}, {"task-slots", 1, 0, O_TSLOTS}, {"task-id", 1, 0, O_TID},
        {"capacity-factor", 1, 0, O_CAP}, {"balance-loss", 1, 0, O_BAL},
        {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_FORM: a->formulation = optarg; break;
        case O_INPUT: a->input = optarg; break;
        case O_MOE: a->moe = optarg; break;
        case O_SA: a->moe_sa = atoi(optarg); break;
        case O_FFN: a->moe_ffn = atoi(optarg); break;
        case O_EVERY: a->moe_every = atoi(optarg); break;
        case O_DIM: a->dim = atoi(optarg); break;
        case O_LAYERS: a->layers = atoi(optarg); break;
        case O_HEADS: a->heads = atoi(optarg); break;
        case O_EXPERTS: a->experts = atoi(optarg); break;
        case O_TOPK: a->topk = atoi(optarg); break;
        case O_VOCAB: a->vocab = atoi(optarg); break;
        case O_BATCH: a->batch = atoi(optarg); break;
        case O_IMAGE: a->image = atoi(optarg); break;
        case O_TEXT: a->text = atoi(optarg); break;
        case O_TATTN: a->text_attn = optarg; break;
        case O_CLASSES: a->classes = atoi(optarg); break;
        case O_DROP: a->drop_path = strtof(optarg, NULL); break;
        case O_NOISE: a->gate_noise = 1; break;
        case O_RENORM: a->gate_renorm = atoi(optarg) != 0; break;
        case O_SEED: a->seed = strtoull(optarg, NULL, 10); break;
        case O_OUT: a->out = optarg; break;
        case O_BACKEND: a->backend = optarg; break;
        case O_TSLOTS: a->task_slots = atoi(optarg); break;
        case O_TID: a->task_id = atoi(optarg); break;
        case O_CAP: a->capacity = strtof(optarg, NULL); break;
        case O_BAL: a->balance = strtof(optarg, NULL); break;
        case O_VT: {
            upm_err err;
            if (upm_vocab_targets_parse(optarg, &a->vocab_sampled, &err)) {
                fprintf(stderr, PROG ": error: %s\n", err.msg);
                return 2;
            }
            break;
        }
        case O_VC: a->vocab_chunk = atoi(optarg); break;
        case 'h': fputs(usage, stdout); return -1;
        default: fputs(usage, stderr); return 2;
        }
    }
    if (a->formulation && !strcmp(a->formulation, "mlm"))
        a->input = "text";
    if (a->formulation && !strcmp(a->formulation, "caption"))
        a->input = "image+text", a->text_attn = "causal";
    int ok = a->formulation && a->input && a->moe && a->out && optind == argc && a->vocab_chunk > 0 &&
             (!strcmp(a->formulation, "label") || !strcmp(a->formulation, "pair") ||
              !strcmp(a->formulation, "mlm") || !strcmp(a->formulation, "caption")) &&
             (!strcmp(a->input, "image") || !strcmp(a->input, "text") || !strcmp(a->input, "image+text") ||
              !strcmp(a->input, "video")) &&
             !upm_moe_kind_parse(a->moe, 1, &a->moe_kind, NULL) &&
             (!strcmp(a->text_attn, "full") || !strcmp(a->text_attn, "causal")) && a->batch > 0 && a->text > 1 &&
             a->classes > 0 && a->image >= 16 && a->image % 16 == 0;
    if (!ok) {
        fprintf(stderr, PROG ": error: bad or missing arguments\n%s", usage);
        return 2;
    }
    return 0;
}

/* Host data of one side: up to two segments. */
typedef struct side {
    upm_seq_input in;
    float *pixels;
    int32_t *ids, *lengths, *qids;
    uint8_t *attrs[2];
} side;

static void random_text(upm_rng *r, int n, int L, int vocab, int32_t *ids, int32_t *lengths)
{
    for (int b = 0; b < n; b++) {
        lengths[b] = 2 + (int)upm_rng_below(r, (uint64_t)(L - 1));
        for (int i = 0; i < L; i++)
            ids[(size_t)b * L + i] = i < lengths[b] ? 1 + (int32_t)upm_rng_below(r, (uint64_t)(vocab - 1)) : 0;
    }
}

static int make_input(const args *a, upm_rng *r, side *s)
{
    int B = a->batch, video = !strcmp(a->input, "video");
    int img = video || strstr(a->input, "image") != NULL, txt = strstr(a->input, "text") != NULL;
    int tgt_text = 1, causal = !strcmp(a->text_attn, "causal"), T = video ? 3 : 1;
    memset(s, 0, sizeof *s);
    s->in.nseq = B;
    int npatch = T * (a->image / 16) * (a->image / 16);
    if (img) {
        size_t npx = (size_t)B * T * 3 * a->image * a->image;
        s->pixels = malloc(sizeof(float) * npx);
        s->attrs[0] = malloc((size_t)B * npatch);
        if (!s->pixels || !s->attrs[0])
            return -1;
        for (size_t i = 0; i < npx; i++)
            s->pixels[i] = (float)upm_rng_normal(r);
        memset(s->attrs[0], attr(1, txt, tgt_text, 1, 0, 1), (size_t)B * npatch);
        s->in.seg[s->in.nseg++] = (upm_seq_segment){.kind = video ? UPM_SEG_VIDEO : UPM_SEG_IMAGE,
                                                    .attn = UPM_SEG_FULL, .T = T,
                                                    .H = a->image, .W = a->image, .pixels = s->pixels,
                                                    .attrs = s->attrs[0]};
    }
    if (txt) {
        s->ids = malloc(sizeof(int32_t) * (size_t)B * a->text);
        s->lengths = malloc(sizeof(int32_t) * (size_t)B);
        s->attrs[1] = malloc((size_t)B * a->text);
        if (!s->ids || !s->lengths || !s->attrs[1])
            return -1;
        random_text(r, B, a->text, a->vocab, s->ids, s->lengths);
        memset(s->attrs[1], attr(img, 1, tgt_text, 0, causal, 1), (size_t)B * a->text);
        s->in.seg[s->in.nseg++] = (upm_seq_segment){.kind = UPM_SEG_TEXT,
                                                    .attn = causal ? UPM_SEG_CAUSAL : UPM_SEG_FULL, .L = a->text,
                                                    .ids = s->ids, .lengths = s->lengths, .attrs = s->attrs[1]};
        if (!strcmp(a->formulation, "caption")) { /* the query layout: a <|gen|>-like token per position */
            if (!(s->qids = malloc(sizeof(int32_t) * (size_t)B * a->text)))
                return -1;
            for (int i = 0; i < B * a->text; i++)
                s->qids[i] = a->vocab - 1;
            s->in.seg[s->in.nseg++] = (upm_seq_segment){.kind = UPM_SEG_TEXT, .attn = UPM_SEG_QUERY, .L = a->text,
                                                        .ids = s->qids, .lengths = s->lengths, .attrs = s->attrs[1]};
        }
    }
    s->in.spe_attr = s->in.seg[0].attrs[0] & (uint8_t)~0x40; /* SPE takes its first field's attributes */
    return 0;
}

/* The target side: label texts (C rows) or paired captions (B rows), bidirectional target text. */
static int make_target(const args *a, upm_rng *r, int img_in, int txt_in, side *s)
{
    int n = !strcmp(a->formulation, "label") ? a->classes : a->batch, L = a->text;
    memset(s, 0, sizeof *s);
    s->ids = malloc(sizeof(int32_t) * (size_t)n * L);
    s->lengths = malloc(sizeof(int32_t) * (size_t)n);
    s->attrs[1] = malloc((size_t)n * L);
    if (!s->ids || !s->lengths || !s->attrs[1])
        return -1;
    random_text(r, n, L, a->vocab, s->ids, s->lengths);
    uint8_t t = (uint8_t)(img_in | txt_in << 1 | 1 << 3 | 1 << 5);
    memset(s->attrs[1], t, (size_t)n * L);
    s->in = (upm_seq_input){.nseq = n, .spe_attr = t, .nseg = 1};
    s->in.seg[0] = (upm_seq_segment){.kind = UPM_SEG_TEXT, .attn = UPM_SEG_FULL, .L = L, .ids = s->ids,
                                     .lengths = s->lengths, .attrs = s->attrs[1]};
    return 0;
}

static void free_side(side *s)
{
    free(s->pixels);
    free(s->ids);
    free(s->lengths);
    free(s->qids);
    free(s->attrs[0]);
    free(s->attrs[1]);
}

/* Gate noise (std from the config) and drop-path factors for one pass, from the counter RNG. */
static void make_tables(const upm_model *m, uint64_t seed, int pass, int nseq, int S, float **noise, float **keep)
{
    const upm_model_config *c = &m->cfg;
    /* per attribute byte; token routing: per (sequence, position) */
    size_t nn = (size_t)c->layers * UPM_NGATES * (upm_moe_token_routed(c->moe) ? (size_t)nseq * S : 256) * c->experts;
    upm_rng r = upm_rng_stream(seed, UPM_RNG_GATE_NOISE, (uint64_t)pass, 0, 0);
    *noise = malloc(sizeof(float) * nn);
    for (size_t i = 0; *noise && i < nn; i++)
        (*noise)[i] = (float)(upm_gate_noise_std(c) * upm_rng_normal(&r));
    r = upm_rng_stream(seed, UPM_RNG_DROP_PATH, (uint64_t)pass, 0, 0);
    *keep = malloc(sizeof(float) * (size_t)c->layers * 2 * nseq);
    if (*keep)
        upm_drop_path_keep(*keep, (size_t)c->layers * 2 * nseq, c->drop_path, &r);
}

/* Away from the initial values: at init LayerScale (1e-3) makes every feature nearly the same, and the
 * gradients of the head and temperature are then mostly cancellation, which fp32 cannot resolve to the
 * oracle's 1e-4. Noise of std 0.1 everywhere and LayerScale moved to about 0.5 make every path count. */
static void perturb(upm_model *m, uint64_t seed)
{
    size_t n = m->L.total;
    float *h = malloc(sizeof(float) * n);
    if (!h)
        return;
    m->be->download(m->be, h, m->w, sizeof(float) * n);
    upm_rng r = upm_rng_stream(seed, UPM_RNG_INIT, 7, 7, 7);
    for (int i = 0; i < m->L.n; i++) {
        if (i == m->L.logit_scale)
            continue;
        const char *nm = m->L.p[i].name, *dot = strrchr(nm, '.');
        float shift = dot && (!strcmp(dot, ".ls1") || !strcmp(dot, ".ls2")) ? 0.5f : 0.0f;
        for (size_t j = 0; j < m->L.p[i].numel; j++)
            h[m->L.p[i].offset + j] += shift + (float)(0.1 * upm_rng_normal(&r));
    }
    m->be->upload(m->be, m->w, h, sizeof(float) * n);
    free(h);
}

/* vocab formulations: read-outs (mlm: ~15% of each row's valid positions, at least one; caption: every
 * query position j < length, target = text token j) and their candidates. */
static int vocab_readouts(const args *a, upm_rng *r, const side *in, upm_vocab_batch *vb, upm_err *err)
{
    int B = a->batch, L = a->text, mlm = !strcmp(a->formulation, "mlm"), cap = B * L;
    memset(vb, 0, sizeof *vb);
    if (!(vb->read_seq = malloc(sizeof(int32_t) * (size_t)cap * 3)))
        return upm_errf(err, UPM_ENOMEM, "no memory");
    vb->read_pos = vb->read_seq + cap, vb->target_ids = vb->read_pos + cap;
    int text_off = mlm ? 1 : 1 + (a->image / 16) * (a->image / 16), query_off = text_off + L;
    for (int b = 0; b < B; b++) {
        int first = vb->M;
        for (int j = 0; j < in->lengths[b]; j++) {
            if (mlm && !(upm_rng_uniform(r) < 0.15 || (j == in->lengths[b] - 1 && vb->M == first)))
                continue;
            vb->read_seq[vb->M] = b;
            vb->read_pos[vb->M] = mlm ? text_off + j : query_off + j;
            vb->target_ids[vb->M++] = mlm ? 1 + (int32_t)upm_rng_below(r, (uint64_t)(a->vocab - 1))
                                          : in->ids[(size_t)b * L + j];
        }
    }
    return upm_vocab_candidates(vb, a->vocab, a->vocab_sampled, a->seed, 0, err);
}

static int run(const args *a)
{
    upm_err err = {0};
    int vocab = !strcmp(a->formulation, "mlm") || !strcmp(a->formulation, "caption");
    if (vocab && a->drop_path > 0) {
        fprintf(stderr, PROG ": error: the vocabulary pass draws its own drop path; use --drop-path 0 with %s\n",
                a->formulation);
        return 2;
    }
    upm_model_config cfg = {.dim = a->dim, .heads = a->heads, .layers = a->layers, .mlp = 4 * a->dim,
                            .vocab = a->vocab, .max_text = 2 * a->text, .max_frames = 8,
                            .moe = a->moe_kind,
                            .experts = a->experts, .topk = a->topk, .moe_sa = a->moe_sa, .moe_ffn = a->moe_ffn,
                            .moe_every = a->moe_every, .drop_path = a->drop_path, .layerscale_init = 1e-3f,
                            .ln_eps = 1e-5f, .gate_noise = -1.0f, .gate_renorm = a->gate_renorm,
                            .capacity = a->capacity, .eval_capacity = 2.0f, .balance = a->balance};
    int task = 0;
    if (upm_moe_needs_task(cfg.moe)) { /* every slot met in training; the passes are task --task-id's */
        cfg.task_slots = a->task_slots;
        for (int i = 0; i < a->task_slots && i < UPM_MAX_TASK_SLOTS; i++)
            snprintf(cfg.task_names[cfg.ntasks++], sizeof cfg.task_names[0], "task%d", i + 1);
        if (cfg.moe == UPM_MOE_TASK_SPECIFIC)
            cfg.experts = cfg.task_slots, cfg.topk = 1;
        task = a->task_id;
    }
    upm_backend *be = NULL;
    upm_model *m = NULL;
    upm_pass *pin = upm_pass_new(), *ptg = upm_pass_new();
    side in = {0}, tg = {0};
    upm_vocab_batch vb = {0};
    float *noise[2] = {0}, *keep[2] = {0}, *dU = NULL, *dV = NULL, *logits = NULL, *V = NULL, *colb = NULL;
    int32_t *labels = NULL, *dlabels = NULL;
    int rc = upm_backend_open(a->backend, NULL, &be, &err);
    if (!rc)
        rc = upm_model_new(&cfg, be, a->seed, &m, &err);
    if (rc) {
        fprintf(stderr, PROG ": error: %s\n", err.msg);
        upm_backend_free(be);
        return 1;
    }
    perturb(m, a->seed);
    upm_rng r = upm_rng_stream(a->seed, UPM_RNG_AUGMENT, 1, 2, 3);
    int img = strstr(a->input, "image") != NULL || !strcmp(a->input, "video"), txt = strstr(a->input, "text") != NULL;
    int label = !strcmp(a->formulation, "label"), B = a->batch, C = label ? a->classes : a->batch, D = a->dim, R = B;
    uint8_t vocab_attr = (uint8_t)(img | txt << 1 | 1 << 3 | 1 << 5); /* target-side text */
    if (make_input(a, &r, &in) || (!vocab && make_target(a, &r, img, txt, &tg))) {
        fprintf(stderr, PROG ": error: no memory\n");
        rc = 1;
        goto out;
    }
    if (vocab) {
        if ((rc = vocab_readouts(a, &r, &in, &vb, &err))) {
            fprintf(stderr, PROG ": error: %s\n", err.msg);
            rc = 1;
            goto out;
        }
        in.in.nread = vb.M, in.in.read_seq = vb.read_seq, in.in.read_pos = vb.read_pos;
        R = vb.M, C = vb.C;
    }
    in.in.task = tg.in.task = task;
    labels = malloc(sizeof(int32_t) * (size_t)R);
    for (int b = 0; labels && b < R; b++)
        labels[b] = vocab ? vb.target_idx[b] : (int32_t)upm_rng_below(&r, (uint64_t)C);
    make_tables(m, a->seed, 0, B, upm_seq_positions(&in.in), &noise[0], &keep[0]);
    make_tables(m, a->seed, 1, C, vocab ? 2 : upm_seq_positions(&tg.in), &noise[1], &keep[1]);
    upm_pass_opts oin = {1, a->gate_noise ? noise[0] : NULL, a->drop_path > 0 ? keep[0] : NULL, 0, 0};
    upm_pass_opts otg = {1, a->gate_noise ? noise[1] : NULL, a->drop_path > 0 ? keep[1] : NULL, 0, 0};
    dU = be->alloc(be, sizeof(float) * (size_t)R * D), dV = be->alloc(be, sizeof(float) * (size_t)C * D);
    logits = be->alloc(be, sizeof(float) * (size_t)R * C);
    V = be->alloc(be, sizeof(float) * (size_t)C * D), colb = be->alloc(be, sizeof(float) * (size_t)C);
    dlabels = be->alloc(be, sizeof(int32_t) * (size_t)R);
    if (!labels || !dU || !dV || !logits || !V || !colb || !dlabels || !noise[0] || !noise[1] || !keep[0] || !keep[1]) {
        fprintf(stderr, PROG ": error: no memory\n");
        rc = 1;
        goto out;
    }
    be->upload(be, dlabels, labels, sizeof(int32_t) * (size_t)R);
    if (vb.logq)
        be->upload(be, colb, vb.logq, sizeof(float) * (size_t)C);
    upm_vocab_encode_opts vo = {vocab_attr, vocab_attr, a->vocab_chunk, a->gate_noise ? noise[1] : NULL, 0.0f, a->seed, 0, task, 0};
    upm_loss_result res;
    if (vocab)
        rc = upm_pass_forward(m, pin, &in.in, &oin, &err) || upm_vocab_encode(m, ptg, vb.cand, C, &vo, V, NULL, &err) ||
             upm_loss_label(m, upm_pass_features(pin), R, V, C, dlabels, vb.logq ? colb : NULL, 1.0f, dU, dV, logits,
                            &err) ||
             upm_vocab_encode(m, ptg, vb.cand, C, &vo, V, dV, &err) || upm_pass_backward(m, pin, dU, &err);
    else
        rc = upm_pass_forward(m, pin, &in.in, &oin, &err) || upm_pass_forward(m, ptg, &tg.in, &otg, &err) ||
             (label ? upm_loss_label(m, upm_pass_features(pin), B, upm_pass_features(ptg), C, dlabels, NULL, 1.0f, dU,
                                     dV, logits, &err)
                    : upm_loss_pair(m, upm_pass_features(pin), upm_pass_features(ptg), B, 1.0f, dU, dV, logits, &err)) ||
             upm_pass_backward(m, ptg, dV, &err) || upm_pass_backward(m, pin, dU, &err);
    if (rc) {
        fprintf(stderr, PROG ": error: %s\n", err.msg);
        rc = 1;
        goto out;
    }
    res = upm_loss_read(m, !vocab && !label, vocab ? R : B);
    upm_stepfile *d = upm_stepfile_new();
    if (!d) {
        fprintf(stderr, PROG ": error: no memory\n");
        rc = 1;
        goto out;
    }
    upm_stepfile_put_params(d, m, 1);
    upm_stepfile_put_side(d, "input", &in.in);
    if (vocab) {
        upm_stepfile_put(d, "read.seq", UPM_ST_I32, vb.read_seq, 1, (int64_t[]){R});
        upm_stepfile_put(d, "read.pos", UPM_ST_I32, vb.read_pos, 1, (int64_t[]){R});
        upm_stepfile_put(d, "read.target", UPM_ST_I32, vb.target_idx, 1, (int64_t[]){R});
        upm_stepfile_put(d, "vocab.ids", UPM_ST_I32, vb.cand, 1, (int64_t[]){C});
        if (vb.logq)
            upm_stepfile_put(d, "vocab.logq", UPM_ST_F32, vb.logq, 1, (int64_t[]){C});
    } else {
        upm_stepfile_put_side(d, "target", &tg.in);
        upm_stepfile_put(d, "labels", UPM_ST_I32, labels, 1, (int64_t[]){B});
    }
    if (a->gate_noise || a->drop_path > 0) {
        upm_stepfile_put_tables(d, "input", m, a->gate_noise ? noise[0] : NULL, a->drop_path > 0 ? keep[0] : NULL, B,
                                upm_seq_positions(&in.in));
        upm_stepfile_put_tables(d, "target", m, a->gate_noise ? noise[1] : NULL, a->drop_path > 0 ? keep[1] : NULL, C,
                                vocab ? 2 : upm_seq_positions(&tg.in));
    }
    upm_stepfile_put(d, "out.loss", UPM_ST_F32, &res.loss, 1, (int64_t[]){1});
    if (upm_moe_token_routed(cfg.moe)) { /* the balance loss summed over the token gates, the dropped count */
        float st[UPM_NSTATS];
        upm_model_stats_read(m, st);
        upm_stepfile_put(d, "out.balance", UPM_ST_F32, st + UPM_STAT_BALANCE, 1, (int64_t[]){1});
        upm_stepfile_put(d, "out.dropped", UPM_ST_F32, st + UPM_STAT_DROPPED, 1, (int64_t[]){1});
    }
    upm_stepfile_put_backend(d, be, "out.logits", logits, 2, (int64_t[]){R, C});
    upm_stepfile_put_backend(d, be, "out.input_features", upm_pass_features(pin), 2, (int64_t[]){R, D});
    upm_stepfile_put_backend(d, be, "out.target_features", vocab ? V : upm_pass_features(ptg), 2, (int64_t[]){C, D});
    char config[1024], seg_in[1024], seg_tg[1024] = "[]", spe[64], vattr[64];
    snprintf(config, sizeof config,
             "{\"dim\": %d, \"heads\": %d, \"layers\": %d, \"mlp\": %d, \"vocab\": %d, \"max_text\": %d, "
             "\"max_frames\": %d, \"moe\": \"%s\", \"experts\": %d, \"topk\": %d, \"moe_sa\": %d, \"moe_ffn\": %d, "
             "\"moe_every\": %d, \"drop_path\": %g, \"layerscale_init\": %g, \"ln_eps\": %g, \"gate_noise\": %g, \"gate_renorm\": %d, "
             "\"task_slots\": %d, \"capacity\": %g, \"eval_capacity\": %g, \"balance\": %g}",
             cfg.dim, cfg.heads, cfg.layers, cfg.mlp, cfg.vocab, cfg.max_text, cfg.max_frames, a->moe, cfg.experts,
             cfg.topk, cfg.moe_sa, cfg.moe_ffn, cfg.moe_every, (double)cfg.drop_path, (double)cfg.layerscale_init,
             (double)cfg.ln_eps, (double)upm_gate_noise_std(&cfg), cfg.gate_renorm, cfg.task_slots,
             (double)cfg.capacity, (double)cfg.eval_capacity, (double)cfg.balance);
    char taskbuf[16];
    snprintf(taskbuf, sizeof taskbuf, "%d", task);
    char segs[2200];
    upm_stepfile_segments_json(&in.in, seg_in, sizeof seg_in);
    if (!vocab)
        upm_stepfile_segments_json(&tg.in, seg_tg, sizeof seg_tg);
    snprintf(segs, sizeof segs, "{\"input\": %s, \"target\": %s}", seg_in, seg_tg);
    snprintf(spe, sizeof spe, "[%d, %d]", in.in.spe_attr, vocab ? vocab_attr : tg.in.spe_attr);
    snprintf(vattr, sizeof vattr, "[%d, %d]", vocab_attr, vocab_attr);
    const char *form = !strcmp(a->formulation, "mlm") ? "vocab-mlm" : !strcmp(a->formulation, "caption") ? "vocab-caption"
                                                                                                          : a->formulation;
    const char *meta[] = {"config", config, "formulation", form, "segments", segs, "spe_attr", spe,
                          "loss_weight", "1", "label_smoothing", "0.1", "task_id", taskbuf,
                          vocab ? "vocab_attr" : NULL, vattr, NULL};
    if (upm_stepfile_write(d, a->out, meta, &err)) {
        fprintf(stderr, PROG ": error: %s\n", err.msg);
        rc = 1;
    } else
        printf("loss %.6f correct %.0f of %d; %d tensors written to %s\n", (double)res.loss, (double)res.correct, R,
               upm_stepfile_count(d), a->out);
    upm_stepfile_free(d);
out:
    free(labels);
    void *bufs[] = {dU, dV, logits, V, colb, dlabels};
    for (int i = 0; i < 6; i++)
        if (bufs[i])
            be->free(be, bufs[i]);
    for (int i = 0; i < 2; i++)
        free(noise[i]), free(keep[i]);
    upm_vocab_batch_free(&vb);
    free_side(&in);
    free_side(&tg);
    upm_pass_free(m, pin);
    upm_pass_free(m, ptg);
    upm_model_free(m);
    upm_backend_free(be);
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    args a;
    int rc = parse(argc, argv, &a);
    if (rc)
        return rc < 0 ? 0 : rc;
    return run(&a);
}
