/* Video augmentation: short-side scale jitter, crop and flip shared by all frames of a clip, fused
 * into one bilinear pass over the cropped window only, then normalisation to floats [T,3,S,S].
 * See augment_video.h; randomness comes only from the caller's upm_rng. */
#include "augment_video.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_SIZE 224

/* Options with defaults filled in; EINVAL for values that cannot work. */
static int resolve(const upm_video_aug *opt, upm_video_aug *o, upm_err *err)
{
    memset(o, 0, sizeof *o);
    if (opt)
        *o = *opt;
    if (o->size <= 0)
        o->size = DEFAULT_SIZE;
    if (o->scale_min <= 0 && o->scale_max <= 0) {
        o->scale_min = 256.0 / 224.0; /* Uni-Perceiver: int(256/224 * size) .. int(320/224 * size) */
        o->scale_max = 320.0 / 224.0;
    }
    if (o->scale_min < 1.0 || o->scale_max < o->scale_min)
        return upm_errf(err, UPM_EINVAL, "video augment: scale range [%g, %g] must satisfy 1 <= min <= max", o->scale_min,
                        o->scale_max);
    if (o->eval_crop < 0 || o->eval_crop > 2)
        return upm_errf(err, UPM_EINVAL, "video augment: eval_crop %d is not 0, 1 or 2", o->eval_crop);
    if (o->std[0] == 0 && o->std[1] == 0 && o->std[2] == 0)
        for (int c = 0; c < 3; c++)
            o->mean[c] = o->std[c] = 0.5f;
    for (int c = 0; c < 3; c++)
        if (!(o->std[c] > 0))
            return upm_errf(err, UPM_EINVAL, "video augment: std[%d] = %g must be positive", c, (double)o->std[c]);
    return 0;
}

/* Shorter side to L, the longer scaled by floor (TimeSformer's short-side scale). */
static void resized(int w, int h, int L, upm_video_aug_params *p)
{
    p->short_side = L;
    if (w <= h) {
        p->resized_w = L;
        p->resized_h = (int)floor((double)h / w * L);
    } else {
        p->resized_h = L;
        p->resized_w = (int)floor((double)w / h * L);
    }
}

int upm_video_aug_params_get(int in_w, int in_h, int train, const upm_video_aug *opt, upm_rng *rng,
                             upm_video_aug_params *p, upm_err *err)
{
    upm_video_aug o;
    int r = resolve(opt, &o, err);
    if (r < 0)
        return r;
    if (in_w <= 0 || in_h <= 0)
        return upm_errf(err, UPM_EINVAL, "video augment: frames of %dx%d", in_w, in_h);
    if (train && !rng)
        return upm_errf(err, UPM_EINVAL, "video augment: training needs a random stream");
    memset(p, 0, sizeof *p);
    int S = o.size;
    if (!train) {
        resized(in_w, in_h, S, p);
        int dx = p->resized_w - S, dy = p->resized_h - S;
        /* TimeSformer's uniform_crop: the centre rounds up; views 1 and 2 are the two ends of the
         * long side (the short side is exactly S, so only one of dx, dy is non-zero) */
        p->crop_x = o.eval_crop == 0 ? (dx + 1) / 2 : o.eval_crop == 1 ? 0 : dx;
        p->crop_y = o.eval_crop == 0 ? (dy + 1) / 2 : o.eval_crop == 1 ? 0 : dy;
        return 0;
    }
    int lo = (int)lround(o.scale_min * S), hi = (int)lround(o.scale_max * S);
    if (lo < S)
        lo = S;
    if (hi < lo)
        hi = lo;
    resized(in_w, in_h, lo + (int)upm_rng_below(rng, (uint64_t)(hi - lo + 1)), p);
    p->crop_y = (int)upm_rng_below(rng, (uint64_t)(p->resized_h - S + 1));
    p->crop_x = (int)upm_rng_below(rng, (uint64_t)(p->resized_w - S + 1));
    uint64_t coin = upm_rng_u64(rng); /* drawn even when unused, so no_flip keeps the other draws */
    p->flip = o.no_flip ? 0 : (int)(coin >> 63);
    return 0;
}

typedef struct tap {
    int i0, i1;
    float w1; /* weight of i1; i0 gets 1 - w1 */
} tap;

