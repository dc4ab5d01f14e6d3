/* Unit test for pipeline/augment_video.c on frames of a real clip: the evaluation and training transforms' geometry,
 * and their values against an independent bilinear resample. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "augment_video.h"
#include "check.h"
#include "video.h"
#include "video_test_util.h"

/* ---- augmentation ---- */

static float ref_pixel(const upm_video_frames *f, int t, int c, const upm_video_aug_params *p, int y, int x, int S)
{
    int xr = p->crop_x + (p->flip ? S - 1 - x : x), yr = p->crop_y + y;
    double sx = fmax(0, (xr + 0.5) * f->width / p->resized_w - 0.5), sy = fmax(0, (yr + 0.5) * f->height / p->resized_h - 0.5);
    int x0 = (int)sx, y0 = (int)sy, x1 = x0 + 1 < f->width ? x0 + 1 : x0, y1 = y0 + 1 < f->height ? y0 + 1 : y0;
    double wx = sx - x0, wy = sy - y0;
#define PX(yy, xx) f->rgb[(((size_t)t * f->height + (yy)) * f->width + (xx)) * 3 + c]
    double v = (PX(y0, x0) * (1 - wx) + PX(y0, x1) * wx) * (1 - wy) + (PX(y1, x0) * (1 - wx) + PX(y1, x1) * wx) * wy;
#undef PX
    return (float)((v / 255.0 - 0.5) / 0.5);
}

/* Spot pixels of out against ref_pixel's independent bilinear; the largest difference. */
static double spot_diff(const upm_video_frames *f, const float *out, const upm_video_aug_params *p, int S)
{
    double maxdiff = 0;
    size_t plane = (size_t)S * S;
    for (int t = 0; t < f->T; t += 3)
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < S; y += 37)
                for (int x = 0; x < S; x += 23)
                    maxdiff = fmax(maxdiff, fabs(out[((size_t)t * 3 + c) * plane + (size_t)y * S + x] -
                                                  ref_pixel(f, t, c, p, y, x, S)));
    return maxdiff;
}

/* Evaluation: short side to 224, centre crop (or the two ends), every value in [-1, 1]. */
static void test_augment_eval(const upm_video_frames *in, float *out, size_t clip)
{
    const upm_video_frames f = *in;
    upm_err err;
    const int S = 224;
    for (size_t i = 0; i < clip + 16; i++)
        out[i] = NAN;
    upm_video_aug_params p;
    CHECK(upm_video_augment(&f, 0, NULL, NULL, out, &p, &err) == 0);
    CHECK(p.short_side == 224 && p.resized_w == 298 && p.resized_h == 224 && p.crop_x == 37 && p.crop_y == 0 && !p.flip);
    int nan = 0, outside = 0;
    float lo = 9, hi = -9;
    for (size_t i = 0; i < clip; i++) {
        nan += isnan(out[i]);
        outside += !(out[i] >= -1.0f && out[i] <= 1.0f);
        lo = out[i] < lo ? out[i] : lo;
        hi = out[i] > hi ? out[i] : hi;
    }
    CHECK(nan == 0 && outside == 0 && isnan(out[clip]) && isnan(out[clip + 15])); /* all written, none past */
    CHECK(lo < -0.5f && hi > 0.5f); /* a real office scene spans dark and bright */
    CHECK(spot_diff(&f, out, &p, S) < 1e-4);
    upm_video_aug left = {.eval_crop = 1}, right = {.eval_crop = 2};
    CHECK(upm_video_aug_params_get(320, 240, 0, &left, NULL, &p, &err) == 0 && p.crop_x == 0);
    CHECK(upm_video_aug_params_get(320, 240, 0, &right, NULL, &p, &err) == 0 && p.crop_x == 74);
    CHECK(upm_video_aug_params_get(240, 320, 0, &right, NULL, &p, &err) == 0 && p.crop_x == 0 && p.crop_y == 74);
    CHECK(upm_video_aug_decode_side(NULL) == 320);
    upm_video_aug unit = {.std = {1, 1, 1}}; /* mean 0, std 1: pixels map to [0, 1] */
    CHECK(upm_video_augment(&f, 0, &unit, NULL, out, NULL, &err) == 0);
    CHECK(fabsf(out[0] - ((ref_pixel(&f, 0, 0, &(upm_video_aug_params){224, 298, 224, 37, 0, 0}, 0, 0, S) + 1) / 2)) < 1e-4);
    upm_video_aug bad = {.scale_min = 0.5, .scale_max = 1};
    CHECK(upm_video_augment(&f, 0, &bad, NULL, out, NULL, &err) == UPM_EINVAL && err.msg[0]);
    CHECK(upm_video_augment(&f, 1, NULL, NULL, out, NULL, &err) == UPM_EINVAL);
}

