/* Unit test for sampler/collate.c on real data: a real JPEG, real captions and the real CLIP
 * vocabulary become batch rows for every formulation (label, caption with its query layout, pair,
 * MLM, a GLUE prompt), with the attribute bytes of paper Table 2, and unusable samples are refused; a real
 * video's evaluation views (crops x clips) are the crops and clips augment_video.h and video.h define. */
#include <stdlib.h>
#include <string.h>

#include "augment_video.h"
#include "bpe.h"
#include "check.h"
#include "collate.h"
#include "video.h"

/* A sample with up to three fields that borrow the given bytes. */
static upm_wds_sample sample(upm_wds_field *f, size_t n)
{
    upm_wds_sample s = {.key = "k0001", .url = "/shards/test-000000.tar", .index = 1, .n_fields = n, .fields = f};
    return s;
}

static upm_task task(const char *name, upm_formulation form, const char *spec, const char *target, upm_modality tm)
{
    upm_task t;
    memset(&t, 0, sizeof t);
    snprintf(t.name, sizeof t.name, "%s", name);
    t.formulation = form;
    t.causal = form == UPM_FORM_VOCAB_CAPTION;
    t.target_modality = tm;
    snprintf(t.target_field, sizeof t.target_field, "%s", target);
    for (const char *p = spec; *p;) { /* "jpg=image txt=text" */
        upm_task_input *in = &t.inputs[t.n_inputs++];
        const char *eq = strchr(p, '='), *end = strchr(p, ' ');
        snprintf(in->field, sizeof in->field, "%.*s", (int)(eq - p), p);
        in->modality = eq[1] == 'i' ? UPM_MOD_IMAGE : eq[1] == 'v' ? UPM_MOD_VIDEO : UPM_MOD_TEXT;
        p = end ? end + 1 : eq + strlen(eq);
    }
    t.max_text_len = 17;
    t.max_target_len = 9;
    return t;
}

static int fill(const upm_task *t, upm_collate_opts *o, upm_wds_sample *s, upm_batch *b, upm_err *err)
{
    upm_batch_shape sh;
    memset(b, 0, sizeof *b);
    if (upm_collate_shape(t, o, 2, &sh, err) || upm_batch_alloc(b, t, &sh, err))
        return -100;
    upm_rng rng = upm_rng_stream(1, UPM_RNG_AUGMENT, 0, 0, 0);
    return upm_collate_row(t, o, s, b, 1, &rng, err);
}

/* Evaluation views of a video label task: view v is crop v % 3 (0 centre, 1 and 2 the ends of the longer
 * side) of clip v / 3 (video.h's upm_video_eval_indices); other tasks and training have one view. */
