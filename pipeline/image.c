/* Still-image decoding from memory: JPEG through TurboJPEG (DCT-domain downscaling on request; libjpeg's
 * full API for the samplings TurboJPEG refuses), other formats through FFmpeg's decoders with a libswscale
 * conversion to RGB24. Sizes are checked from the
 * header before pixels are allocated; every problem with the bytes is reported as UPM_EBADDATA. */
#include "image.h"

#include <errno.h>
#include <libavcodec/avcodec.h>
#include <libavutil/imgutils.h>
#include <libswscale/swscale.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include "jpeg_full.h"

static const char *name_of(const upm_image_req *req) { return req && req->name ? req->name : "image"; }

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static uint32_t le16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t le24(const uint8_t *p) { return le16(p) | (uint32_t)p[2] << 16; }
static uint32_t le32(const uint8_t *p) { return le24(p) | (uint32_t)p[3] << 24; }

upm_image_format upm_image_sniff(const void *data, size_t n)
{
    const uint8_t *p = data;
    if (!p || n < 4)
        return UPM_IMAGE_UNKNOWN;
    if (p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF)
        return UPM_IMAGE_JPEG;
    if (n >= 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0)
        return UPM_IMAGE_PNG;
    if (n >= 6 && (memcmp(p, "GIF87a", 6) == 0 || memcmp(p, "GIF89a", 6) == 0))
        return UPM_IMAGE_GIF;
    if (n >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0)
        return UPM_IMAGE_WEBP;
    if (memcmp(p, "II*\0", 4) == 0 || memcmp(p, "MM\0*", 4) == 0)
        return UPM_IMAGE_TIFF;
    /* "BM" alone is too weak (text can start with it): also require a known DIB header size. */
    if (n >= 18 && p[0] == 'B' && p[1] == 'M') {
        uint32_t dib = le32(p + 14);
        if (dib == 12 || dib == 40 || dib == 52 || dib == 56 || dib == 64 || dib == 108 || dib == 124)
            return UPM_IMAGE_BMP;
    }
    return UPM_IMAGE_UNKNOWN;
}

const char *upm_image_format_name(upm_image_format f)
{
    switch (f) {
    case UPM_IMAGE_JPEG: return "JPEG";
    case UPM_IMAGE_PNG: return "PNG";
    case UPM_IMAGE_GIF: return "GIF";
    case UPM_IMAGE_BMP: return "BMP";
    case UPM_IMAGE_WEBP: return "WebP";
    case UPM_IMAGE_TIFF: return "TIFF";
    default: return "unknown";
    }
}

/* Width and height from the non-JPEG headers (fixed offsets, see each format's spec). 0 = malformed. */
static int header_size(upm_image_format f, const uint8_t *p, size_t n, int *w, int *h)
{
    long long ww = 0, hh = 0;
    if (f == UPM_IMAGE_PNG && n >= 24 && memcmp(p + 12, "IHDR", 4) == 0) {
        ww = be32(p + 16), hh = be32(p + 20);
    } else if (f == UPM_IMAGE_GIF && n >= 10) {
        ww = le16(p + 6), hh = le16(p + 8);
    } else if (f == UPM_IMAGE_BMP && n >= 26) {
        if (le32(p + 14) == 12)
            ww = le16(p + 18), hh = le16(p + 20);
        else
            ww = (int32_t)le32(p + 18), hh = (int32_t)le32(p + 22);
        hh = hh < 0 ? -hh : hh; /* negative height: rows stored top-down */
    } else if (f == UPM_IMAGE_WEBP && n >= 30) {
        if (memcmp(p + 12, "VP8 ", 4) == 0 && p[23] == 0x9d && p[24] == 0x01 && p[25] == 0x2a)
            ww = le16(p + 26) & 0x3fff, hh = le16(p + 28) & 0x3fff;
        else if (memcmp(p + 12, "VP8L", 4) == 0 && p[20] == 0x2f)
            ww = (le32(p + 21) & 0x3fff) + 1, hh = ((le32(p + 21) >> 14) & 0x3fff) + 1;
        else if (memcmp(p + 12, "VP8X", 4) == 0)
            ww = (long long)le24(p + 24) + 1, hh = (long long)le24(p + 27) + 1;
    } else if (f == UPM_IMAGE_TIFF) {
        *w = *h = 0; /* the size sits in an IFD anywhere in the file: left to the decoder's guard */
        return 1;
    }
    if (ww <= 0 || hh <= 0 || ww > INT32_MAX || hh > INT32_MAX)
        return 0;
    *w = (int)ww, *h = (int)hh;
    return 1;
}

