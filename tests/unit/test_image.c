/* Unit test for pipeline/image.c on real files: full-scale decodes equal PIL's pixels byte for byte,
 * DCT-scaled decodes have libjpeg's size and equal PIL's draft(), other formats and colour models come
 * out as PIL's RGB, and bad data (oversized headers, truncation, empty, text, noise) is UPM_EBADDATA; JPEGs
 * whose sampling TurboJPEG refuses decode through libjpeg's full API just as PIL does. */
#include <glob.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <turbojpeg.h>

#include "check.h"
#include "image.h"
#include "rng.h"

static const char *testdata;
static char tmpdir[] = "/tmp/upm-test-image-XXXXXX";

/* PIL, driven through popen: prints "W H\n" then the raw RGB bytes of the result. */
static const char pil_py[] =
    "import sys\n"
    "from PIL import Image\n"
    "op, path = sys.argv[1], sys.argv[2]\n"
    "if op == 'save':\n"
    "    kw = {}\n"
    "    for a in sys.argv[6:]:\n"
    "        k, v = a.split('=')\n"
    "        kw[k] = int(v) if v.lstrip('-').isdigit() else v\n"
    "    Image.open(path).convert(sys.argv[4]).save(sys.argv[3], sys.argv[5], **kw)\n"
    "    sys.exit(0)\n"
    "im = Image.open(path)\n"
    "if op == 'draft':\n"
    "    im.draft('RGB', (int(sys.argv[3]), int(sys.argv[4])))\n"
    "im = im.convert('RGB')\n"
    "if op == 'reduce':\n"
    "    im = im.reduce(int(sys.argv[3]))\n"
    "sys.stdout.buffer.write(b'%d %d\\n' % im.size + im.tobytes())\n";

static char *tmp_path(const char *name)
{
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static void write_all(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(b, 1, n, f) == n);
    if (f)
        fclose(f);
}

/* Runs the PIL helper; returns its RGB bytes (malloc'ed) and size, or NULL when it failed. */
static uint8_t *pil(const char *args, int *w, int *h)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s", tmp_path("pil.py"), args);
    FILE *p = popen(cmd, "r");
    uint8_t *b = NULL;
    *w = *h = 0;
    if (p && fscanf(p, "%d %d", w, h) == 2 && fgetc(p) == '\n' && *w > 0 && *h > 0) {
        size_t n = (size_t)*w * *h * 3;
        b = malloc(n);
        if (fread(b, 1, n, p) != n) {
            free(b);
            b = NULL;
        }
    }
    if (!p || pclose(p) != 0 || !b) {
        fprintf(stderr, "test_image: PIL failed: %s\n", cmd);
        failures++;
        free(b);
        return NULL;
    }
    return b;
}

static void pil_save(const char *src, const char *dst, const char *mode, const char *fmt, const char *opts)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s save '%s' '%s' %s %s %s", tmp_path("pil.py"), src, dst, mode, fmt, opts);
    int rc = system(cmd);
    if (rc != 0) {
        fprintf(stderr, "test_image: PIL could not write %s: %s\n", dst, cmd);
        failures++;
    }
}

static int decode_file(const char *path, const upm_image_req *req, upm_image *img, upm_err *err)
{
    size_t n;
    uint8_t *b = check_read_file(path, &n);
    int rc = upm_image_decode(b, n, req, img, err);
    free(b);
    return rc;
}

/* Mean absolute difference of two RGB buffers (same size), and the largest one. */
static double mae(const uint8_t *a, const uint8_t *b, size_t n, int *maxd)
{
    double s = 0;
    *maxd = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        s += d;
        *maxd = d > *maxd ? d : *maxd;
    }
    return n ? s / (double)n : 0;
}