static void test_video_views(const char *td)
{
    char path[4096];
    size_t nv = 0;
    snprintf(path, sizeof path, "%s/video/codecs/mp4.mp4", td); /* 560x320, 166 frames */
    unsigned char *mp4 = check_read_file(path, &nv);
    if (!mp4)
        return;
    upm_err err;
    upm_wds_field f[2] = {{"mp4", mp4, nv}, {"cls", (unsigned char *)"1", 1}};
    upm_wds_sample s = sample(f, 2);
    upm_task vt = task("kinetics", UPM_FORM_LABEL, "mp4=video", "cls", UPM_MOD_TEXT);
    upm_task it = task("cls", UPM_FORM_LABEL, "jpg=image", "cls", UPM_MOD_TEXT);
    upm_task vp = task("vpair", UPM_FORM_PAIR, "mp4=video", "txt", UPM_MOD_TEXT);
    upm_collate_opts o = {.train = 0, .image_size = 64, .frames = 4, .n_labels = 4, .video_crops = 3, .video_clips = 2};
    CHECK(upm_collate_views(&vt, &o) == 6 && upm_collate_views(&it, &o) == 1 && upm_collate_views(&vp, &o) == 1);
    o.train = 1;
    CHECK(upm_collate_views(&vt, &o) == 1);
    o.train = 0;
    size_t px = 4 * 3 * 64 * 64;
    float *rows[6] = {0};
    upm_batch b;
    for (int v = 0; v < 6; v++) {
        o.view = v;
        CHECK(fill(&vt, &o, &s, &b, &err) == 0 && b.labels[1] == 1);
        rows[v] = malloc(sizeof(float) * px);
        memcpy(rows[v], b.seg[0].pixels + px, sizeof(float) * px);
        upm_batch_free(&b);
        /* the same view made directly: the clip's frames, the crop */
        upm_video_aug aug = {.size = 64, .eval_crop = v % 3};
        upm_video_opts vo = {.max_short_side = upm_video_aug_decode_side(&aug)};
        upm_video_info info;
        int64_t idx[4];
        upm_video_frames fr = {0};
        float *want = malloc(sizeof(float) * px);
        CHECK(upm_video_probe(mp4, nv, &info, &err) == 0 && llabs(info.num_frames - 166) <= 2);
        CHECK(upm_video_eval_indices(info.num_frames, 4, v / 3, 2, idx, &err) == 0);
        /* 166 frames (as Debian 12's FFmpeg counts them): 4 segments of 41.5, offsets 1/4 and 3/4 of them */
        CHECK(info.num_frames != 166 || (idx[0] == (v / 3 == 0 ? 10 : 31) && idx[3] == (v / 3 == 0 ? 134 : 155)));
        CHECK(upm_video_decode_frames(mp4, nv, idx, 4, &vo, &fr, &err) == 0);
        CHECK(upm_video_augment(&fr, 0, &aug, NULL, want, NULL, &err) == 0);
        CHECK(memcmp(want, rows[v], sizeof(float) * px) == 0);
        upm_video_frames_free(&fr);
        free(want);
    }
    for (int v = 1; v < 6; v++) /* every view is a different input */
        for (int w = 0; w < v; w++)
            CHECK(memcmp(rows[v], rows[w], sizeof(float) * px) != 0);
    for (int v = 0; v < 6; v++)
        free(rows[v]);
    o.view = 6; /* beyond crops x clips */
    CHECK(fill(&vt, &o, &s, &b, &err) == UPM_EUSAGE);
    upm_batch_free(&b);
    o.view = 0, o.video_crops = 2;
    CHECK(fill(&vt, &o, &s, &b, &err) == UPM_EUSAGE && strstr(err.msg, "2 crops"));
    upm_batch_free(&b);
    free(mp4);
}

