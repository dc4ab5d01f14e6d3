/* Decodes one still image held in memory into an owned RGB8 buffer (rows top to bottom, pixels R,G,B).
 * JPEG goes through TurboJPEG (optionally downscaled in the DCT domain), PNG/GIF/BMP/WebP/TIFF through
 * FFmpeg's decoders; header dimensions are checked against limits before any pixel buffer exists. */
#ifndef UPM_IMAGE_H
#define UPM_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef enum upm_image_format {
    UPM_IMAGE_UNKNOWN = 0,
    UPM_IMAGE_JPEG,
    UPM_IMAGE_PNG,
    UPM_IMAGE_GIF,
    UPM_IMAGE_BMP,
    UPM_IMAGE_WEBP,
    UPM_IMAGE_TIFF,
} upm_image_format;

/* Default limits: an 8192x8192 image (64 Mi pixels) and 32768 pixels on a side. */
#define UPM_IMAGE_MAX_PIXELS_DEFAULT (8192LL * 8192LL)
#define UPM_IMAGE_MAX_SIDE_DEFAULT 32768

/* What the caller wants from a decode. A zeroed struct (or NULL) means: full scale, default limits. */
typedef struct upm_image_req {
    /* The smallest output the caller can use. A JPEG is decoded at the smallest DCT scale 1/2, 1/4 or
     * 1/8 whose output is still >= min_w x min_h (each side rounded up, as libjpeg does); 0,0 = full. */
    int min_w, min_h;
    long long max_pixels; /* 0: UPM_IMAGE_MAX_PIXELS_DEFAULT; checked against the source's header size */
    int max_side;         /* 0: UPM_IMAGE_MAX_SIDE_DEFAULT */
    const char *name;     /* names the sample in error messages (a key or file name); NULL: "image" */
} upm_image_req;

typedef struct upm_image {
    int w, h;                     /* the decoded size: the source size, or smaller when DCT-scaled */
    uint8_t *rgb;                 /* w*h*3 bytes, owned; release with upm_image_free */
    int src_w, src_h;             /* the size the file's header declares */
    int scale_num, scale_denom;   /* decoded = source * num/denom, libjpeg's rounding up (1/1 if not scaled) */
    upm_image_format format;
} upm_image;

typedef struct upm_image_info {
    upm_image_format format;
    int w, h; /* from the header; 0,0 when the format's header does not say cheaply (TIFF) */
} upm_image_info;

/* The format from the magic bytes (UPM_IMAGE_UNKNOWN when none matches); never fails. */
upm_image_format upm_image_sniff(const void *data, size_t n);
const char *upm_image_format_name(upm_image_format f);

/* Reads the format and the header's dimensions without decoding pixels. Fails with UPM_EBADDATA for
 * empty, unrecognised or malformed data; does not apply the size limits (decode does). */
int upm_image_probe(const void *data, size_t n, const char *name, upm_image_info *info, upm_err *err);

/* Decodes data[0..n) into *out (zeroed first; on failure nothing is left to free). Every problem with
 * the bytes is UPM_EBADDATA with a message naming req->name: empty, unknown format, header over the
 * limits (refused before any pixel allocation), truncated or corrupt data. A JPEG that runs out of
 * data is refused ("truncated JPEG") even though libjpeg could return it padded with gray; other
 * libjpeg warnings (e.g. extraneous bytes before a marker) are accepted, as PIL accepts them.
 * Full-scale JPEG output is bit-identical to PIL's Image.open(...).convert("RGB") (same libjpeg-turbo
 * settings: ISLOW DCT, fancy upsampling; CMYK converted with PIL's formula, Adobe-inverted). EXIF
 * orientation is not applied (neither PIL's open nor torchvision's loaders apply it). */
int upm_image_decode(const void *data, size_t n, const upm_image_req *req, upm_image *out, upm_err *err);

void upm_image_free(upm_image *img);

#endif