/* Our decode of path at full scale against PIL's convert("RGB"); tol 0 = byte for byte. */
static void expect_like_pil(const char *path, upm_image_format fmt, double tol_mae)
{
    upm_image img;
    upm_err err;
    int rc = decode_file(path, NULL, &img, &err), pw, ph;
    if (rc) {
        fprintf(stderr, "test_image: %s: %s\n", path, err.msg);
        failures++;
        return;
    }
    char args[1024];
    snprintf(args, sizeof args, "rgb '%s'", path);
    uint8_t *ref = pil(args, &pw, &ph);
    CHECK(img.format == fmt && img.scale_num == 1 && img.scale_denom == 1);
    if (ref && img.w == pw && img.h == ph) {
        int maxd;
        double m = mae(img.rgb, ref, (size_t)pw * ph * 3, &maxd);
        int same = memcmp(img.rgb, ref, (size_t)pw * ph * 3) == 0;
        if (tol_mae == 0 ? !same : m > tol_mae) {
            fprintf(stderr, "test_image: %s differs from PIL: mean %.4f, max %d\n", path, m, maxd);
            failures++;
        }
    } else {
        fprintf(stderr, "test_image: %s: %dx%d, PIL %dx%d\n", path, img.w, img.h, pw, ph);
        failures++;
    }
    free(ref);
    upm_image_free(&img);
}

static void test_real_files_like_pil(void)
{
    char pat[1024];
    glob_t g;
    snprintf(pat, sizeof pat, "%s/images/art4apps/*/*.jpg", testdata);
    CHECK(glob(pat, 0, NULL, &g) == 0 && g.gl_pathc >= 500);
    for (size_t i = 0; i < g.gl_pathc; i += 73) /* 9 files across the classes */
        expect_like_pil(g.gl_pathv[i], UPM_IMAGE_JPEG, 0);
    globfree(&g);
    snprintf(pat, sizeof pat, "%s/images/photos/*.jpg", testdata);
    CHECK(glob(pat, 0, NULL, &g) == 0 && g.gl_pathc == 7);
    for (size_t i = 0; i < g.gl_pathc; i++)
        expect_like_pil(g.gl_pathv[i], UPM_IMAGE_JPEG, 0);
    globfree(&g);
    snprintf(pat, sizeof pat, "%s/images/png/*.png", testdata);
    CHECK(glob(pat, 0, NULL, &g) == 0 && g.gl_pathc == 2);
    for (size_t i = 0; i < g.gl_pathc; i++)
        expect_like_pil(g.gl_pathv[i], UPM_IMAGE_PNG, 0);
    globfree(&g);
}

/* Colour models and containers PIL writes from a real photo: gray, CMYK (Adobe) and progressive
 * JPEG, gray/palette/RGBA/16-bit PNG, GIF, BMP, TIFF and WebP. Exact except lossy WebP, which PIL
 * decodes with libwebp and FFmpeg with its own VP8 decoder and YUV->RGB: 2.0 mean is a few levels. */
