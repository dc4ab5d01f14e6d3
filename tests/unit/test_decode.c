/* Generation with the key/value cache (model/decode.h) against the full caption pass: at every step, every
 * beam's query feature equals the feature the ordinary encoder pass computes for the same image and the
 * same caption so far (image, causal text, queries; read at query t), through beam expansion and
 * reordering, for an attribute-MoE model, a dense one, and token- and context-routed ones (experts / topk
 * = 2 at the evaluation capacity factor 2: no token is dropped in either path; context routing's pools run
 * over caches of their own). Also: a step past the capacity and a prefix that
 * could see the caption are refused. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "decode.h"
#include "rng.h"

enum { NS = 2, BEAMS = 3, T = 6, IMG = 32, D = 32, VOCAB = 100, QUERY = 99, TEXT_ATTR = 0xe2, IMG_ATTR = 0x91 };

static float pixels[NS * 3 * IMG * IMG];
static uint8_t a_img[NS * BEAMS * (IMG / 16) * (IMG / 16)], a_txt[NS * BEAMS * T];

/* Features of query t for each of nseq sequences (sample s / group), caption so far hist[s][0..t). */
static int full_features(upm_model *m, upm_pass *p, int nseq, int group, int32_t hist[][T], int t, float *out)
{
    static float px[NS * BEAMS * 3 * IMG * IMG];
    int32_t ids[NS * BEAMS * T], q[NS * BEAMS * T], lt[NS * BEAMS], lq[NS * BEAMS], rs[NS * BEAMS], rp[NS * BEAMS];
    int L = t + 1, P = 1 + (IMG / 16) * (IMG / 16);
    size_t img = (size_t)3 * IMG * IMG;
    for (int s = 0; s < nseq; s++) {
        memcpy(px + s * img, pixels + (size_t)(s / group) * img, sizeof(float) * img);
        for (int j = 0; j < L; j++)
            ids[s * L + j] = j < t ? hist[s][j] : 0, q[s * L + j] = QUERY;
        lt[s] = t, lq[s] = t + 1, rs[s] = s, rp[s] = P + L + t;
    }
    upm_seq_input in = {.nseq = nseq, .spe_attr = IMG_ATTR, .nseg = 3, .nread = nseq, .read_seq = rs, .read_pos = rp};
    in.seg[0] = (upm_seq_segment){.kind = UPM_SEG_IMAGE, .T = 1, .H = IMG, .W = IMG, .pixels = px, .attrs = a_img};
    in.seg[1] = (upm_seq_segment){.kind = UPM_SEG_TEXT, .attn = UPM_SEG_CAUSAL, .L = L, .ids = ids, .lengths = lt,
                                  .attrs = a_txt};
    in.seg[2] = (upm_seq_segment){.kind = UPM_SEG_TEXT, .attn = UPM_SEG_QUERY, .L = L, .ids = q, .lengths = lq,
                                  .attrs = a_txt};
    upm_err err = {0};
    if (upm_pass_forward(m, p, &in, NULL, &err)) {
        printf("full pass: %s\n", err.msg);
        return -1;
    }
    m->be->download(m->be, out, upm_pass_features(p), sizeof(float) * (size_t)nseq * D);
    return 0;
}

