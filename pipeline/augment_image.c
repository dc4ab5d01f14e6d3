/* Image augmentation: torchvision's crop geometry drawn from upm_rng in source coordinates, PIL's
 * separable antialiased resampling reproduced in 8-bit fixed point (so full-scale output equals the
 * PIL/torchvision pipeline's), flip, and ToTensor + Normalize into float CHW. */
#include "augment_image.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- PIL's resampling (Pillow 9.4 libImaging/Resample.c) ---- */

#define PRECISION_BITS (32 - 8 - 2)

static double bilinear_filter(double x)
{
    if (x < 0.0)
        x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

static double bicubic_filter(double x)
{
    const double a = -0.5;
    if (x < 0.0)
        x = -x;
    if (x < 1.0)
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0)
        return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

typedef struct coeffs {
    int ksize;
    int *bounds;  /* per produced pixel: first input index (relative to r0), tap count */
    int32_t *kk;  /* per produced pixel: ksize fixed-point weights */
} coeffs;

/* PIL's precompute_coeffs + normalize_coeffs_8bpc, for output pixels [off, off+n) of the axis only.
 * The arithmetic is PIL's, operation for operation, so the weights are the same integers. */
static int make_coeffs(const upm_resample_axis *a, upm_resample filter, coeffs *c)
{
    double (*fn)(double) = filter == UPM_RESAMPLE_BILINEAR ? bilinear_filter : bicubic_filter;
    double fsupport = filter == UPM_RESAMPLE_BILINEAR ? 1.0 : 2.0;
    double scale = (a->in1 - a->in0) / a->full, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = fsupport * filterscale, ss = 1.0 / filterscale;
    int insize = a->r1 - a->r0;
    c->ksize = (int)ceil(support) * 2 + 1;
    c->bounds = malloc((size_t)a->n * 2 * sizeof *c->bounds);
    c->kk = malloc((size_t)a->n * c->ksize * sizeof *c->kk);
    double *k = malloc((size_t)c->ksize * sizeof *k);
    if (!c->bounds || !c->kk || !k) {
        free(k);
        return UPM_ENOMEM;
    }
    for (int j = 0; j < a->n; j++) {
        int xx = a->off + j;
        double center = a->in0 + (xx + 0.5) * scale, ww = 0.0;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        xmin = xmin < 0 ? 0 : xmin;
        xmax = (xmax > insize ? insize : xmax) - xmin;
        xmax = xmax < 0 ? 0 : xmax > c->ksize ? c->ksize : xmax;
        for (int x = 0; x < xmax; x++) {
            k[x] = fn((x + xmin - center + 0.5) * ss);
            ww += k[x];
        }
        int32_t *kj = c->kk + (size_t)j * c->ksize;
        for (int x = 0; x < c->ksize; x++) {
            double v = x < xmax ? (ww != 0.0 ? k[x] / ww : k[x]) : 0.0;
            kj[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS)) : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
        }
        c->bounds[2 * j] = xmin;
        c->bounds[2 * j + 1] = xmax;
    }
    free(k);
    return 0;
}

static void free_coeffs(coeffs *c)
{
    free(c->bounds);
    free(c->kk);
}

