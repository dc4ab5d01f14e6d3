/* JPEG decoding through libjpeg's full API, for files TurboJPEG's header call refuses ("could not determine
 * subsampling type": unusual samplings such as 4x2 or 3x1 luma, which libjpeg and PIL decode). Same
 * library, same accurate integer IDCT and fancy upsampling as the TurboJPEG path, so pixels equal PIL's.
 * Internal to pipeline/image.c. */
#ifndef UPM_JPEG_FULL_H
#define UPM_JPEG_FULL_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* The image size and whether it is CMYK/YCCK (4 components). UPM_EBADDATA with libjpeg's message. */
int upm_jpeg_full_header(const uint8_t *p, size_t n, const char *name, int *w, int *h, int *cmyk, upm_err *err);
/* Decodes at scale num/denom (a DCT scaling factor) into *pix (malloc'ed: RGB, or CMYK when the file
 * is): *ow x *oh pixels. A file that ends early is UPM_EBADDATA ("truncated"), as more than 500 scans. */
int upm_jpeg_full_decode(const uint8_t *p, size_t n, int num, int denom, const char *name, uint8_t **pix, int *ow,
                         int *oh, upm_err *err);

#endif
