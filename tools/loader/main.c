/* upmoe-loader: runs the data loader of a catalog mixture on its own, step by step: which dataset
 * each step drew, the batch's checksum, and samples/s. It saves and resumes the sampler's cursor, so
 * it is how the tests prove that a resumed run yields the same batches, and how the pipeline
 * benchmark measures throughput without a model. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "catalog.h"
#include "clock.h"
#include "fileio.h"
#include "loader.h"
#include "pipeline.h"
#include "text.h"

#define PROG "upmoe-loader"

static const char *const usage =
    "usage: " PROG " --mixture NAME [options]\n"
    "\n"
    "Produces the batches of a catalog mixture for one rank and prints, per step, the dataset drawn,\n"
    "the batch size and a checksum of the batch; at the end, samples per second.\n"
    "\n"
    "  --catalog PATH      the catalog (default: $UPMOE_CATALOG, $UPMOE_HOME/catalog.db, ~/.upmoe/catalog.db)\n"
    "  --steps N           batches to produce (default 10)\n"
    "  --seed S            (default 0)   --rank R --world W   this rank of W (default 0 of 1)\n"
    "  --threads N         decode threads (default 2)    --block K   shuffle block (default 256)\n"
    "  --readers N         reader threads per dataset, each with its share of the shards (default 2);\n"
    "                      like the block size, part of the data order (a cursor needs the same value)\n"
    "  --batch B           batch size for every dataset instead of the catalog's\n"
    "  --image-size N      (default 224)   --frames T (default 8)   --eval   evaluation transforms\n"
    "  --vocab FILE        the CLIP BPE merges file (default: $UPMOE_BPE_VOCAB), for tasks with text\n"
    "  --resume FILE       start from a cursor saved by --save-cursor\n"
    "  --save-cursor FILE  write the cursor after the last step (atomically)\n"
    "  --max-bad-shards N  error budget per dataset stream and epoch (default 3)\n"
    "  --max-bad-sample-ratio R   fail a stream above this share of bad samples (default 0.01)\n"
    "  --quiet             only the summary      --version   versions of upmoe and its libraries\n"
    "exit status: 0 ok, 1 error, 2 usage error\n";

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, PROG ": error: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see '" PROG " --help')\n");
    return 2;
}

static void report(void *ctx, const upm_stream_report *r)
{
    (void)ctx;
    fprintf(stderr, PROG ": warning: skipped %s: %s\n", r->key ? "sample" : "shard", r->msg);
}

typedef struct args {
    const char *catalog, *mixture, *resume, *save, *vocab;
    long long steps;
    int quiet;
} args;

/* Parses argv into a and o; returns 0, 2 (usage error) or -1 (--help printed). */
static int parse(int argc, char **argv, args *a, upm_loader_opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long long x = 0;
        int takes = 1;
        if (!strcmp(k, "--help") || !strcmp(k, "-h")) {
            fputs(usage, stdout);
            return -1;
        } else if (!strcmp(k, "--version")) {
            char libs[256];
            upm_pipeline_versions(libs, sizeof libs);
            printf(PROG " " UPMOE_VERSION " (%s)\n", libs);
            return -1;
        } else if (!strcmp(k, "--quiet")) {
            a->quiet = 1, takes = 0;
        } else if (!strcmp(k, "--eval")) {
            o->collate.train = 0, takes = 0;
        } else if (!v) {
            return usage_error("option %s needs a value", k);
        } else if (!strcmp(k, "--catalog")) {
            a->catalog = v;
        } else if (!strcmp(k, "--mixture")) {
            a->mixture = v;
        } else if (!strcmp(k, "--resume")) {
            a->resume = v;
        } else if (!strcmp(k, "--save-cursor")) {
            a->save = v;
        } else if (!strcmp(k, "--vocab")) {
            a->vocab = v;
        } else if (!strcmp(k, "--max-bad-sample-ratio")) {
            double r;
            if (upm_parse_double(v, &r) != 0 || r < 0 || r > 1)
                return usage_error("--max-bad-sample-ratio '%s' is not a number in [0, 1]", v);
            o->shards.max_bad_sample_ratio = r;
        } else {
            int64_t n;
            if (upm_parse_i64(v, &n) != 0 || n < 0)
                return usage_error("'%s' is not a non-negative integer", v);
            x = n;
            if (!strcmp(k, "--steps")) a->steps = x;
            else if (!strcmp(k, "--seed")) o->seed = (uint64_t)x;
            else if (!strcmp(k, "--rank")) o->rank = (int)x;
            else if (!strcmp(k, "--world") && x >= 1) o->world = (int)x;
            else if (!strcmp(k, "--threads") && x >= 1 && x <= 256) o->threads = (int)x;
            else if (!strcmp(k, "--block") && x >= 1 && x <= 1 << 20) o->block_size = (uint32_t)x;
            else if (!strcmp(k, "--readers") && x >= 1 && x <= UPM_MAX_READERS) o->readers = (int)x;
            else if (!strcmp(k, "--batch") && x >= 1 && x <= 1 << 20) o->batch_override = (int)x;
            else if (!strcmp(k, "--image-size") && x >= 16 && x % 16 == 0) o->collate.image_size = (int)x;
            else if (!strcmp(k, "--frames") && x >= 1 && x <= 64) o->collate.frames = (int)x;
            else if (!strcmp(k, "--max-bad-shards")) o->shards.max_bad_shards = x;
            else return usage_error("unknown option or value out of range: %s", k);
        }
        i += takes;
    }
    if (!a->mixture)
        return usage_error("%s", "--mixture NAME is required");
    if (o->rank >= o->world)
        return usage_error("%s", "--rank must be below --world");
    return 0;
}

