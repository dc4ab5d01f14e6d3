/* upmoe-catalog verify DATASET: streams every shard of a dataset once (the same reader the trainer
 * uses) and reports samples, bytes, bad samples and bad shards, each bad item with its URL and key;
 * --store writes the sample count into the catalog. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "clock.h"
#include "shardstream.h"

typedef struct verify_ctx {
    int tty;
    double last;
} verify_ctx;

static void report(void *ctx, const upm_stream_report *r)
{
    verify_ctx *v = ctx;
    fprintf(stderr, "%s" PROG ": bad %s: %s\n", v->tty ? "\r\033[K" : "", r->key ? "sample" : "shard", r->msg);
}

typedef struct store_job {
    const char *name;
    int64_t samples;
} store_job;

static int store_fn(upm_catalog *cat, void *p, upm_err *err)
{
    store_job *j = p;
    upm_dataset d;
    int rc = upm_dataset_get(cat, j->name, &d, err);
    if (rc)
        return rc;
    d.num_samples = j->samples;
    return upm_dataset_update(cat, &d, err);
}

int cmd_verify(cli *c, int argc, char **argv)
{
    const char *pos[1], *max_bad = NULL;
    int npos, store = 0;
    const cli_opt opts[] = {{"store", 0, NULL, &store, NULL, NULL, 0}, {"max-bad-shards", 1, &max_bad, NULL, NULL, NULL, 0}, {0}};
    int rc = cli_parse(argc - 1, argv + 1, opts, pos, 1, &npos, "verify");
    if (rc)
        return rc;
    if (npos != 1)
        return cli_usage_error("verify", "verify needs a DATASET");
    upm_shardstream_opts so;
    upm_shardstream_opts_default(&so);
    long long v = -1;
    if (max_bad && (rc = cli_int("verify", "--max-bad-shards", max_bad, 0, 1000000000, &v)))
        return rc;
    so.max_bad_shards = max_bad ? v : -1; /* verifying counts everything unless told to stop */
    so.max_bad_sample_ratio = 1.0;
    verify_ctx vc = {isatty(2), 0};
    so.report = report;
    so.report_ctx = &vc;
    upm_catalog *cat;
    if ((rc = cli_open(c, 0, &cat)))
        return rc;
    upm_dataset d;
    upm_urlpat *pat = NULL;
    upm_shardstream *ss = NULL;
    if (upm_dataset_get(cat, pos[0], &d, &c->err) == 0 && !d.url_pattern[0])
        upm_errf(&c->err, UPM_EINVAL, "dataset %s has no shard URL yet (set it with '" PROG " set %s url=PATTERN')",
                 d.name, d.name);
    if (c->err.msg[0] || upm_urlpat_parse(d.url_pattern, &pat, &c->err) ||
        upm_shardstream_open(pat, NULL, upm_urlpat_count(pat), 0, 0, &so, &ss, &c->err)) {
        upm_urlpat_free(pat);
        upm_catalog_close(cat);
        return cli_fail(&c->err);
    }
    uint64_t n_shards = upm_urlpat_count(pat);
    upm_wds_sample s;
    while ((rc = upm_shardstream_next(ss, &s, &c->err)) == 1) {
        upm_wds_sample_free(&s);
        if (vc.tty && upm_monotonic_s() - vc.last > 0.25) {
            upm_shardstream_counters k;
            upm_shardstream_counters_get(ss, &k);
            fprintf(stderr, "\r\033[K%s: shard %" PRIu64 "/%" PRIu64 ", %" PRIu64 " samples, %.1f MB", d.name,
                    k.shards_done + k.bad_shards + 1, n_shards, k.samples, k.bytes / 1e6);
            vc.last = upm_monotonic_s();
        }
    }
    if (vc.tty)
        fprintf(stderr, "\r\033[K");
    upm_shardstream_counters k;
    upm_shardstream_counters_get(ss, &k);
    upm_shardstream_close(ss);
    upm_urlpat_free(pat);
    int failed = rc < 0;
    if (failed)
        cli_fail(&c->err);
    if (c->json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "dataset", d.name);
        cJSON_AddNumberToObject(o, "shards", (double)n_shards);
        cJSON_AddNumberToObject(o, "samples", (double)k.samples);
        cJSON_AddNumberToObject(o, "bytes", (double)k.bytes);
        cJSON_AddNumberToObject(o, "bad_samples", (double)k.bad_samples);
        cJSON_AddNumberToObject(o, "bad_shards", (double)k.bad_shards);
        cJSON_AddBoolToObject(o, "complete", !failed);
        cli_print_json(o);
    } else {
        printf("dataset %s: %" PRIu64 " shards, %" PRIu64 " samples, %" PRIu64 " bytes, %" PRIu64 " bad samples, %" PRIu64
               " bad shards%s\n", d.name, n_shards, k.samples, k.bytes, k.bad_samples, k.bad_shards,
               failed ? " (stopped early)" : "");
    }
    if (!failed && store) {
        store_job j = {d.name, (int64_t)k.samples};
        if ((rc = cli_write(c, cat, store_fn, &j)) == 0)
            printf("stored: %s has %" PRIu64 " samples\n", d.name, k.samples);
        else
            failed = 1;
    }
    upm_catalog_close(cat);
    return failed || k.bad_samples || k.bad_shards ? 1 : 0;
}