/* Training: jitter and crop ranges, flip rate, one geometry per clip, determinism, the mirror. */
static void test_augment_train(const upm_video_frames *in, float *out, float *again, size_t clip)
{
    const upm_video_frames f = *in;
    upm_err err;
    const int S = 224;
    size_t plane = (size_t)S * S;
    upm_video_aug_params p;
    int flips = 0, smin = 1000, smax = 0;
    for (uint64_t seed = 0; seed < 400; seed++) {
        upm_rng r = upm_rng_stream(seed, UPM_RNG_AUGMENT, 0, 0, 0);
        CHECK(upm_video_aug_params_get(320, 240, 1, NULL, &r, &p, &err) == 0);
        CHECK(p.short_side >= 256 && p.short_side <= 320 && p.resized_h == p.short_side &&
              p.resized_w == (int)floor(320.0 / 240 * p.short_side));
        CHECK(p.crop_x >= 0 && p.crop_x + S <= p.resized_w && p.crop_y >= 0 && p.crop_y + S <= p.resized_h);
        flips += p.flip;
        smin = p.short_side < smin ? p.short_side : smin;
        smax = p.short_side > smax ? p.short_side : smax;
    }
    CHECK(flips > 150 && flips < 250 && smin <= 260 && smax >= 316);

    /* one geometry for the whole clip: each frame equals that frame augmented alone with the same draw */
    int64_t flip_seed = -1;
    for (uint64_t seed = 0; seed < 20; seed++) {
        upm_rng r = upm_rng_stream(seed, UPM_RNG_AUGMENT, 5, 0, 0), r1 = r, r2 = r;
        CHECK(upm_video_augment(&f, 1, NULL, &r, out, &p, &err) == 0);
        if (p.flip && flip_seed < 0)
            flip_seed = (int64_t)seed;
        CHECK(upm_video_augment(&f, 1, NULL, &r1, again, NULL, &err) == 0);
        CHECK(memcmp(out, again, clip * sizeof *out) == 0); /* determinism */
        int same = 1;
        float maxabs = 0;
        for (int t = 0; t < 8; t++) {
            upm_video_frames one = {1, f.width, f.height, f.rgb + (size_t)t * f.width * f.height * 3};
            upm_rng rt = r2;
            CHECK(upm_video_augment(&one, 1, NULL, &rt, again, NULL, &err) == 0);
            same &= memcmp(out + (size_t)t * 3 * plane, again, 3 * plane * sizeof *out) == 0;
        }
        for (size_t i = 0; i < clip; i++)
            maxabs = fabsf(out[i]) > maxabs ? fabsf(out[i]) : maxabs;
        CHECK(same && maxabs <= 1.0f);
    }
    /* the flip mirrors: a flipped clip is the unflipped one with every row reversed */
    CHECK(flip_seed >= 0);
    upm_rng r = upm_rng_stream((uint64_t)flip_seed, UPM_RNG_AUGMENT, 5, 0, 0);
    CHECK(upm_video_augment(&f, 1, NULL, &r, out, &p, &err) == 0 && p.flip);
    p.flip = 0;
    CHECK(upm_video_aug_apply(&f, &p, NULL, again, &err) == 0);
    int mirrored = 1;
    for (size_t row = 0; row < 8 * 3 * (size_t)S; row++)
        for (int x = 0; x < S; x++)
            mirrored &= out[row * S + x] == again[row * S + (S - 1 - x)];
    CHECK(mirrored);
    p.flip = 1;
    CHECK(spot_diff(&f, out, &p, S) < 1e-4); /* scale, crop and flip as an independent bilinear computes them */
}

static void test_augment(void)
{
    upm_err err;
    bytes b = slurp("video/realshort.mp4");
    const int64_t idx[8] = {0, 5, 10, 15, 20, 25, 30, 35};
    upm_video_frames f;
    CHECK(upm_video_decode_frames(b.p, b.n, idx, 8, NULL, &f, &err) == 0);
    CHECK(f.T == 8 && f.width == 320 && f.height == 240);
    size_t clip = 8 * 3 * (size_t)224 * 224;
    float *out = malloc((clip + 16) * sizeof *out), *again = malloc(clip * sizeof *again);
    if (f.rgb) {
        test_augment_eval(&f, out, clip);
        test_augment_train(&f, out, again, clip);
    }
    upm_video_frames_free(&f);
    free(out);
    free(again);
    free(b.p);
}

int main(void)
{
    testdata = getenv("UPMOE_TESTDATA");
    if (!testdata || !*testdata) {
        fprintf(stderr, "test_augment_video: UPMOE_TESTDATA is not set (run tools/fetch-testdata)\n");
        return 1;
    }
    test_augment();
    return CHECK_RESULT("test_augment_video");
}
