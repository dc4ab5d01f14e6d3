/* Video augmentation: decoded RGB frames of one clip -> the model's float tensor [T, 3, size, size].
 * Training follows Uni-Perceiver's TimeSformer recipe (short-side scale jitter, random crop,
 * horizontal flip, mean = std = 0.5), drawing from common/rng.h; evaluation resizes the short side
 * to size and crops (centre by default). One draw serves every frame of the clip. */
#ifndef UPM_AUGMENT_VIDEO_H
#define UPM_AUGMENT_VIDEO_H

#include "err.h"
#include "rng.h"
#include "video.h"

typedef struct upm_video_aug {
    int size;               /* output height = width; 0 = 224 */
    double scale_min;       /* training: shorter side resized to a uniform integer in */
    double scale_max;       /* [round(scale_min*size), round(scale_max*size)]; 0, 0 = 256/224, 320/224 */
    int no_flip;            /* training: 1 = never flip; otherwise the whole clip flips with p = 1/2 */
    int eval_crop;          /* evaluation: 0 = centre, 1 = left/top, 2 = right/bottom (the 3 spatial views) */
    float mean[3], std[3];  /* per channel, on [0, 1] pixels; all-zero std = mean 0.5, std 0.5 */
} upm_video_aug;

/* The geometry one clip gets: shorter side resized to short_side (giving resized_w x resized_h),
 * the size x size window at (crop_x, crop_y) of that, mirrored when flip. */
typedef struct upm_video_aug_params {
    int short_side, resized_w, resized_h, crop_x, crop_y, flip;
} upm_video_aug_params;

/* Draws (train) or computes (evaluation) the geometry for frames of in_w x in_h; rng is used only
 * when training: 4 draws (short side, crop y, crop x, flip). */
int upm_video_aug_params_get(int in_w, int in_h, int train, const upm_video_aug *opt, upm_rng *rng,
                             upm_video_aug_params *p, upm_err *err);

/* Applies p to every frame: bilinear resampling (half-pixel centres, as torch's
 * interpolate(align_corners=False)) of only the cropped window, then (x/255 - mean) / std, into
 * out[((t*3 + c)*size + y)*size + x] (T*3*size*size floats, caller's storage). Bilinear aliases
 * when it shrinks a lot: decode with max_short_side = upm_video_aug_decode_side(opt). */
int upm_video_aug_apply(const upm_video_frames *in, const upm_video_aug_params *p, const upm_video_aug *opt, float *out,
                        upm_err *err);

/* upm_video_aug_params_get + upm_video_aug_apply; chosen (may be NULL) receives the geometry. */
int upm_video_augment(const upm_video_frames *in, int train, const upm_video_aug *opt, upm_rng *rng, float *out,
                      upm_video_aug_params *chosen, upm_err *err);

/* The short side to decode at (upm_video_opts.max_short_side) so that training jitter never
 * enlarges by more than it must: ceil(scale_max * size). */
int upm_video_aug_decode_side(const upm_video_aug *opt);

#endif
