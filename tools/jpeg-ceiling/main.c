/* upmoe-jpeg-ceiling: the decode-only ceiling for the pipeline benchmark. Decodes the given JPEG
 * files at full scale with TurboJPEG alone (no I/O, no tar, no augmentation), on N threads, and
 * prints images/s: what the image path could reach if everything but decoding were free. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <turbojpeg.h>

#include "pool.h"

typedef struct file {
    unsigned char *data;
    unsigned long size;
} file;

typedef struct job {
    file *files;
    int nfiles;
    unsigned char **out; /* per worker scratch */
    int failed;
} job;

static void decode_one(void *ctx, int i, int worker)
{
    job *j = ctx;
    const file *f = &j->files[i % j->nfiles];
    tjhandle h = tjInitDecompress();
    int w, hgt, sub, cs;
    if (!h || tjDecompressHeader3(h, f->data, f->size, &w, &hgt, &sub, &cs) != 0 ||
        tjDecompress2(h, f->data, f->size, j->out[worker], w, 0, hgt, TJPF_RGB, 0) != 0)
        j->failed = 1;
    tjDestroy(h);
}

int main(int argc, char **argv)
{
    int threads = 2, total = 3072, first = 1;
    while (first < argc && strncmp(argv[first], "--", 2) == 0 && first + 1 < argc) {
        if (!strcmp(argv[first], "--threads"))
            threads = atoi(argv[first + 1]);
        else if (!strcmp(argv[first], "--images"))
            total = atoi(argv[first + 1]);
        else {
            fprintf(stderr, "usage: upmoe-jpeg-ceiling [--threads N] [--images N] FILE.jpg...\n");
            return 2;
        }
        first += 2;
    }
    int nfiles = argc - first;
    if (nfiles < 1 || threads < 1 || total < 1) {
        fprintf(stderr, "usage: upmoe-jpeg-ceiling [--threads N] [--images N] FILE.jpg...\n");
        return 2;
    }
    job j = {calloc((size_t)nfiles, sizeof(file)), nfiles, calloc((size_t)threads, sizeof(unsigned char *)), 0};
    for (int i = 0; i < nfiles; i++) {
        FILE *f = fopen(argv[first + i], "rb");
        if (!f) {
            fprintf(stderr, "upmoe-jpeg-ceiling: error: cannot read %s\n", argv[first + i]);
            return 1;
        }
        fseek(f, 0, SEEK_END);
        j.files[i].size = (unsigned long)ftell(f);
        fseek(f, 0, SEEK_SET);
        j.files[i].data = malloc(j.files[i].size);
        if (fread(j.files[i].data, 1, j.files[i].size, f) != j.files[i].size)
            return 1;
        fclose(f);
    }
    for (int t = 0; t < threads; t++)
        j.out[t] = malloc(8192 * 8192 * 3);
    upm_pool *pool;
    upm_err err;
    if (upm_pool_new(threads, &pool, &err))
        return 1;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    upm_pool_for(pool, total, decode_one, &j);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double dt = (double)(b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9;
    printf("decoded %d images from %d files on %d threads: %.1f images/s%s\n", total, nfiles, threads, total / dt,
           j.failed ? " (some failed)" : "");
    upm_pool_free(pool);
    for (int t = 0; t < threads; t++)
        free(j.out[t]);
    for (int i = 0; i < nfiles; i++)
        free(j.files[i].data);
    free(j.files);
    free(j.out);
    return j.failed;
}