static int jpeg_header(tjhandle tj, const uint8_t *p, size_t n, const char *nm, int *w, int *h, int *cs, upm_err *err)
{
    int sub = -1;
    *w = *h = 0, *cs = -1; /* a tables-only stream returns success and leaves them unset */
    if (tjDecompressHeader3(tj, p, (unsigned long)n, w, h, &sub, cs) != 0)
        return upm_errf(err, UPM_EBADDATA, "%s: bad JPEG header: %s", nm, tjGetErrorStr2(tj));
    if (*w < 1 || *h < 1)
        return upm_errf(err, UPM_EBADDATA, "%s: truncated JPEG: no frame header in its %zu bytes", nm, n);
    return 0;
}

/* TurboJPEG 2.1's header call refuses samplings its planar API cannot name (4x2 or 3x1 luma, ...), which
 * libjpeg itself decodes: those files go through libjpeg's full API instead (jpeg_full.h). */
static int sampling_refused(tjhandle tj) { return strstr(tjGetErrorStr2(tj), "subsampling type") != NULL; }

static int bad_format(const uint8_t *p, size_t n, const char *nm, upm_err *err)
{
    if (n == 0)
        return upm_errf(err, UPM_EBADDATA, "%s: empty image data (0 bytes)", nm);
    char hex[16] = "";
    for (size_t i = 0, k = 0; i < n && i < 4; i++)
        k += (size_t)snprintf(hex + k, sizeof hex - k, "%s%02x", i ? " " : "", p[i]);
    return upm_errf(err, UPM_EBADDATA, "%s: not a known image format (%zu bytes starting %s)", nm, n, hex);
}

int upm_image_probe(const void *data, size_t n, const char *name, upm_image_info *info, upm_err *err)
{
    const char *nm = name ? name : "image";
    memset(info, 0, sizeof *info);
    info->format = upm_image_sniff(data, n);
    if (info->format == UPM_IMAGE_UNKNOWN)
        return bad_format(data, n, nm, err);
    if (info->format == UPM_IMAGE_JPEG) {
        tjhandle tj = tjInitDecompress();
        if (!tj)
            return upm_errf(err, UPM_ENOMEM, "%s: cannot start TurboJPEG: %s", nm, tjGetErrorStr2(NULL));
        int cs, rc = jpeg_header(tj, data, n, nm, &info->w, &info->h, &cs, err);
        if (rc && sampling_refused(tj))
            rc = upm_jpeg_full_header(data, n, nm, &info->w, &info->h, &cs, err);
        tjDestroy(tj);
        return rc;
    }
    if (!header_size(info->format, data, n, &info->w, &info->h))
        return upm_errf(err, UPM_EBADDATA, "%s: malformed %s header (%zu bytes)", nm,
                        upm_image_format_name(info->format), n);
    return 0;
}

