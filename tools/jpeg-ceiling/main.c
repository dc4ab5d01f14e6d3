/* upmoe-jpeg-ceiling: the decode-only ceiling for the pipeline benchmark. Decodes the given JPEG
 * files at full scale with TurboJPEG alone (no I/O, no tar, no augmentation), on N threads, and
 * prints images/s: what the image path could reach if everything but decoding were free.
 * --normalize S adds the one step no image path can skip, writing the float batch: a centre S x S
 * crop (no resampling) through ToTensor + Normalize into a 256-image float32 CHW batch, so the
 * benchmark can show how much of the ceiling is left once the output is written at all. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <turbojpeg.h>

#include "clock.h"
#include "fileio.h"
#include "pool.h"

typedef struct file {
    unsigned char *data;
    unsigned long size;
} file;

#define BATCH 256

typedef struct job {
    file *files;
    int nfiles;
    unsigned char **out; /* per worker scratch */
    int failed;
    int size;            /* --normalize: crop side; 0 = decode only */
    float *batch;        /* BATCH x 3 x size x size */
    float lut[3][256];
} job;

/* Centre crop (clamped to the image), ToTensor + Normalize in float32 as torchvision computes them. */
static void normalize_one(job *j, const unsigned char *rgb, int w, int h, int i)
{
    int S = j->size, cw = S < w ? S : w, ch = S < h ? S : h, x0 = (w - cw) / 2, y0 = (h - ch) / 2;
    size_t plane = (size_t)S * S;
    float *o = j->batch + (size_t)(i % BATCH) * 3 * plane;
    for (int y = 0; y < ch; y++) {
        const unsigned char *row = rgb + ((size_t)(y0 + y) * w + x0) * 3;
        for (int x = 0; x < cw; x++) {
            size_t q = (size_t)y * S + x;
            o[q] = j->lut[0][row[3 * x]], o[plane + q] = j->lut[1][row[3 * x + 1]];
            o[2 * plane + q] = j->lut[2][row[3 * x + 2]];
        }
    }
}

static void decode_one(void *ctx, int i, int worker)
{
    job *j = ctx;
    const file *f = &j->files[i % j->nfiles];
    tjhandle h = tjInitDecompress();
    int w, hgt, sub, cs;
    if (!h || tjDecompressHeader3(h, f->data, f->size, &w, &hgt, &sub, &cs) != 0 ||
        tjDecompress2(h, f->data, f->size, j->out[worker], w, 0, hgt, TJPF_RGB, 0) != 0)
        j->failed = 1;
    else if (j->size)
        normalize_one(j, j->out[worker], w, hgt, i);
    tjDestroy(h);
}

int main(int argc, char **argv)
{
    static const char usage[] = "usage: upmoe-jpeg-ceiling [--threads N] [--images N] [--normalize SIZE] FILE.jpg...\n";
    int threads = 2, total = 3072, first = 1, size = 0;
    while (first < argc && strncmp(argv[first], "--", 2) == 0 && first + 1 < argc) {
        if (!strcmp(argv[first], "--threads"))
            threads = atoi(argv[first + 1]);
        else if (!strcmp(argv[first], "--images"))
            total = atoi(argv[first + 1]);
        else if (!strcmp(argv[first], "--normalize"))
            size = atoi(argv[first + 1]);
        else {
            fputs(usage, stderr);
            return 2;
        }
        first += 2;
    }
    int nfiles = argc - first;
    if (nfiles < 1 || threads < 1 || total < 1 || size < 0 || size > 4096) {
        fputs(usage, stderr);
        return 2;
    }
    job j = {calloc((size_t)nfiles, sizeof(file)), nfiles, calloc((size_t)threads, sizeof(unsigned char *)), 0, size,
             NULL, {{0}}};
    static const float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++)
            j.lut[c][v] = ((float)v / 255.0f - mean[c]) / sd[c];
    size_t batch_bytes = (size_t)BATCH * 3 * size * size * sizeof(float);
    if (size && !(j.batch = malloc(batch_bytes))) {
        fprintf(stderr, "upmoe-jpeg-ceiling: error: no memory for the batch\n");
        return 1;
    }
    if (size)
        memset(j.batch, 0x7f, batch_bytes); /* touched up front, as the loader's reused batch is */
    for (int i = 0; i < nfiles; i++) {
        char *data;
        size_t n;
        upm_err rerr;
        if (upm_read_file(argv[first + i], &data, &n, &rerr)) {
            fprintf(stderr, "upmoe-jpeg-ceiling: error: %s\n", rerr.msg);
            return 1;
        }
        j.files[i].data = (unsigned char *)data, j.files[i].size = (unsigned long)n;
    }
    for (int t = 0; t < threads; t++)
        j.out[t] = malloc(8192 * 8192 * 3);
    upm_pool *pool;
    upm_err err;
    if (upm_pool_new(threads, &pool, &err))
        return 1;
    double t0 = upm_monotonic_s();
    upm_pool_for(pool, total, decode_one, &j);
    double dt = upm_monotonic_s() - t0;
    printf("decoded %s%d images from %d files on %d threads: %.1f images/s%s\n", size ? "and normalised " : "", total,
           nfiles, threads, total / dt, j.failed ? " (some failed)" : "");
    upm_pool_free(pool);
    for (int t = 0; t < threads; t++)
        free(j.out[t]);
    for (int i = 0; i < nfiles; i++)
        free(j.files[i].data);
    free(j.files);
    free(j.out);
    free(j.batch);
    return j.failed;
}
