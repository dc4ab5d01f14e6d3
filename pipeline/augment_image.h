/* Image augmentation for training and evaluation, following Uni-Perceiver's torchvision/timm
 * transforms: RandomResizedCrop + flip, resize + random crop + flip, resize + center crop; then
 * ToTensor + ImageNet normalisation into a caller's float CHW buffer. All randomness from upm_rng.
 *
 * The crop is chosen in SOURCE pixel coordinates from the header size, before decoding, so a JPEG can
 * be decoded at a DCT scale just big enough for it:
 *     upm_aug_choose(&aug, info.w, info.h, rng, &box, err);      // all random draws happen here
 *     upm_aug_min_decode_size(&box, &req.min_w, &req.min_h);
 *     upm_image_decode(data, n, &req, &img, err);               // maybe 1/2, 1/4, 1/8 scale
 *     upm_aug_apply(&aug, &img, &box, out, err);
 * upm_aug_image_bytes does the four steps. At full scale the pixels are exactly what torchvision
 * produces on PIL images for the same crop (PIL's resampling in 8-bit fixed point, reproduced). */
#ifndef UPM_AUGMENT_IMAGE_H
#define UPM_AUGMENT_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "image.h"
#include "rng.h"

typedef enum upm_aug_mode {
    UPM_AUG_TRAIN_CLASSIFY, /* RandomResizedCrop(size, scale, ratio) + RandomHorizontalFlip */
    UPM_AUG_TRAIN_PAIR,     /* Resize(size) (shorter side) + RandomCrop(size) + RandomHorizontalFlip */
    UPM_AUG_EVAL,           /* Resize(floor(size / crop_pct)) (shorter side) + CenterCrop(size) */
} upm_aug_mode;

/* PIL's filters with their antialiasing support (widened by the downscale factor). */
typedef enum upm_resample {
    UPM_RESAMPLE_BICUBIC, /* PIL BICUBIC (a = -0.5): what Uni-Perceiver's transforms use */
    UPM_RESAMPLE_BILINEAR /* PIL BILINEAR: torchvision's default */
} upm_resample;

typedef struct upm_aug_image {
    upm_aug_mode mode;
    int size;                    /* output side: 160 in stage 1, 224 in stage 2 */
    upm_resample filter;
    double scale_min, scale_max; /* RandomResizedCrop area fraction: 0.08, 1.0 */
    double ratio_min, ratio_max; /* RandomResizedCrop w/h: 3/4, 4/3 */
    double flip_p;               /* horizontal flip probability (training): 0.5 */
    double crop_pct;             /* evaluation: 0.875 (resize to 182 for 160, 256 for 224) */
    float mean[3], std[3];       /* on [0,1] pixels: ImageNet's */
} upm_aug_image;

/* Uni-Perceiver's defaults for a mode and size (bicubic, as its timm and torchvision transforms). */
void upm_aug_image_init(upm_aug_image *a, upm_aug_mode mode, int size);

/* One sample's geometry: the source region [x0,x1)x[y0,y1) is resized onto full_w x full_h, and the
 * size x size window at (off_x, off_y) of that is the output, mirrored when flip is set. */
typedef struct upm_aug_box {
    int src_w, src_h;       /* the source size the box was chosen for */
    double x0, y0, x1, y1;  /* in source pixels */
    int full_w, full_h;     /* RandomResizedCrop: size x size; resize modes: the resized image */
    int off_x, off_y;
    int crop;               /* 1: only pixels inside the region are read (crop, then resize) */
    int flip;
} upm_aug_box;

/* Draws the box for a src_w x src_h image (torchvision's algorithms; rng may be NULL for EVAL).
 * UPM_EINVAL for a bad configuration or a missing rng, UPM_EBADDATA for a size < 1. */
int upm_aug_choose(const upm_aug_image *a, int src_w, int src_h, upm_rng *rng, upm_aug_box *box, upm_err *err);

/* The smallest decoded size whose image still holds the box at >= 1 decoded pixel per output pixel,
 * so resizing stays a (antialiased) downscale: pass it as upm_image_req.min_w/min_h. */
void upm_aug_min_decode_size(const upm_aug_box *box, int *min_w, int *min_h);

/* Resizes, crops, flips and normalises img per box into out[3][size][size] (channel-major floats).
 * img may be DCT-scaled (its scale_num/denom map the box); it must come from the box's source size. */
int upm_aug_apply(const upm_aug_image *a, const upm_image *img, const upm_aug_box *box, float *out, upm_err *err);

/* Probe, choose, decode (DCT-scaled where possible), apply. req (may be NULL) supplies limits and the
 * sample's name; its min_w/min_h are ignored. box_out (may be NULL) receives the geometry used. */
int upm_aug_image_bytes(const upm_aug_image *a, const void *data, size_t n, const upm_image_req *req, upm_rng *rng,
                        float *out, upm_aug_box *box_out, upm_err *err);

/* ---- resampling (PIL's ImagingResample, 8-bit fixed point, reproduced exactly) ---- */

/* One axis: source pixels [r0,r1) form the input (a crop); the span [in0,in1) (relative to r0) is
 * resized onto `full` pixels, of which [off, off+n) are produced. */
typedef struct upm_resample_axis {
    int r0, r1;
    double in0, in1;
    int full, off, n;
} upm_resample_axis;

/* src is w x h RGB8 (stride 3*w); dst receives ax.n x ay.n RGB8. UPM_EINVAL for an axis outside the
 * image, UPM_ENOMEM. */
int upm_resample_rgb8(const uint8_t *src, int w, int h, const upm_resample_axis *ax, const upm_resample_axis *ay,
                      upm_resample filter, uint8_t *dst, upm_err *err);

/* The whole image to out_w x out_h: PIL's img.resize((out_w, out_h), filter) for an RGB image. */
int upm_resize_rgb8(const uint8_t *src, int w, int h, uint8_t *dst, int out_w, int out_h, upm_resample filter,
                    upm_err *err);

#endif