static void run(upm_moe_kind moe, const char *what)
{
    upm_err err = {0};
    upm_backend *be = NULL;
    upm_model *m = NULL;
    upm_model_config cfg = {.dim = D, .heads = 2, .layers = 3, .mlp = 4 * D, .vocab = VOCAB, .max_text = 8,
                            .max_frames = 1, .moe = moe, .experts = 4, .topk = 2, .moe_sa = 1, .moe_ffn = 1,
                            .moe_every = 1, .layerscale_init = 1e-3f, .ln_eps = 1e-5f, .gate_noise = -1,
                            .capacity = 1, .eval_capacity = 2, .balance = 0.01f};
    CHECK(upm_backend_open(NULL, &(upm_backend_opts){.threads = 2}, &be, &err) == 0);
    CHECK(upm_model_new(&cfg, be, 5, &m, &err) == 0);
    if (!m)
        return;
    float *w = malloc(sizeof(float) * m->L.total);
    be->download(be, w, m->w, sizeof(float) * m->L.total);
    upm_rng r = upm_rng_stream(11, 2, 3, 4, 5);
    for (size_t i = 0; i < m->L.total; i++) /* LayerScale 1e-3 would hide the attention: give every path signal */
        w[i] += (float)(0.3 * upm_rng_normal(&r));
    be->upload(be, m->w, w, sizeof(float) * m->L.total);
    free(w);
    for (size_t i = 0; i < sizeof pixels / sizeof pixels[0]; i++)
        pixels[i] = (float)upm_rng_normal(&r);

    upm_decoder *dec = NULL;
    upm_decoder_opts o = {.samples = NS, .beams = BEAMS, .max_len = T, .text_attr = TEXT_ATTR, .query_id = QUERY};
    CHECK(upm_decoder_new(m, &o, &dec, &err) == 0);
    upm_seq_input pre = {.nseq = NS, .spe_attr = IMG_ATTR, .nseg = 1};
    pre.seg[0] = (upm_seq_segment){.kind = UPM_SEG_IMAGE, .T = 1, .H = IMG, .W = IMG, .pixels = pixels, .attrs = a_img};
    CHECK(dec && upm_decoder_start(dec, &pre, &err) == 0);
    upm_pass *p = upm_pass_new();
    int32_t hist[NS * BEAMS][T] = {{0}}, next[NS * BEAMS][T], prev[NS * BEAMS], parent[NS * BEAMS];
    float got[NS * BEAMS * D], want[NS * BEAMS * D];
    double worst = 0;
    int group = 1;
    for (int t = 0; dec && t < T; t++) {
        const float *f = NULL;
        int nseq = NS * group;
        CHECK(upm_decoder_position(dec) == t);
        CHECK(upm_decoder_step(dec, group, prev, &f, &err) == 0);
        if (!f)
            break;
        be->download(be, got, f, sizeof(float) * (size_t)nseq * D);
        CHECK(full_features(m, p, nseq, group, hist, t, want) == 0);
        for (int i = 0; i < nseq * D; i++)
            worst = fmax(worst, fabs((double)got[i] - want[i]));
        /* choose: expand to the beams after step 0, then a fixed shuffle within each sample */
        int nnew = NS * BEAMS;
        for (int s = 0; s < nnew; s++) {
            int sample = s / BEAMS, beam = s % BEAMS;
            parent[s] = group == 1 ? sample : sample * BEAMS + (beam + t) % BEAMS;
            memcpy(next[s], hist[parent[s]], sizeof next[s]);
            next[s][t] = prev[s] = 1 + (int32_t)upm_rng_below(&r, VOCAB - 2);
        }
        CHECK(upm_decoder_reorder(dec, parent, nnew, &err) == 0);
        memcpy(hist, next, sizeof hist);
        group = BEAMS;
    }
    printf("%s: cached steps vs full passes, %d steps x %d beams: max |feature diff| %.3g\n", what, T, BEAMS, worst);
    CHECK(worst <= 2e-5); /* unit vectors of 32 floats; the two paths sum attention in different orders */
    /* past the capacity */
    const float *f = NULL;
    CHECK(upm_decoder_step(dec, BEAMS, prev, &f, &err) == UPM_EINVAL && f == NULL);
    /* a prefix with causal text would let the cached keys depend on the caption */
    int32_t ids[NS * 2] = {1, 2, 3, 4}, lens[NS] = {2, 2};
    pre.nseg = 2;
    pre.seg[1] = (upm_seq_segment){.kind = UPM_SEG_TEXT, .attn = UPM_SEG_CAUSAL, .L = 2, .ids = ids, .lengths = lens,
                                   .attrs = a_txt};
    CHECK(upm_decoder_start(dec, &pre, &err) == UPM_EINVAL && strstr(err.msg, "full-attention"));
    upm_pass_free(m, p);
    upm_decoder_free(dec);
    upm_model_free(m);
    upm_backend_free(be);
}

int main(void)
{
    memset(a_img, IMG_ATTR, sizeof a_img);
    memset(a_txt, TEXT_ATTR, sizeof a_txt);
    run(UPM_MOE_ATTRIBUTE, "attribute MoE");
    run(UPM_MOE_NONE, "dense");
    run(UPM_MOE_TOKEN, "token routing");
    run(UPM_MOE_CONTEXT, "context routing");
    return CHECK_RESULT("test_decode");
}