int main(void)
{
    const char *td = getenv("UPMOE_TESTDATA");
    if (!td) {
        fprintf(stderr, "test_collate: UPMOE_TESTDATA is not set (run tools/fetch-testdata)\n");
        return 1;
    }
    char path[4096];
    size_t njpg = 0;
    snprintf(path, sizeof path, "%s/images/art4apps/animals/koala.jpg", td);
    unsigned char *jpg = check_read_file(path, &njpg);
    snprintf(path, sizeof path, "%s/clip/bpe_simple_vocab_16e6.txt", td);
    upm_bpe *bpe = NULL;
    upm_err err;
    if (!jpg || upm_bpe_load(path, &bpe, &err)) {
        fprintf(stderr, "test_collate: test data missing: %s\n", path);
        return 1;
    }
    upm_collate_opts o = {.train = 1, .image_size = 64, .frames = 4, .video_interval = 32, .bpe = bpe, .n_labels = 12};
    char cap[] = "a picture of a koala";
    upm_wds_field f[3] = {{"jpg", jpg, njpg}, {"txt", (unsigned char *)cap, sizeof cap - 1}, {"cls", (unsigned char *)"3\n", 2}};
    upm_wds_sample s = sample(f, 3);
    upm_batch b;

    /* label: the class index, the pixels, the image attributes [1,0,0,1,1,0,0,1] */
    upm_task cls = task("cls", UPM_FORM_LABEL, "jpg=image", "cls", UPM_MOD_TEXT);
    CHECK(fill(&cls, &o, &s, &b, &err) == 0);
    CHECK(b.nseg == 1 && b.labels && b.labels[1] == 3 && b.labels[0] == -1);
    CHECK(b.seg[0].attrs[0] == 0x99);
    float mx = 0;
    for (int i = 0; i < 3 * 64 * 64; i++)
        mx = b.seg[0].pixels[3 * 64 * 64 + i] > mx ? b.seg[0].pixels[3 * 64 * 64 + i] : mx;
    CHECK(mx > 0.5f); /* row 1 holds a real, normalised image */
    upm_batch_free(&b);
    f[2].data = (unsigned char *)"12", f[2].size = 2; /* 12 classes: 0..11 */
    CHECK(fill(&cls, &o, &s, &b, &err) == UPM_EBADDATA && strstr(err.msg, "k0001") && strstr(err.msg, "test-000000.tar"));
    upm_batch_free(&b);
    f[2].data = (unsigned char *)"3", f[2].size = 1;

    /* augmentation: none trains on exactly the evaluation pixels; paper and light crop; light keeps at
     * least half the image and never mirrors; the choice applies to every image task */
    size_t npx = 3 * 64 * 64;
    float *eval_px = malloc(sizeof(float) * npx), *train_px = malloc(sizeof(float) * npx);
    o.train = 0;
    CHECK(fill(&cls, &o, &s, &b, &err) == 0);
    memcpy(eval_px, b.seg[0].pixels + npx, sizeof(float) * npx);
    upm_batch_free(&b);
    o.train = 1, o.augment = UPM_AUGMENT_NONE;
    CHECK(fill(&cls, &o, &s, &b, &err) == 0);
    CHECK(memcmp(eval_px, b.seg[0].pixels + npx, sizeof(float) * npx) == 0);
    upm_batch_free(&b);
    o.augment = UPM_AUGMENT_PAPER;
    CHECK(fill(&cls, &o, &s, &b, &err) == 0);
    memcpy(train_px, b.seg[0].pixels + npx, sizeof(float) * npx);
    CHECK(memcmp(eval_px, train_px, sizeof(float) * npx) != 0);
    upm_batch_free(&b);
    upm_aug_image a;
    upm_collate_image_aug(&o, &cls, UPM_SIDE_INPUT, &a);
    CHECK(a.mode == UPM_AUG_TRAIN_CLASSIFY && a.scale_min == 0.08 && a.flip_p == 0.5);
    o.augment = UPM_AUGMENT_INHERIT; /* a collate option left at zero is the paper's */
    upm_collate_image_aug(&o, &cls, UPM_SIDE_INPUT, &a);
    CHECK(a.mode == UPM_AUG_TRAIN_CLASSIFY && a.scale_min == 0.08 && a.flip_p == 0.5);
    o.augment = UPM_AUGMENT_LIGHT;
    upm_collate_image_aug(&o, &cls, UPM_SIDE_INPUT, &a);
    CHECK(a.mode == UPM_AUG_TRAIN_CLASSIFY && a.scale_min == 0.5 && a.scale_max == 1.0 && a.flip_p == 0);
    upm_task pr = task("pair", UPM_FORM_PAIR, "jpg=image", "txt", UPM_MOD_TEXT);
    upm_collate_image_aug(&o, &pr, UPM_SIDE_INPUT, &a);
    CHECK(a.mode == UPM_AUG_TRAIN_CLASSIFY && a.scale_min == 0.5 && a.flip_p == 0);
    o.augment = UPM_AUGMENT_NONE;
    upm_collate_image_aug(&o, &pr, UPM_SIDE_INPUT, &a);
    CHECK(a.mode == UPM_AUG_EVAL);
    o.augment = UPM_AUGMENT_PAPER;
    upm_collate_image_aug(&o, &pr, UPM_SIDE_INPUT, &a);
    CHECK(a.mode == UPM_AUG_TRAIN_PAIR);
    free(eval_px), free(train_px);

    /* caption: image, causal text, then the query segment; bits [1,1,0,1,...] */
    upm_task capt = task("cap", UPM_FORM_VOCAB_CAPTION, "jpg=image txt=text", "txt", UPM_MOD_TEXT);
    CHECK(fill(&capt, &o, &s, &b, &err) == 0);
    CHECK(b.nseg == 3 && b.seg[1].attn == UPM_ATTN_CAUSAL && b.seg[2].attn == UPM_ATTN_CAPTION_QUERY);
    int n = b.seg[1].lengths[1];
    CHECK(n == 6 && b.seg[1].ids[16 + n - 1] == UPM_BPE_EOT); /* "a picture of a koala" + EOT; L = 16 */
    CHECK(b.seg[2].lengths[1] == n && b.seg[2].ids[16] == UPM_BPE_GEN && b.seg[2].ids[16 + n - 1] == UPM_BPE_GEN);
    CHECK(b.seg[2].ids[16 + n] == 0);
    CHECK(b.seg[0].attrs[0] == 0x9b && b.seg[1].attrs[0] == 0xeb && b.seg[2].attrs[0] == 0xeb);
    upm_batch_free(&b);

    /* pair: the caption is the target segment, target attributes [1,0,0,1,0,1,0,0] */
    upm_task pair = task("pair", UPM_FORM_PAIR, "jpg=image", "txt", UPM_MOD_TEXT);
    CHECK(fill(&pair, &o, &s, &b, &err) == 0);
    CHECK(b.nseg == 2 && b.seg[1].side == UPM_SIDE_TARGET && b.seg[1].L == 8 && b.seg[1].lengths[1] == 6);
    CHECK(b.seg[1].attrs[0] == 0x29 && b.spe_attr[UPM_SIDE_TARGET] == 0x29);
    upm_batch_free(&b);

    /* a caption that is not UTF-8 is an unusable sample, named by its key */
    char bad_utf8[] = "a caf\xe9 \xff";
    f[1].data = (unsigned char *)bad_utf8, f[1].size = sizeof bad_utf8 - 1;
    CHECK(fill(&pair, &o, &s, &b, &err) == UPM_EBADDATA && strstr(err.msg, "k0001"));
    upm_batch_free(&b);

    /* truncation keeps end-of-text */
    char longtext[] = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen";
    f[1].data = (unsigned char *)longtext, f[1].size = sizeof longtext - 1;
    CHECK(fill(&pair, &o, &s, &b, &err) == 0);
    CHECK(b.seg[1].lengths[1] == 8 && b.seg[1].ids[8 + 7] == UPM_BPE_EOT);
    upm_batch_free(&b);

    /* MLM: some positions masked, their original ids kept as targets, EOT never masked */
    upm_task mlm = task("mlm", UPM_FORM_VOCAB_MLM, "txt=text", "txt", UPM_MOD_TEXT);
    CHECK(fill(&mlm, &o, &s, &b, &err) == 0);
    int masked = 0, changed = 0;
    for (int j = 0; j < 16; j++) {
        int32_t tgt = b.mlm_targets[16 + j], id = b.seg[0].ids[16 + j];
        masked += tgt >= 0;
        changed += tgt >= 0 && id != tgt;
        CHECK(!(tgt >= 0 && tgt == UPM_BPE_EOT));
    }
    CHECK(masked >= 1 && b.mlm_targets[0] == -1);
    (void)changed;
    upm_batch_free(&b);

    /* a GLUE-style prompt over JSON fields: both sentences, the answer slot, the label from the JSON */
    char json[] = "{\"sentence1\": \"the cat sat\", \"sentence2\": \"a cat is sitting\", \"label\": 1}";
    upm_wds_field g[1] = {{"json", (unsigned char *)json, sizeof json - 1}};
    upm_wds_sample gs = sample(g, 1);
    upm_task rte = task("rte", UPM_FORM_LABEL, "json:sentence1=text json:sentence2=text", "json:label", UPM_MOD_TEXT);
    snprintf(rte.prompt, sizeof rte.prompt, "{json:sentence1} ? <|endoftext|> it is <|spe|> , {json:sentence2} <|endoftext|>");
    o.n_labels = 2;
    CHECK(fill(&rte, &o, &gs, &b, &err) == 0);
    CHECK(b.nseg == 1 && b.labels[1] == 1);
    int spe = 0, eot = 0;
    for (int j = 0; j < b.seg[0].lengths[1]; j++) {
        spe += b.seg[0].ids[16 + j] == UPM_BPE_SPE;
        eot += b.seg[0].ids[16 + j] == UPM_BPE_EOT;
    }
    CHECK(spe == 1 && eot == 2);
    upm_batch_free(&b);
    g[0].data = (unsigned char *)"{\"sentence1\": \"x\"}", g[0].size = strlen("{\"sentence1\": \"x\"}");
    CHECK(fill(&rte, &o, &gs, &b, &err) == UPM_EBADDATA && strstr(err.msg, "sentence2"));
    upm_batch_free(&b);

    /* unusable images: text named .jpg, a truncated JPEG */
    f[0].data = (unsigned char *)"not an image", f[0].size = 12;
    CHECK(fill(&cls, &o, &s, &b, &err) == UPM_EBADDATA && strstr(err.msg, "k0001"));
    upm_batch_free(&b);
    f[0].data = jpg, f[0].size = njpg / 2;
    CHECK(fill(&cls, &o, &s, &b, &err) == UPM_EBADDATA);
    upm_batch_free(&b);

    test_video_views(td);
    upm_bpe_free(bpe);
    free(jpg);
    return CHECK_RESULT("test_collate");
}