static inline uint8_t clip8(int32_t v)
{
    v >>= PRECISION_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* PIL skips a pass whose resize is the identity; so do we (it also equals a pass with unit weights). */
static int axis_is_identity(const upm_resample_axis *a)
{
    return a->full == a->r1 - a->r0 && a->in0 == 0.0 && a->in1 == (double)a->full;
}

/* Built twice, for AVX2 (8 lanes of 32-bit multiplies) and baseline x86-64; the loader picks at run
 * time (GCC target_clones). Integer sums: both clones give PIL's exact bytes. Not under ThreadSanitizer,
 * whose runtime is not ready when the ifunc resolvers run. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define UPM_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define UPM_CLONES
#endif

UPM_CLONES
static void pass_h_direct(const uint8_t *src, int stride, int rows, const coeffs *c, int n, uint8_t *dst)
{
    for (int y = 0; y < rows; y++) {
        const uint8_t *in = src + (size_t)y * stride;
        uint8_t *out = dst + (size_t)y * n * 3;
        for (int j = 0; j < n; j++) {
            const int32_t *k = c->kk + (size_t)j * c->ksize;
            const uint8_t *p = in + (size_t)c->bounds[2 * j] * 3;
            int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
            for (int x = 0; x < c->bounds[2 * j + 1]; x++, p += 3) {
                s0 += p[0] * k[x];
                s1 += p[1] * k[x];
                s2 += p[2] * k[x];
            }
            out[3 * j] = clip8(s0), out[3 * j + 1] = clip8(s1), out[3 * j + 2] = clip8(s2);
        }
    }
}

/* The vertical pass sums whole rows VB bytes at a time: contiguous fixed-length loops the compiler
 * can vectorise (baseline x86-64 lacks a 32-bit vector multiply, so the gain there is ~15%). */
#define VB 32

static inline __attribute__((always_inline)) void acc_rows(int32_t *restrict acc, const uint8_t *restrict row, size_t stride, const int32_t *k, int taps,
                     size_t x0, size_t len)
{
    int32_t a[VB];
    for (size_t u = 0; u < VB; u++)
        a[u] = 1 << (PRECISION_BITS - 1);
    for (int y = 0; y < taps; y++, row += stride) {
        const int32_t ky = k[y];
        const uint8_t *restrict r = row + x0;
        if (len == VB)
            for (size_t u = 0; u < VB; u++)
                a[u] += r[u] * ky;
        else
            for (size_t u = 0; u < len; u++)
                a[u] += r[u] * ky;
    }
    for (size_t u = 0; u < len; u++)
        acc[u] = a[u];
}

/* src: rows of `width` RGB pixels, row 0 being the coefficient bounds' first - row0. Sums run over
 * contiguous bytes of whole rows; integer sums are order-free, so this is PIL's per-pixel loop. */
UPM_CLONES
static void pass_v(const uint8_t *src, int width, int row0, const coeffs *c, int n, uint8_t *restrict dst)
{
    size_t stride = (size_t)width * 3;
    int32_t acc[VB];
    for (int j = 0; j < n; j++) {
        const int32_t *k = c->kk + (size_t)j * c->ksize;
        const uint8_t *row = src + (size_t)(c->bounds[2 * j] - row0) * stride;
        uint8_t *out = dst + (size_t)j * stride;
        for (size_t x0 = 0; x0 < stride; x0 += VB) {
            size_t len = stride - x0 < VB ? stride - x0 : VB;
            acc_rows(acc, row, stride, k, c->bounds[2 * j + 1], x0, len);
            for (size_t u = 0; u < len; u++) {
                int32_t v = acc[u] >> PRECISION_BITS;
                v = v < 0 ? 0 : v;
                out[x0 + u] = (uint8_t)(v > 255 ? 255 : v);
            }
        }
    }
}

static int axis_ok(const upm_resample_axis *a, int size)
{
    return a->r0 >= 0 && a->r1 > a->r0 && a->r1 <= size && a->full > 0 && a->n > 0 && a->off >= 0 &&
           a->off + a->n <= a->full && a->in1 > a->in0 && isfinite(a->in0) && isfinite(a->in1);
}

/* Pixel transpose of an h x w RGB image (src row stride in bytes) into w rows of h pixels. */
static void transpose_rgb(const uint8_t *restrict src, size_t stride, int h, int w, uint8_t *restrict dst)
{
    for (int y = 0; y < h; y++) {
        const uint8_t *in = src + (size_t)y * stride;
        for (int x = 0; x < w; x++) {
            uint8_t *o = dst + ((size_t)x * h + y) * 3;
            o[0] = in[3 * x], o[1] = in[3 * x + 1], o[2] = in[3 * x + 2];
        }
    }
}

/* The horizontal pass as a vertical one on the transposed image: the vertical kernel sums whole
 * contiguous rows and vectorises, the direct one walks 3-byte pixels tap by tap and does not. Same
 * integer sums per pixel, so the same bytes as PIL. Falls back to the direct loop without memory. */
static void pass_h(const uint8_t *src, int stride, int rows, const coeffs *c, int n, uint8_t *dst)
{
    int cols = 0;
    for (int j = 0; j < n; j++)
        cols = c->bounds[2 * j] + c->bounds[2 * j + 1] > cols ? c->bounds[2 * j] + c->bounds[2 * j + 1] : cols;
    uint8_t *t = malloc(((size_t)cols + (size_t)n) * (size_t)rows * 3 + 1);
    if (!t || rows < 8) {
        free(t);
        pass_h_direct(src, stride, rows, c, n, dst);
        return;
    }
    uint8_t *tout = t + (size_t)cols * rows * 3;
    transpose_rgb(src, (size_t)stride, rows, cols, t);
    pass_v(t, rows, 0, c, n, tout);
    transpose_rgb(tout, (size_t)rows * 3, n, rows, dst);
    free(t);
}

int upm_resample_rgb8(const uint8_t *src, int w, int h, const upm_resample_axis *ax, const upm_resample_axis *ay,
                      upm_resample filter, uint8_t *dst, upm_err *err)
{
    if (!axis_ok(ax, w) || !axis_ok(ay, h))
        return upm_errf(err, UPM_EINVAL, "resample: region x[%d,%d) y[%d,%d) -> %dx%d outside a %dx%d image", ax->r0,
                        ax->r1, ay->r0, ay->r1, ax->n, ay->n, w, h);
    coeffs cx = {0}, cy = {0};
    int rc = make_coeffs(ax, filter, &cx);
    if (rc == 0)
        rc = make_coeffs(ay, filter, &cy);
    /* Rows of the region the vertical pass reads (PIL's ybox_first .. ybox_last) */
    int first = ay->r1 - ay->r0, last = 0;
    for (int j = 0; rc == 0 && j < ay->n; j++) {
        first = cy.bounds[2 * j] < first ? cy.bounds[2 * j] : first;
        last = cy.bounds[2 * j] + cy.bounds[2 * j + 1] > last ? cy.bounds[2 * j] + cy.bounds[2 * j + 1] : last;
    }
    int rows = last > first ? last - first : 0;
    uint8_t *tmp = rc == 0 ? malloc((size_t)ax->n * (rows > 0 ? rows : 1) * 3) : NULL;
    if (rc == 0 && !tmp)
        rc = UPM_ENOMEM;
    if (rc == 0) {
        const uint8_t *base = src + ((size_t)(ay->r0 + first) * w + ax->r0) * 3;
        if (axis_is_identity(ax))
            for (int y = 0; y < rows; y++)
                memcpy(tmp + (size_t)y * ax->n * 3, base + ((size_t)y * w + ax->off) * 3, (size_t)ax->n * 3);
        else
            pass_h(base, w * 3, rows, &cx, ax->n, tmp);
        if (axis_is_identity(ay))
            memcpy(dst, tmp + (size_t)(ay->off - first) * ax->n * 3, (size_t)ax->n * ay->n * 3);
        else
            pass_v(tmp, ax->n, first, &cy, ay->n, dst);
    }
    free(tmp);
    free_coeffs(&cx);
    free_coeffs(&cy);
    return rc == UPM_ENOMEM ? upm_errf(err, rc, "resample: no memory for %dx%d", ax->n, ay->n) : rc;
}

int upm_resize_rgb8(const uint8_t *src, int w, int h, uint8_t *dst, int out_w, int out_h, upm_resample filter,
                    upm_err *err)
{
    upm_resample_axis ax = {0, w, 0.0, (double)w, out_w, 0, out_w};
    upm_resample_axis ay = {0, h, 0.0, (double)h, out_h, 0, out_h};
    return upm_resample_rgb8(src, w, h, &ax, &ay, filter, dst, err);
}

/* ---- geometry ---- */

void upm_aug_image_init(upm_aug_image *a, upm_aug_mode mode, int size)
{
    *a = (upm_aug_image){.mode = mode, .size = size, .filter = UPM_RESAMPLE_BICUBIC, .scale_min = 0.08,
                         .scale_max = 1.0, .ratio_min = 3.0 / 4.0, .ratio_max = 4.0 / 3.0,
                         .flip_p = mode == UPM_AUG_EVAL ? 0.0 : 0.5, .crop_pct = 0.875,
                         .mean = {0.485f, 0.456f, 0.406f}, .std = {0.229f, 0.224f, 0.225f}};
}

static int check_config(const upm_aug_image *a, upm_err *err)
{
    if (a->size < 1 || a->size > 8192)
        return upm_errf(err, UPM_EINVAL, "image augmentation: size %d is not in 1..8192", a->size);
    if (a->mode != UPM_AUG_TRAIN_CLASSIFY && a->mode != UPM_AUG_TRAIN_PAIR && a->mode != UPM_AUG_EVAL)
        return upm_errf(err, UPM_EINVAL, "image augmentation: unknown mode %d", (int)a->mode);
    if (a->filter != UPM_RESAMPLE_BICUBIC && a->filter != UPM_RESAMPLE_BILINEAR)
        return upm_errf(err, UPM_EINVAL, "image augmentation: unknown filter %d", (int)a->filter);
    if (!(a->scale_min > 0 && a->scale_min <= a->scale_max && a->scale_max <= 1.0))
        return upm_errf(err, UPM_EINVAL, "image augmentation: crop scale (%g, %g) must satisfy 0 < min <= max <= 1",
                        a->scale_min, a->scale_max);
    if (!(a->ratio_min > 0 && a->ratio_min <= a->ratio_max && isfinite(a->ratio_max)))
        return upm_errf(err, UPM_EINVAL, "image augmentation: crop ratio (%g, %g) must satisfy 0 < min <= max",
                        a->ratio_min, a->ratio_max);
    if (!(a->flip_p >= 0 && a->flip_p <= 1) || !(a->crop_pct > 0 && a->crop_pct <= 1))
        return upm_errf(err, UPM_EINVAL, "image augmentation: flip_p %g and crop_pct %g must be in [0,1] and (0,1]",
                        a->flip_p, a->crop_pct);
    for (int c = 0; c < 3; c++)
        if (!(a->std[c] > 0))
            return upm_errf(err, UPM_EINVAL, "image augmentation: std[%d] = %g must be > 0", c, (double)a->std[c]);
    return 0;
}

/* torchvision RandomResizedCrop.get_params: 10 tries at a random area and log-uniform aspect ratio,
 * then the largest centred crop within the ratio bounds. Python's round() is half-to-even: rint. */
static void rrc_box(const upm_aug_image *a, int W, int H, upm_rng *rng, int *i, int *j, int *h, int *w)
{
    double area = (double)W * H, lr0 = log(a->ratio_min), lr1 = log(a->ratio_max);
    for (int t = 0; t < 10; t++) {
        double target = area * (a->scale_min + (a->scale_max - a->scale_min) * upm_rng_uniform(rng));
        double ar = exp(lr0 + (lr1 - lr0) * upm_rng_uniform(rng));
        double ww = rint(sqrt(target * ar)), hh = rint(sqrt(target / ar));
        if (ww > 0 && ww <= W && hh > 0 && hh <= H) {
            *w = (int)ww, *h = (int)hh;
            *i = (int)upm_rng_below(rng, (uint64_t)(H - *h + 1));
            *j = (int)upm_rng_below(rng, (uint64_t)(W - *w + 1));
            return;
        }
    }
    double in_ratio = (double)W / H;
    if (in_ratio < a->ratio_min)
        *w = W, *h = (int)rint(W / a->ratio_min);
    else if (in_ratio > a->ratio_max)
        *h = H, *w = (int)rint(H * a->ratio_max);
    else
        *w = W, *h = H;
    *i = (H - *h) / 2, *j = (W - *w) / 2;
}

/* torchvision Resize(int): the shorter side to `side`, the longer int(side * long / short). */
static void resize_short(int W, int H, int side, int *nw, int *nh)
{
    if (W <= H)
        *nw = side, *nh = (int)((double)side * H / W);
    else
        *nh = side, *nw = (int)((double)side * W / H);
}

int upm_aug_choose(const upm_aug_image *a, int W, int H, upm_rng *rng, upm_aug_box *box, upm_err *err)
{
    memset(box, 0, sizeof *box);
    int rc = check_config(a, err);
    if (rc)
        return rc;
    if (W < 1 || H < 1)
        return upm_errf(err, UPM_EBADDATA, "image augmentation: image size %dx%d has no pixels", W, H);
    if (a->mode != UPM_AUG_EVAL && !rng)
        return upm_errf(err, UPM_EINVAL, "image augmentation: training modes need an rng");
    *box = (upm_aug_box){.src_w = W, .src_h = H, .x1 = W, .y1 = H};
    if (a->mode == UPM_AUG_TRAIN_CLASSIFY) {
        int i, j, h, w;
        rrc_box(a, W, H, rng, &i, &j, &h, &w);
        box->x0 = j, box->y0 = i, box->x1 = j + w, box->y1 = i + h;
        box->full_w = box->full_h = a->size;
        box->crop = 1;
    } else if (a->mode == UPM_AUG_TRAIN_PAIR) {
        resize_short(W, H, a->size, &box->full_w, &box->full_h);
        box->off_y = (int)upm_rng_below(rng, (uint64_t)(box->full_h - a->size + 1));
        box->off_x = (int)upm_rng_below(rng, (uint64_t)(box->full_w - a->size + 1));
    } else {
        /* timm/Uni-Perceiver: floor(size / 0.875) = int(256/224 * size): 182 for 160, 256 for 224 */
        int side = (int)floor(a->size / a->crop_pct + 1e-9);
        resize_short(W, H, side, &box->full_w, &box->full_h);
        box->off_y = (int)rint((box->full_h - a->size) / 2.0); /* torchvision center_crop rounding */
        box->off_x = (int)rint((box->full_w - a->size) / 2.0);
    }
    if (a->mode != UPM_AUG_EVAL)
        box->flip = upm_rng_uniform(rng) < a->flip_p;
    return 0;
}

void upm_aug_min_decode_size(const upm_aug_box *box, int *min_w, int *min_h)
{
    /* decoded / source >= full / region keeps >= 1 decoded pixel per resized pixel */
    *min_w = (int)ceil((double)box->src_w * box->full_w / (box->x1 - box->x0) - 1e-9);
    *min_h = (int)ceil((double)box->src_h * box->full_h / (box->y1 - box->y0) - 1e-9);
}

/* The box's span on one axis of the decoded image (scaled by num/denom). */
static void map_axis(double b0, double b1, int crop, double f, int dec, int full, int off, int n,
                     upm_resample_axis *ax)
{
    double s0 = b0 * f, s1 = b1 * f;
    int r0 = 0, r1 = dec;
    if (crop) {
        r0 = (int)floor(s0), r1 = (int)ceil(s1);
        r0 = r0 < 0 ? 0 : r0 >= dec ? dec - 1 : r0;
        r1 = r1 > dec ? dec : r1 <= r0 ? r0 + 1 : r1;
    }
    *ax = (upm_resample_axis){r0, r1, s0 - r0, s1 - r0, full, off, n};
}

int upm_aug_apply(const upm_aug_image *a, const upm_image *img, const upm_aug_box *box, float *out, upm_err *err)
{
    int rc = check_config(a, err);
    if (rc)
        return rc;
    if (!img->rgb || img->src_w != box->src_w || img->src_h != box->src_h || img->scale_denom < 1)
        return upm_errf(err, UPM_EINVAL, "image augmentation: the box is for a %dx%d image, the image is %dx%d",
                        box->src_w, box->src_h, img->src_w, img->src_h);
    int S = a->size;
    double f = (double)img->scale_num / img->scale_denom;
    upm_resample_axis ax, ay;
    map_axis(box->x0, box->x1, box->crop, f, img->w, box->full_w, box->off_x, S, &ax);
    map_axis(box->y0, box->y1, box->crop, f, img->h, box->full_h, box->off_y, S, &ay);
    uint8_t *px = malloc((size_t)S * S * 3);
    if (!px)
        return upm_errf(err, UPM_ENOMEM, "image augmentation: no memory for %dx%d", S, S);
    rc = upm_resample_rgb8(img->rgb, img->w, img->h, &ax, &ay, a->filter, px, err);
    if (rc == 0) {
        /* ToTensor then Normalize, in float32 as torchvision computes them */
        float lut[3][256];
        for (int c = 0; c < 3; c++)
            for (int v = 0; v < 256; v++)
                lut[c][v] = ((float)v / 255.0f - a->mean[c]) / a->std[c];
        size_t plane = (size_t)S * S;
        for (int y = 0; y < S; y++) {
            const uint8_t *row = px + (size_t)y * S * 3;
            for (int x = 0; x < S; x++) {
                const uint8_t *p = row + (size_t)(box->flip ? S - 1 - x : x) * 3;
                size_t o = (size_t)y * S + x;
                out[o] = lut[0][p[0]], out[plane + o] = lut[1][p[1]], out[2 * plane + o] = lut[2][p[2]];
            }
        }
    }
    free(px);
    return rc;
}

int upm_aug_image_bytes(const upm_aug_image *a, const void *data, size_t n, const upm_image_req *req, upm_rng *rng,
                        float *out, upm_aug_box *box_out, upm_err *err)
{
    upm_image_req r = req ? *req : (upm_image_req){0};
    r.min_w = r.min_h = 0;
    upm_aug_box box;
    upm_image img;
    int rc;
    if (upm_image_sniff(data, n) == UPM_IMAGE_JPEG) {
        /* Only JPEG can decode smaller: choose from its header first, then decode just big enough. */
        upm_image_info info;
        rc = upm_image_probe(data, n, r.name, &info, err);
        if (rc == 0)
            rc = upm_aug_choose(a, info.w, info.h, rng, &box, err);
        if (rc == 0) {
            upm_aug_min_decode_size(&box, &r.min_w, &r.min_h);
            rc = upm_image_decode(data, n, &r, &img, err);
        }
    } else {
        rc = upm_image_decode(data, n, &r, &img, err);
        if (rc == 0 && (rc = upm_aug_choose(a, img.w, img.h, rng, &box, err)) != 0)
            upm_image_free(&img);
    }
    if (rc)
        return rc;
    rc = upm_aug_apply(a, &img, &box, out, err);
    upm_image_free(&img);
    if (rc == 0 && box_out)
        *box_out = box;
    return rc;
}