/* Source taps for n output positions starting at resized position off, resized length rn over a
 * source of length sn: half-pixel centres, clamped at the edges (align_corners = False). */
static void taps(tap *t, int n, int off, int rn, int sn, int mirror)
{
    double scale = (double)sn / rn;
    for (int i = 0; i < n; i++) {
        int pos = off + (mirror ? n - 1 - i : i);
        double s = (pos + 0.5) * scale - 0.5;
        if (s < 0)
            s = 0;
        int i0 = (int)s;
        if (i0 > sn - 1)
            i0 = sn - 1;
        t[i].i0 = i0;
        t[i].i1 = i0 + 1 < sn ? i0 + 1 : sn - 1;
        t[i].w1 = (float)(s - i0);
    }
}

int upm_video_aug_apply(const upm_video_frames *in, const upm_video_aug_params *p, const upm_video_aug *opt, float *out,
                        upm_err *err)
{
    upm_video_aug o;
    int r = resolve(opt, &o, err);
    if (r < 0)
        return r;
    int S = o.size, W = in->width, H = in->height;
    if (!in->rgb || in->T <= 0 || W <= 0 || H <= 0)
        return upm_errf(err, UPM_EINVAL, "video augment: no frames (T=%d, %dx%d)", in->T, W, H);
    if (p->crop_x < 0 || p->crop_y < 0 || p->crop_x + S > p->resized_w || p->crop_y + S > p->resized_h)
        return upm_errf(err, UPM_EINVAL, "video augment: crop %dx%d at (%d,%d) does not fit in %dx%d", S, S, p->crop_x,
                        p->crop_y, p->resized_w, p->resized_h);
    tap *tx = malloc((size_t)S * sizeof *tx), *ty = malloc((size_t)S * sizeof *ty);
    if (!tx || !ty) {
        free(tx);
        free(ty);
        return upm_errf(err, UPM_ENOMEM, "video augment: out of memory");
    }
    taps(tx, S, p->crop_x, p->resized_w, W, p->flip);
    taps(ty, S, p->crop_y, p->resized_h, H, 0);
    float scale[3], shift[3]; /* (v/255 - mean) / std = v * scale + shift, v clamped to [0, 255] */
    for (int c = 0; c < 3; c++) {
        scale[c] = 1.0f / (255.0f * o.std[c]);
        shift[c] = -o.mean[c] / o.std[c];
    }
    size_t plane = (size_t)S * S;
    for (int t = 0; t < in->T; t++) {
        const uint8_t *frame = in->rgb + (size_t)t * H * W * 3;
        float *dst = out + (size_t)t * 3 * plane;
        for (int y = 0; y < S; y++) {
            const uint8_t *r0 = frame + (size_t)ty[y].i0 * W * 3, *r1 = frame + (size_t)ty[y].i1 * W * 3;
            float wy = ty[y].w1;
            for (int x = 0; x < S; x++) {
                int a = tx[x].i0 * 3, b = tx[x].i1 * 3;
                float wx = tx[x].w1;
                for (int c = 0; c < 3; c++) {
                    float top = r0[a + c] + (r0[b + c] - r0[a + c]) * wx;
                    float bot = r1[a + c] + (r1[b + c] - r1[a + c]) * wx;
                    float v = top + (bot - top) * wy;
                    v = v < 0 ? 0 : v > 255 ? 255 : v;
                    dst[c * plane + (size_t)y * S + x] = v * scale[c] + shift[c];
                }
            }
        }
    }
    free(tx);
    free(ty);
    return 0;
}

int upm_video_augment(const upm_video_frames *in, int train, const upm_video_aug *opt, upm_rng *rng, float *out,
                      upm_video_aug_params *chosen, upm_err *err)
{
    upm_video_aug_params p;
    int r = upm_video_aug_params_get(in->width, in->height, train, opt, rng, &p, err);
    if (r == 0)
        r = upm_video_aug_apply(in, &p, opt, out, err);
    if (r == 0 && chosen)
        *chosen = p;
    return r;
}

int upm_video_aug_decode_side(const upm_video_aug *opt)
{
    upm_video_aug o;
    if (resolve(opt, &o, NULL) < 0)
        return 0;
    return (int)ceil(o.scale_max * o.size - 1e-9);
}
