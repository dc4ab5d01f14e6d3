/* libjpeg's full API as the fallback JPEG decoder (jpeg_full.h). Errors leave through longjmp, as
 * libjpeg expects of an error manager that must not exit the process. */
#include "jpeg_full.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>

#include <jpeglib.h>
#include <jerror.h> /* JWRN_JPEG_EOF */

enum { MAX_SCANS = 500 }; /* TurboJPEG's TJFLAG_LIMITSCANS: absurd progressive scan counts exhaust the CPU */

typedef struct guard {
    struct jpeg_error_mgr pub;
    struct jpeg_progress_mgr progress;
    jmp_buf jump;
    int truncated;
    char msg[JMSG_LENGTH_MAX];
} guard;

static void on_error(j_common_ptr c)
{
    guard *g = (guard *)c->err;
    c->err->format_message(c, g->msg);
    longjmp(g->jump, 1);
}

/* Warnings do not stop libjpeg; the one that matters here is the end of data before the image's end. */
static void on_message(j_common_ptr c, int level)
{
    if (level < 0 && c->err->msg_code == JWRN_JPEG_EOF)
        ((guard *)c->err)->truncated = 1;
}

static void on_progress(j_common_ptr c)
{
    j_decompress_ptr d = (j_decompress_ptr)c;
    guard *g = (guard *)c->err;
    if (d->input_scan_number > MAX_SCANS) {
        snprintf(g->msg, sizeof g->msg, "more than %d progressive scans", MAX_SCANS);
        longjmp(g->jump, 1);
    }
}

static void start(struct jpeg_decompress_struct *d, guard *g, const uint8_t *p, size_t n)
{
    d->err = jpeg_std_error(&g->pub);
    g->pub.error_exit = on_error;
    g->pub.emit_message = on_message;
    g->truncated = 0;
    g->msg[0] = 0;
    jpeg_create_decompress(d);
    g->progress.progress_monitor = on_progress;
    d->progress = &g->progress;
    jpeg_mem_src(d, p, (unsigned long)n);
}

int upm_jpeg_full_header(const uint8_t *p, size_t n, const char *name, int *w, int *h, int *cmyk, upm_err *err)
{
    struct jpeg_decompress_struct d;
    guard g;
    start(&d, &g, p, n);
    if (setjmp(g.jump)) {
        jpeg_destroy_decompress(&d);
        return upm_errf(err, UPM_EBADDATA, "%s: bad JPEG header: %s", name, g.msg);
    }
    jpeg_read_header(&d, TRUE);
    *w = (int)d.image_width, *h = (int)d.image_height;
    *cmyk = d.jpeg_color_space == JCS_CMYK || d.jpeg_color_space == JCS_YCCK;
    jpeg_destroy_decompress(&d);
    return 0;
}

int upm_jpeg_full_decode(const uint8_t *p, size_t n, int num, int denom, const char *name, uint8_t **pix, int *ow,
                         int *oh, upm_err *err)
{
    struct jpeg_decompress_struct d;
    guard g;
    uint8_t *volatile buf = NULL;
    *pix = NULL;
    start(&d, &g, p, n);
    if (setjmp(g.jump)) {
        jpeg_destroy_decompress(&d);
        free(buf);
        return upm_errf(err, UPM_EBADDATA, "%s: corrupt or unsupported JPEG (%zu bytes): %s", name, n, g.msg);
    }
    jpeg_read_header(&d, TRUE);
    int cmyk = d.jpeg_color_space == JCS_CMYK || d.jpeg_color_space == JCS_YCCK, ch = cmyk ? 4 : 3;
    d.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    d.dct_method = JDCT_ISLOW; /* as the TurboJPEG path: no FASTDCT, fancy upsampling (PIL's decoder) */
    d.do_fancy_upsampling = TRUE;
    d.scale_num = (unsigned)num, d.scale_denom = (unsigned)denom;
    jpeg_start_decompress(&d);
    size_t stride = (size_t)d.output_width * ch;
    buf = malloc(stride * d.output_height);
    if (!buf) {
        jpeg_destroy_decompress(&d);
        return upm_errf(err, UPM_ENOMEM, "%s: no memory for a %ux%u image", name, d.output_width, d.output_height);
    }
    while (d.output_scanline < d.output_height) {
        JSAMPROW row = buf + stride * d.output_scanline;
        jpeg_read_scanlines(&d, &row, 1);
    }
    if (g.truncated) {
        jpeg_destroy_decompress(&d);
        free(buf);
        return upm_errf(err, UPM_EBADDATA, "%s: truncated JPEG (%zu bytes): Premature end of JPEG file", name, n);
    }
    jpeg_finish_decompress(&d);
    *ow = (int)d.output_width, *oh = (int)d.output_height, *pix = buf;
    jpeg_destroy_decompress(&d);
    return 0;
}