static int check_limits(const upm_image_req *req, int w, int h, const char *nm, upm_err *err)
{
    long long maxp = req && req->max_pixels > 0 ? req->max_pixels : UPM_IMAGE_MAX_PIXELS_DEFAULT;
    int maxs = req && req->max_side > 0 ? req->max_side : UPM_IMAGE_MAX_SIDE_DEFAULT;
    if (w <= 0 || h <= 0)
        return upm_errf(err, UPM_EBADDATA, "%s: image has no pixels (%dx%d)", nm, w, h);
    if ((long long)w * h > maxp || w > maxs || h > maxs)
        return upm_errf(err, UPM_EBADDATA, "%s: image %dx%d exceeds the limit of %lld pixels and %d per side", nm, w,
                        h, maxp, maxs);
    return 0;
}

/* The DCT scale for the requested minimum: 1/8, 1/4 or 1/2, the smallest that still covers it. Only
 * these (not 3/8, 5/8, ...) because libjpeg-turbo has SIMD IDCTs for them and PIL's draft() uses the
 * same set, so a scaled decode can be compared with PIL's bit for bit. */
static int jpeg_denom(int w, int h, int min_w, int min_h)
{
    if (min_w <= 0 && min_h <= 0)
        return 1;
    for (int d = 8; d >= 2; d /= 2)
        if ((w + d - 1) / d >= min_w && (h + d - 1) / d >= min_h)
            return d;
    return 1;
}

/* TurboJPEG picks its factor itself (the largest whose output fits the size asked for): find the one
 * it will use, so the caller learns the true scale even for tiny images where factors collide. */
static tjscalingfactor tj_factor(int w, int h, int tw, int th)
{
    int nsf = 0;
    tjscalingfactor *sf = tjGetScalingFactors(&nsf), one = {1, 1};
    for (int i = 0; sf && i < nsf; i++)
        if (TJSCALED(w, sf[i]) <= tw && TJSCALED(h, sf[i]) <= th)
            return sf[i];
    return one;
}

/* PIL's CMYK -> RGB (Convert.c cmyk2rgb) applied to libjpeg's raw CMYK, which PIL unpacks as
 * "CMYK;I": Adobe's inverted polarity, assumed for every 4-component JPEG. */