static void test_other_formats_like_pil(void)
{
    char src[1024];
    snprintf(src, sizeof src, "%s/images/photos/dog.jpg", testdata);
    static const struct {
        const char *file, *mode, *fmt, *opts;
        upm_image_format f;
        double tol;
    } cases[] = {
        {"gray.jpg", "L", "JPEG", "quality=90", UPM_IMAGE_JPEG, 0},
        {"cmyk.jpg", "CMYK", "JPEG", "quality=90", UPM_IMAGE_JPEG, 0},
        {"prog.jpg", "RGB", "JPEG", "progressive=1 quality=85", UPM_IMAGE_JPEG, 0},
        {"s444.jpg", "RGB", "JPEG", "subsampling=0 quality=95", UPM_IMAGE_JPEG, 0},
        {"gray.png", "L", "PNG", "", UPM_IMAGE_PNG, 0},
        {"pal.png", "P", "PNG", "", UPM_IMAGE_PNG, 0},
        {"rgba.png", "RGBA", "PNG", "", UPM_IMAGE_PNG, 0},
        {"pal.gif", "P", "GIF", "", UPM_IMAGE_GIF, 0},
        {"rgb.bmp", "RGB", "BMP", "", UPM_IMAGE_BMP, 0},
        {"rgb.tif", "RGB", "TIFF", "", UPM_IMAGE_TIFF, 0},
        {"lossless.webp", "RGB", "WEBP", "lossless=1", UPM_IMAGE_WEBP, 0},
        {"lossy.webp", "RGB", "WEBP", "quality=90", UPM_IMAGE_WEBP, 2.0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pil_save(src, tmp_path(cases[i].file), cases[i].mode, cases[i].fmt, cases[i].opts);
        expect_like_pil(tmp_path(cases[i].file), cases[i].f, cases[i].tol);
    }
}

/* DCT scaling: the size libjpeg gives (ceil(side/denom)), the same pixels as PIL's draft() at that
 * scale, and close to a box-filtered full decode (PIL's reduce): the scaled IDCT is a low-pass of the
 * same data, not a box mean: on sharp detail (eagle feathers, 1/4) it differs by 2.0 levels on average
 * (0.3 on the smoother kite); 2.5 levels (1% of the range) is the bound. */
static void test_dct_scaled(void)
{
    static const struct {
        const char *file;
        int min, w, h, denom;
    } cases[] = {
        {"kite.jpg", 160, 338, 225, 4}, /* 1352x900: 1/8 would give 113 rows < 160 */
        {"kite.jpg", 100, 169, 113, 8},
        {"kite.jpg", 400, 676, 450, 2},
        {"kite.jpg", 500, 1352, 900, 1}, /* 1/2 gives 450 rows < 500: full scale */
        {"eagle.jpg", 160, 387, 256, 2}, /* 773x512: 1/4 gives 128 rows < 160 */
        {"eagle.jpg", 120, 194, 128, 4}, /* ceil(773/4) = 194 */
        {"dog.jpg", 224, 384, 288, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[1024], args[1200];
        snprintf(path, sizeof path, "%s/images/photos/%s", testdata, cases[i].file);
        upm_image_req req = {.min_w = cases[i].min, .min_h = cases[i].min, .name = cases[i].file};
        upm_image img;
        upm_err err;
        if (decode_file(path, &req, &img, &err) != 0) {
            fprintf(stderr, "test_image: %s: %s\n", path, err.msg);
            failures++;
            continue;
        }
        CHECK(img.w == cases[i].w && img.h == cases[i].h && img.scale_num == 1 && img.scale_denom == cases[i].denom);
        CHECK(img.src_w * 1 > 0 && (img.src_w + img.scale_denom - 1) / img.scale_denom == img.w);
        int d = img.scale_denom, pw, ph, maxd;
        snprintf(args, sizeof args, "draft '%s' %d %d", path, img.src_w / d, img.src_h / d);
        uint8_t *ref = pil(args, &pw, &ph);
        CHECK(ref && pw == img.w && ph == img.h && memcmp(ref, img.rgb, (size_t)pw * ph * 3) == 0);
        free(ref);
        if (d > 1) {
            snprintf(args, sizeof args, "reduce '%s' %d", path, d);
            ref = pil(args, &pw, &ph);
            CHECK(ref && pw == img.w && ph == img.h);
            if (ref && pw == img.w && ph == img.h) {
                double m = mae(ref, img.rgb, (size_t)pw * ph * 3, &maxd);
                printf("test_image: %s 1/%d vs full decode + reduce(%d): mean abs diff %.3f, max %d\n",
                       cases[i].file, d, d, m, maxd);
                CHECK(m < 2.5);
            }
            free(ref);
        }
        upm_image_free(&img);
    }
}

/* Offset of the first SOFn marker's height field (walks the marker segments from SOI). */
static size_t sof_offset(const uint8_t *b, size_t n)
{
    size_t i = 2;
    while (i + 4 < n && b[i] == 0xFF) {
        uint8_t m = b[i + 1];
        size_t len = (size_t)b[i + 2] << 8 | b[i + 3];
        if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC)
            return i + 5;
        i += 2 + len;
    }
    return 0;
}

static void expect_refused(const void *b, size_t n, const upm_image_req *req, const char *what)
{
    upm_image img;
    upm_err err;
    upm_err_clear(&err);
    int rc = upm_image_decode(b, n, req, &img, &err);
    if (rc != UPM_EBADDATA || img.rgb != NULL || strstr(err.msg, what) == NULL) {
        fprintf(stderr, "test_image: expected UPM_EBADDATA with '%s', got %d '%s'\n", what, rc, err.msg);
        failures++;
    }
    upm_image_free(&img);
}

static void patch_be16(uint8_t *p, int v) { p[0] = (uint8_t)(v >> 8), p[1] = (uint8_t)v; }

static void test_limits(void)
{
    char path[1024];
    size_t n;
    snprintf(path, sizeof path, "%s/images/photos/giraffe.jpg", testdata);
    uint8_t *b = check_read_file(path, &n);
    size_t sof = b ? sof_offset(b, n) : 0;
    CHECK(sof > 0);
    if (sof > 0) {
        /* A JPEG frame header holds 16-bit sizes (and libjpeg stops at 65500), so 100000 cannot be
         * written there: 60000x60000 (3.6 Gpixels) is the largest our check is the one to refuse. */
        patch_be16(b + sof, 60000), patch_be16(b + sof + 2, 60000);
        upm_image_req req = {.name = "huge.jpg"};
        expect_refused(b, n, &req, "huge.jpg: image 60000x60000 exceeds the limit of 67108864 pixels");
        upm_image_info info;
        upm_err err;
        CHECK(upm_image_probe(b, n, "huge.jpg", &info, &err) == 0 && info.w == 60000 && info.h == 60000);
        patch_be16(b + sof, 16), patch_be16(b + sof + 2, 40000); /* few pixels, one side too long */
        expect_refused(b, n, &req, "image 40000x16 exceeds the limit");
        patch_be16(b + sof, 500), patch_be16(b + sof + 2, 500); /* back to the real 500x500 */
        upm_image img;
        CHECK(upm_image_decode(b, n, &req, &img, &err) == 0 && img.w == 500);
        upm_image_free(&img);
        upm_image_req small = {.max_pixels = 100000, .name = "giraffe.jpg"};
        expect_refused(b, n, &small, "image 500x500 exceeds the limit of 100000 pixels");
        upm_image_req side = {.max_side = 499};
        expect_refused(b, n, &side, "image: image 500x500 exceeds the limit of 67108864 pixels and 499 per side");
    }
    free(b);
    snprintf(path, sizeof path, "%s/images/png/chelsea.png", testdata);
    b = check_read_file(path, &n);
    if (b && n > 24) {
        b[16] = 0, b[17] = 0x01, b[18] = 0x86, b[19] = 0xA0; /* IHDR width 100000 */
        memcpy(b + 20, b + 16, 4);
        upm_image_req req = {.name = "huge.png"};
        expect_refused(b, n, &req, "huge.png: image 100000x100000 exceeds the limit");
    }
    free(b);
    /* TIFF keeps its size in an IFD we do not parse: the decoder's buffer callback refuses it. */
    b = check_read_file(tmp_path("rgb.tif"), &n);
    upm_image_req tiny = {.max_pixels = 1000, .name = "rgb.tif"};
    expect_refused(b, n, &tiny, "rgb.tif: image 768x576 exceeds the limit of 1000 pixels");
    free(b);
}

static void test_bad_data(void)
{
    char path[1024];
    glob_t g;
    snprintf(path, sizeof path, "%s/images/photos/*.jpg", testdata);
    CHECK(glob(path, 0, NULL, &g) == 0);
    for (size_t i = 0; i < g.gl_pathc; i++) {
        size_t n;
        uint8_t *b = check_read_file(g.gl_pathv[i], &n);
        expect_refused(b, n / 2, NULL, "truncated JPEG");
        expect_refused(b, n - 2, NULL, "truncated JPEG"); /* only the EOI missing: PIL refuses it too */
        expect_refused(b, 600, NULL, "JPEG");             /* inside the headers */
        /* Bytes flipped in the middle of the entropy data: either decoded (libjpeg resyncs, as in PIL)
         * or refused, never a crash; ASan watches the reads. */
        for (size_t k = n / 2; k < n / 2 + 64 && k < n; k++)
            b[k] ^= 0x5a;
        upm_image img;
        upm_err err;
        int rc = upm_image_decode(b, n, NULL, &img, &err);
        CHECK(rc == 0 || rc == UPM_EBADDATA);
        upm_image_free(&img);
        free(b);
    }
    globfree(&g);
    /* progressive, CMYK and grayscale files of test_other_formats_like_pil, cut in half */
    static const char *derived[] = {"prog.jpg", "cmyk.jpg", "gray.jpg"};
    for (size_t i = 0; i < 3; i++) {
        size_t n;
        uint8_t *b = check_read_file(tmp_path(derived[i]), &n);
        expect_refused(b, n / 2, NULL, "truncated JPEG");
        free(b);
    }
    expect_refused("", 0, NULL, "empty image data (0 bytes)");
    expect_refused(NULL, 0, NULL, "empty image data");

    /* Real text saved under a .jpg name: the bytes decide, not the name. */
    size_t n;
    snprintf(path, sizeof path, "%s/text/pg1661.txt", testdata);
    uint8_t *text = check_read_file(path, &n);
    write_all(tmp_path("notes.jpg"), text, n < 4096 ? n : 4096);
    free(text);
    text = check_read_file(tmp_path("notes.jpg"), &n);
    upm_image_req req = {.name = "notes.jpg"};
    expect_refused(text, n, &req, "notes.jpg: not a known image format");
    free(text);

    /* Noise, alone and behind each format's magic bytes. */
    static const char *magic[] = {"", "\xFF\xD8\xFF", "\x89PNG\r\n\x1a\n", "GIF89a", "RIFF\x10\0\0\0WEBP", "II*"};
    upm_rng rng = upm_rng_stream(7, UPM_RNG_AUGMENT, 0, 0, 0);
    for (int t = 0; t < 60; t++) {
        uint8_t buf[3000];
        for (size_t i = 0; i < sizeof buf; i++)
            buf[i] = (uint8_t)upm_rng_u64(&rng);
        const char *m = magic[t % 6];
        size_t ml = t % 6 == 4 ? 12 : t % 6 == 5 ? 4 : strlen(m);
        memcpy(buf, m, ml);
        size_t len = 16 + (size_t)upm_rng_below(&rng, sizeof buf - 16);
        upm_image img;
        upm_err err;
        int rc = upm_image_decode(buf, len, NULL, &img, &err);
        CHECK(rc == UPM_EBADDATA && img.rgb == NULL && err.msg[0] != '\0');
        upm_image_free(&img);
    }

    snprintf(path, sizeof path, "%s/images/png/astronaut.png", testdata);
    uint8_t *png = check_read_file(path, &n);
    expect_refused(png, n / 2, NULL, "corrupt or truncated PNG");
    free(png);
}

static void test_probe(void)
{
    static const struct {
        const char *rel;
        upm_image_format f;
        int w, h;
    } cases[] = {
        {"photos/kite.jpg", UPM_IMAGE_JPEG, 1352, 900},
        {"photos/scream.jpg", UPM_IMAGE_JPEG, 352, 448},
        {"png/chelsea.png", UPM_IMAGE_PNG, 451, 300},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[1024];
        size_t n;
        snprintf(path, sizeof path, "%s/images/%s", testdata, cases[i].rel);
        uint8_t *b = check_read_file(path, &n);
        upm_image_info info;
        upm_err err;
        CHECK(upm_image_probe(b, n, cases[i].rel, &info, &err) == 0 && info.format == cases[i].f &&
              info.w == cases[i].w && info.h == cases[i].h);
        free(b);
    }
    /* The derived files of test_other_formats_like_pil: header sizes agree with the decoded ones. */
    static const char *derived[] = {"pal.gif", "rgb.bmp", "lossless.webp", "lossy.webp"};
    for (size_t i = 0; i < 4; i++) {
        size_t n;
        uint8_t *b = check_read_file(tmp_path(derived[i]), &n);
        upm_image_info info;
        upm_image img;
        upm_err err;
        CHECK(upm_image_probe(b, n, derived[i], &info, &err) == 0 && info.w == 768 && info.h == 576);
        CHECK(upm_image_decode(b, n, NULL, &img, &err) == 0 && img.w == info.w && img.h == info.h);
        upm_image_free(&img);
        free(b);
    }
    upm_image_info info;
    upm_err err;
    CHECK(upm_image_probe("GIF89a", 6, "x.gif", &info, &err) == UPM_EBADDATA && strstr(err.msg, "malformed GIF header"));
    /* An extended WebP (VP8X: canvas width-1 and height-1 as 24-bit little-endian at 24 and 27), the
     * layout PIL writes with EXIF or ICC data, which the files above do not have. */
    static const uint8_t vp8x[30] = {'R', 'I', 'F', 'F', 22, 0, 0, 0, 'W', 'E', 'B', 'P', 'V', 'P', '8', 'X',
                                     10, 0, 0, 0, 0x10, 0, 0, 0, 0xff, 0x02, 0, 0x3f, 0x02, 0};
    CHECK(upm_image_probe(vp8x, sizeof vp8x, "x.webp", &info, &err) == 0 && info.format == UPM_IMAGE_WEBP &&
          info.w == 768 && info.h == 576);
    CHECK(strcmp(upm_image_format_name(UPM_IMAGE_WEBP), "WebP") == 0);
}

/* JPEGs whose sampling TurboJPEG's header call refuses ("could not determine subsampling type"; issue 19),
 * made by Debian's cjpeg from a real photo, baseline and progressive: decoded through libjpeg's full API to
 * PIL's pixels byte for byte, at full scale and DCT-scaled (PIL's draft), probed to their size, and refused
 * when cut short. */
static void test_unusual_sampling(void)
{
    static const char *samplings[] = {"4x2,1x1,1x1", "3x1,1x1,1x1", "1x4,1x1,1x1", "2x1,1x2,1x1"};
    char src[1024], ppm[600], cmd[4096];
    snprintf(src, sizeof src, "%s/images/photos/dog.jpg", testdata);
    snprintf(ppm, sizeof ppm, "%s", tmp_path("dog.ppm"));
    pil_save(src, ppm, "RGB", "PPM", "");
    for (size_t i = 0; i < sizeof samplings / sizeof samplings[0]; i++)
        for (int prog = 0; prog < 2; prog++) {
            char out[600], args[1200];
            snprintf(out, sizeof out, "%s/sample%zu%s.jpg", tmpdir, i, prog ? "p" : "");
            snprintf(cmd, sizeof cmd, "cjpeg -sample %s %s -outfile '%s' '%s'", samplings[i],
                     prog ? "-progressive" : "", out, ppm);
            if (system(cmd) != 0) {
                fprintf(stderr, "test_image: %s failed (Debian's libjpeg-turbo-progs: tools/setup installs it)\n", cmd);
                failures++;
                continue;
            }
            size_t n;
            uint8_t *b = check_read_file(out, &n);
            tjhandle tj = tjInitDecompress();
            int w, h, sub, cs;
            CHECK(tjDecompressHeader3(tj, b, (unsigned long)n, &w, &h, &sub, &cs) != 0); /* the case at hand */
            tjDestroy(tj);
            expect_like_pil(out, UPM_IMAGE_JPEG, 0);
            upm_image_info info;
            upm_err err;
            CHECK(upm_image_probe(b, n, out, &info, &err) == 0 && info.w == 768 && info.h == 576);
            upm_image img;
            upm_image_req req = {.min_w = 160, .min_h = 160, .name = out};
            if (upm_image_decode(b, n, &req, &img, &err) == 0) {
                int pw, ph;
                CHECK(img.scale_denom == 2 && img.w == 384 && img.h == 288);
                snprintf(args, sizeof args, "draft '%s' %d %d", out, img.w, img.h);
                uint8_t *ref = pil(args, &pw, &ph);
                CHECK(ref && pw == img.w && ph == img.h && memcmp(ref, img.rgb, (size_t)pw * ph * 3) == 0);
                free(ref);
                upm_image_free(&img);
            } else {
                fprintf(stderr, "test_image: %s at 1/2: %s\n", out, err.msg);
                failures++;
            }
            expect_refused(b, n / 2, NULL, "truncated JPEG");
            free(b);
        }
}

int main(void)
{
    testdata = getenv("UPMOE_TESTDATA");
    if (!testdata || access(testdata, R_OK) != 0) {
        fprintf(stderr, "test_image: UPMOE_TESTDATA is not set or not readable (run tools/fetch-testdata)\n");
        return 1;
    }
    if (!mkdtemp(tmpdir)) {
        perror("test_image: mkdtemp");
        return 1;
    }
    write_all(tmp_path("pil.py"), pil_py, sizeof pil_py - 1);
    test_real_files_like_pil();
    test_other_formats_like_pil();
    test_dct_scaled();
    test_limits();
    test_bad_data();
    test_probe();
    test_unusual_sampling();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "test_image: could not remove %s\n", tmpdir);
    return CHECK_RESULT("test_image");
}