int main(int argc, char **argv)
{
    args a = {.steps = 10};
    upm_loader_opts o;
    upm_loader_opts_default(&o);
    o.shards.report = report;
    int rc = parse(argc, argv, &a, &o);
    if (rc)
        return rc < 0 ? 0 : rc;
    o.bpe_vocab = a.vocab ? a.vocab : getenv("UPMOE_BPE_VOCAB");
    upm_err err = {0};
    char path[4096];
    upm_catalog *cat = NULL;
    upm_loader *l = NULL;
    char *cursor = NULL;
    if (a.resume && upm_read_file(a.resume, &cursor, NULL, &err)) {
        fprintf(stderr, PROG ": error: cursor: %s\n", err.msg);
        return 1;
    }
    if (upm_catalog_resolve_path(a.catalog, path, sizeof path, &err) || upm_catalog_open(path, UPM_CAT_READONLY, &cat, &err) ||
        upm_loader_open(cat, a.mixture, &o, cursor, &l, &err)) {
        fprintf(stderr, PROG ": error: %s\n", err.msg);
        upm_catalog_close(cat);
        free(cursor);
        return err.code == UPM_EUSAGE ? 2 : 1;
    }
    free(cursor);
    double t0 = upm_monotonic_s();
    uint64_t samples = 0;
    upm_batch b = {0}; /* reused from step to step */
    for (long long s = 0; s < a.steps && !rc; s++) {
        double t = upm_monotonic_s();
        if ((rc = upm_loader_next(l, &b, &err))) {
            fprintf(stderr, PROG ": error: step %lld: %s\n", s, err.msg);
            break;
        }
        double ms = (upm_monotonic_s() - t) * 1e3; /* the loader's time alone, not the checksum's */
        samples += (uint64_t)b.B;
        if (!a.quiet)
            printf("step %" PRIu64 " dataset %s task %s batch %d checksum %016" PRIx64 " ms %.1f\n", b.step, b.dataset,
                   b.task, b.B, upm_batch_checksum(&b), ms);
    }
    upm_batch_free(&b);
    double dt = upm_monotonic_s() - t0;
    if (!rc)
        printf("summary: %lld steps, %" PRIu64 " samples, %.1f samples/s, %" PRIu64 " decoded, %" PRIu64
               " unusable samples replaced\n", a.steps, samples, dt > 0 ? samples / dt : 0.0, upm_loader_decoded(l),
               upm_loader_bad_rows(l));
    if (!rc && a.save) {
        char *json = upm_loader_cursor_json(l);
        if (!json || upm_write_file_atomic(a.save, json, strlen(json), &err) != 0) {
            fprintf(stderr, PROG ": error: cannot write cursor %s: %s\n", a.save, json ? err.msg : "out of memory");
            rc = 1;
        }
        free(json);
    }
    upm_loader_close(l);
    upm_catalog_close(cat);
    return rc ? 1 : 0;
}