static void cmyk_to_rgb(const uint8_t *in, uint8_t *out, size_t npix)
{
    for (size_t i = 0; i < npix; i++, in += 4, out += 3) {
        int nk = in[3]; /* 255 - k where k = 255 - stored */
        for (int c = 0; c < 3; c++) {
            int t = (255 - in[c]) * nk + 128;
            int v = nk - (((t >> 8) + t) >> 8);
            out[c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
}

/* Only the warnings libjpeg gives when the data runs out mean "truncated" (JWRN_JPEG_EOF and
 * JWRN_HIT_MARKER); the rest (extraneous bytes, ...) describe a decodable file. */
static int is_truncation(const char *msg) { return strstr(msg, "Premature end") || strstr(msg, "premature end"); }

/* The decoded pixels as the result: CMYK converted as PIL does, the scale recorded. Takes buf. */
static int jpeg_result(uint8_t *buf, int cmyk, int sw, int sh, int w, int h, tjscalingfactor got, const char *nm,
                       upm_image *out, upm_err *err)
{
    if (cmyk) {
        size_t npix = (size_t)sw * sh;
        uint8_t *rgb = malloc(npix * 3);
        if (!rgb) {
            free(buf);
            return upm_errf(err, UPM_ENOMEM, "%s: no memory for a %dx%d image", nm, sw, sh);
        }
        cmyk_to_rgb(buf, rgb, npix);
        free(buf);
        buf = rgb;
    }
    *out = (upm_image){.w = sw, .h = sh, .rgb = buf, .src_w = w, .src_h = h, .scale_num = got.num,
                       .scale_denom = got.denom, .format = UPM_IMAGE_JPEG};
    return 0;
}

/* The fallback for samplings TurboJPEG refuses: the same scale choice, libjpeg's full API. */
static int decode_jpeg_full(const uint8_t *p, size_t n, const upm_image_req *req, upm_image *out, upm_err *err)
{
    const char *nm = name_of(req);
    int w, h, cmyk, sw, sh, rc = upm_jpeg_full_header(p, n, nm, &w, &h, &cmyk, err);
    if (!rc)
        rc = check_limits(req, w, h, nm, err);
    if (rc)
        return rc;
    int d = jpeg_denom(w, h, req ? req->min_w : 0, req ? req->min_h : 0);
    tjscalingfactor want = {1, d};
    tjscalingfactor got = tj_factor(w, h, TJSCALED(w, want), TJSCALED(h, want));
    uint8_t *buf;
    if ((rc = upm_jpeg_full_decode(p, n, got.num, got.denom, nm, &buf, &sw, &sh, err)))
        return rc;
    return jpeg_result(buf, cmyk, sw, sh, w, h, got, nm, out, err);
}

static int decode_jpeg(const uint8_t *p, size_t n, const upm_image_req *req, upm_image *out, upm_err *err)
{
    const char *nm = name_of(req);
    tjhandle tj = tjInitDecompress();
    if (!tj)
        return upm_errf(err, UPM_ENOMEM, "%s: cannot start TurboJPEG: %s", nm, tjGetErrorStr2(NULL));
    int w, h, cs, rc = jpeg_header(tj, p, n, nm, &w, &h, &cs, err);
    if (rc && sampling_refused(tj)) {
        tjDestroy(tj);
        return decode_jpeg_full(p, n, req, out, err);
    }
    if (rc == 0)
        rc = check_limits(req, w, h, nm, err);
    if (rc) {
        tjDestroy(tj);
        return rc;
    }
    int d = jpeg_denom(w, h, req ? req->min_w : 0, req ? req->min_h : 0);
    tjscalingfactor want = {1, d};
    int sw = TJSCALED(w, want), sh = TJSCALED(h, want);
    tjscalingfactor got = tj_factor(w, h, sw, sh);
    sw = TJSCALED(w, got), sh = TJSCALED(h, got);
    int cmyk = cs == TJCS_CMYK || cs == TJCS_YCCK;
    size_t npix = (size_t)sw * sh;
    uint8_t *buf = malloc(npix * (cmyk ? 4 : 3));
    if (!buf) {
        tjDestroy(tj);
        return upm_errf(err, UPM_ENOMEM, "%s: no memory for a %dx%d image", nm, sw, sh);
    }
    /* No FASTDCT/FASTUPSAMPLE: the accurate integer DCT and fancy upsampling PIL's decoder uses.
     * LIMITSCANS refuses progressive files with absurd scan counts (a known CPU-exhaustion attack). */
    if (tjDecompress2(tj, p, (unsigned long)n, buf, sw, 0, sh, cmyk ? TJPF_CMYK : TJPF_RGB, TJFLAG_LIMITSCANS) != 0) {
        const char *msg = tjGetErrorStr2(tj);
        if (tjGetErrorCode(tj) == TJERR_FATAL || is_truncation(msg)) {
            rc = upm_errf(err, UPM_EBADDATA, "%s: %s JPEG (%dx%d, %zu bytes): %s", nm,
                          is_truncation(msg) ? "truncated" : "corrupt or unsupported", w, h, n, msg);
            free(buf);
            tjDestroy(tj);
            return rc;
        }
    }
    tjDestroy(tj);
    return jpeg_result(buf, cmyk, sw, sh, w, h, got, nm, out, err);
}

/* ---- FFmpeg path ---- */

typedef struct ff_guard {
    const upm_image_req *req;
    int refused_w, refused_h;
} ff_guard;

/* Called by the decoder with the frame's size set, before it allocates pixels: the last line of the
 * size check for formats whose header we do not parse (TIFF) or whose frames differ from it. */
static int guarded_get_buffer(AVCodecContext *ctx, AVFrame *f, int flags)
{
    ff_guard *g = ctx->opaque;
    if (check_limits(g->req, f->width, f->height, "", NULL) != 0) {
        g->refused_w = f->width, g->refused_h = f->height;
        return AVERROR(ERANGE);
    }
    return avcodec_default_get_buffer2(ctx, f, flags);
}

static enum AVCodecID codec_of(upm_image_format f)
{
    switch (f) {
    case UPM_IMAGE_PNG: return AV_CODEC_ID_PNG;
    case UPM_IMAGE_GIF: return AV_CODEC_ID_GIF;
    case UPM_IMAGE_BMP: return AV_CODEC_ID_BMP;
    case UPM_IMAGE_WEBP: return AV_CODEC_ID_WEBP;
    case UPM_IMAGE_TIFF: return AV_CODEC_ID_TIFF;
    default: return AV_CODEC_ID_NONE;
    }
}

static int av_fail(const char *nm, const char *fmt, int averr, const char *what, upm_err *err)
{
    char buf[AV_ERROR_MAX_STRING_SIZE] = "";
    av_strerror(averr, buf, sizeof buf);
    return upm_errf(err, UPM_EBADDATA, "%s: corrupt or truncated %s data (%s): %s", nm, fmt, what, buf);
}

/* One frame out of a whole-file packet: send it, flush, receive. */
static int ff_decode_frame(AVCodecContext *ctx, const uint8_t *p, size_t n, AVFrame *frame)
{
    AVPacket *pkt = av_packet_alloc();
    if (!pkt || n > INT32_MAX - AV_INPUT_BUFFER_PADDING_SIZE || av_new_packet(pkt, (int)n) < 0) {
        av_packet_free(&pkt);
        return AVERROR(ENOMEM);
    }
    memcpy(pkt->data, p, n); /* the decoders read past the end: av_new_packet pads with zeros */
    int rc = avcodec_send_packet(ctx, pkt);
    av_packet_free(&pkt);
    if (rc < 0)
        return rc;
    rc = avcodec_receive_frame(ctx, frame);
    if (rc == AVERROR(EAGAIN)) {
        avcodec_send_packet(ctx, NULL);
        rc = avcodec_receive_frame(ctx, frame);
    }
    return rc == AVERROR_EOF ? AVERROR_INVALIDDATA : rc;
}

/* Any decoded pixel format to packed RGB24; alpha is dropped, as PIL's convert("RGB") drops it. */
static int frame_to_rgb(const AVFrame *f, uint8_t *rgb)
{
    struct SwsContext *sws = sws_getContext(f->width, f->height, f->format, f->width, f->height, AV_PIX_FMT_RGB24,
                                            SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT, NULL, NULL, NULL);
    if (!sws)
        return AVERROR(EINVAL);
    int *inv, *tab, src_range, dst_range, bri, con, sat;
    if (sws_getColorspaceDetails(sws, &inv, &src_range, &tab, &dst_range, &bri, &con, &sat) >= 0) {
        if (f->color_range == AVCOL_RANGE_JPEG)
            src_range = 1;
        if (f->colorspace != AVCOL_SPC_UNSPECIFIED && f->colorspace != AVCOL_SPC_RGB)
            inv = (int *)sws_getCoefficients(f->colorspace);
        sws_setColorspaceDetails(sws, inv, src_range, tab, dst_range, bri, con, sat);
    }
    uint8_t *dst[4] = {rgb, NULL, NULL, NULL};
    int stride[4] = {3 * f->width, 0, 0, 0};
    int rc = sws_scale(sws, (const uint8_t *const *)f->data, f->linesize, 0, f->height, dst, stride);
    sws_freeContext(sws);
    return rc == f->height ? 0 : AVERROR(EINVAL);
}

static int ff_open(upm_image_format fmt, ff_guard *g, AVCodecContext **ctxp, const char *nm, upm_err *err)
{
    const AVCodec *codec = avcodec_find_decoder(codec_of(fmt));
    if (!codec)
        return upm_errf(err, UPM_EBADDATA, "%s: this FFmpeg has no %s decoder", nm, upm_image_format_name(fmt));
    AVCodecContext *ctx = avcodec_alloc_context3(codec);
    if (!ctx)
        return upm_errf(err, UPM_ENOMEM, "%s: no memory for a %s decoder", nm, upm_image_format_name(fmt));
    ctx->thread_count = 1; /* the pipeline parallelises across samples */
    ctx->opaque = g;
    ctx->get_buffer2 = guarded_get_buffer;
    /* Bad samples are reported through upm_err; FFmpeg's own lines only at -loglevel verbose. */
    ctx->log_level_offset = AV_LOG_VERBOSE - AV_LOG_ERROR;
    int rc = avcodec_open2(ctx, codec, NULL);
    if (rc < 0) {
        avcodec_free_context(&ctx);
        return av_fail(nm, upm_image_format_name(fmt), rc, "opening the decoder", err);
    }
    *ctxp = ctx;
    return 0;
}

static int decode_ffmpeg(upm_image_format fmt, const uint8_t *p, size_t n, const upm_image_req *req, upm_image *out,
                         upm_err *err)
{
    const char *nm = name_of(req), *fname = upm_image_format_name(fmt);
    int hw = 0, hh = 0;
    if (!header_size(fmt, p, n, &hw, &hh))
        return upm_errf(err, UPM_EBADDATA, "%s: malformed %s header (%zu bytes)", nm, fname, n);
    int rc = hw > 0 ? check_limits(req, hw, hh, nm, err) : 0;
    if (rc)
        return rc;
    ff_guard g = {req, 0, 0};
    AVCodecContext *ctx = NULL;
    rc = ff_open(fmt, &g, &ctx, nm, err);
    if (rc)
        return rc;
    AVFrame *frame = av_frame_alloc();
    rc = frame ? ff_decode_frame(ctx, p, n, frame) : AVERROR(ENOMEM);
    if (rc < 0) {
        if (g.refused_w)
            rc = check_limits(req, g.refused_w, g.refused_h, nm, err);
        else
            rc = rc == AVERROR(ENOMEM) ? upm_errf(err, UPM_ENOMEM, "%s: no memory decoding %s", nm, fname)
                                       : av_fail(nm, fname, rc, "decoding", err);
    } else if (check_limits(req, frame->width, frame->height, nm, err) != 0) {
        rc = UPM_EBADDATA;
    } else {
        uint8_t *rgb = malloc((size_t)frame->width * frame->height * 3);
        int crc = rgb ? frame_to_rgb(frame, rgb) : AVERROR(ENOMEM);
        if (crc < 0) {
            free(rgb);
            rc = upm_errf(err, rgb ? UPM_EBADDATA : UPM_ENOMEM, "%s: cannot convert %s pixels (%s) to RGB", nm, fname,
                          av_get_pix_fmt_name(frame->format) ? av_get_pix_fmt_name(frame->format) : "?");
        } else {
            *out = (upm_image){.w = frame->width, .h = frame->height, .rgb = rgb, .src_w = frame->width,
                               .src_h = frame->height, .scale_num = 1, .scale_denom = 1, .format = fmt};
        }
    }
    av_frame_free(&frame);
    avcodec_free_context(&ctx);
    return rc;
}

int upm_image_decode(const void *data, size_t n, const upm_image_req *req, upm_image *out, upm_err *err)
{
    memset(out, 0, sizeof *out);
    upm_image_format fmt = upm_image_sniff(data, n);
    if (fmt == UPM_IMAGE_UNKNOWN)
        return bad_format(data, n, name_of(req), err);
    if (fmt == UPM_IMAGE_JPEG)
        return decode_jpeg(data, n, req, out, err);
    return decode_ffmpeg(fmt, data, n, req, out, err);
}

void upm_image_free(upm_image *img)
{
    if (!img)
        return;
    free(img->rgb);
    memset(img, 0, sizeof *img);
}
