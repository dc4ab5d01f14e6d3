/* upmoe-catalog verify DATASET: streams every shard of a dataset once (the same reader the trainer
 * uses) and reports samples, bytes, bad samples and bad shards, each bad item with its URL and key;
 * --decode also decodes every sample with the training decoders (upm_evalset in its verify mode, on a
 * pool of threads) and counts the undecodable ones apart; --store writes the sample count into the
 * catalog and keeps the verification's counts (table verifications). */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bpe.h"
#include "cli.h"
#include "clock.h"
#include "evalset.h"
#include "results.h"
#include "shardstream.h"

typedef struct verify_ctx {
    int tty;
    double last;
    uint64_t undecodable;
} verify_ctx;

static void report(void *ctx, const upm_stream_report *r)
{
    verify_ctx *v = ctx;
    if (r->decode) {
        v->undecodable++;
        fprintf(stderr, "%s" PROG ": undecodable sample %s key %s: %s\n", v->tty ? "\r\033[K" : "", r->url,
                r->key ? r->key : "?", r->msg);
        return;
    }
    fprintf(stderr, "%s" PROG ": bad %s: %s\n", v->tty ? "\r\033[K" : "", r->key ? "sample" : "shard", r->msg);
}

static void progress(verify_ctx *vc, const char *name, const upm_shardstream_counters *k, uint64_t n_shards,
                     int decode)
{
    if (!vc->tty || upm_monotonic_s() - vc->last < 0.25)
        return;
    fprintf(stderr, "\r\033[K%s: shard %" PRIu64 "/%" PRIu64 ", %" PRIu64 " samples, %.1f MB", name,
            k->shards_done + k->bad_shards + 1, n_shards, k->samples, k->bytes / 1e6);
    if (decode)
        fprintf(stderr, ", %" PRIu64 " undecodable", vc->undecodable);
    vc->last = upm_monotonic_s();
}

static int store_fn(upm_catalog *cat, void *p, upm_err *err)
{
    const upm_verify_record *r = p;
    upm_dataset d;
    int rc = upm_dataset_get(cat, r->dataset, &d, err);
    if (rc)
        return rc;
    d.num_samples = r->samples;
    if ((rc = upm_dataset_update(cat, &d, err)))
        return rc;
    return upm_verify_add(cat, r, err);
}

/* The structural pass: every sample read, nothing decoded. */
static int read_all(upm_shardstream *ss, verify_ctx *vc, const char *name, uint64_t n_shards, upm_err *err)
{
    upm_wds_sample s;
    int rc;
    while ((rc = upm_shardstream_next(ss, &s, err)) == 1) {
        upm_wds_sample_free(&s);
        upm_shardstream_counters k;
        upm_shardstream_counters_get(ss, &k);
        progress(vc, name, &k, n_shards, 0);
    }
    return rc;
}

/* The decoding pass: batches of every sample through the training decoders. */
static int decode_all(upm_evalset *e, verify_ctx *vc, const char *name, uint64_t n_shards, upm_err *err)
{
    upm_batch b = {0};
    int rc;
    while ((rc = upm_evalset_next(e, &b, err)) == 1) {
        upm_shardstream_counters k;
        upm_evalset_counters(e, &k);
        progress(vc, name, &k, n_shards, 1);
    }
    upm_batch_free(&b);
    return rc;
}

int cmd_verify(cli *c, int argc, char **argv)
{
    const char *pos[1], *max_bad = NULL, *threads_s = NULL, *bpe_vocab = NULL;
    int npos, store = 0, decode = 0;
    const cli_opt opts[] = {{"store", 0, NULL, &store, NULL, NULL, 0},
                            {"decode", 0, NULL, &decode, NULL, NULL, 0},
                            {"max-bad-shards", 1, &max_bad, NULL, NULL, NULL, 0},
                            {"threads", 1, &threads_s, NULL, NULL, NULL, 0},
                            {"bpe-vocab", 1, &bpe_vocab, NULL, NULL, NULL, 0},
                            {0}};
    int rc = cli_parse(argc - 1, argv + 1, opts, pos, 1, &npos, "verify");
    if (rc)
        return rc;
    if (npos != 1)
        return cli_usage_error("verify", "verify needs a DATASET");
    if ((threads_s || bpe_vocab) && !decode)
        return cli_usage_error("verify", "--threads and --bpe-vocab go with --decode");
    upm_shardstream_opts so;
    upm_shardstream_opts_default(&so);
    long long v = -1, threads = sysconf(_SC_NPROCESSORS_ONLN);
    if (max_bad && (rc = cli_int("verify", "--max-bad-shards", max_bad, 0, 1000000000, &v)))
        return rc;
    if (threads_s && (rc = cli_int("verify", "--threads", threads_s, 1, 1024, &threads)))
        return rc;
    so.max_bad_shards = max_bad ? v : -1; /* verifying counts everything unless told to stop */
    so.max_bad_sample_ratio = 1.0;
    verify_ctx vc = {isatty(2), 0, 0};
    so.report = report;
    so.report_ctx = &vc;
    upm_catalog *cat;
    if ((rc = cli_open(c, 0, &cat)))
        return rc;
    upm_dataset d;
    upm_urlpat *pat = NULL;
    upm_shardstream *ss = NULL;
    upm_evalset *e = NULL;
    upm_bpe *bpe = NULL;
    char bpe_buf[4096];
    if (upm_dataset_get(cat, pos[0], &d, &c->err) == 0 && !d.url_pattern[0])
        upm_errf(&c->err, UPM_EINVAL, "dataset %s has no shard URL yet (set it with '" PROG " set %s url=PATTERN')",
                 d.name, d.name);
    if (!c->err.msg[0])
        upm_urlpat_parse(d.url_pattern, &pat, &c->err);
    if (!c->err.msg[0] && decode) {
        /* text fields need the tokenizer; a task without text decodes without it */
        if (!bpe_vocab)
            bpe_vocab = upm_bpe_default_path(bpe_buf, sizeof bpe_buf);
        upm_err berr = {0};
        if (bpe_vocab && upm_bpe_load(bpe_vocab, &bpe, &berr))
            c->err = berr;
        upm_evalset_opts eo;
        upm_evalset_opts_default(&eo);
        eo.threads = (int)threads;
        eo.batch = 8 * (int)threads;
        eo.shards = so;
        eo.verify = 1;
        eo.collate.video_crops = eo.collate.video_clips = 1;
        if (!c->err.msg[0])
            upm_evalset_open(cat, d.name, &eo, bpe, &e, &c->err);
    } else if (!c->err.msg[0]) {
        upm_shardstream_open(pat, NULL, upm_urlpat_count(pat), 0, 0, &so, &ss, &c->err);
    }
    if (c->err.msg[0]) {
        upm_evalset_close(e);
        upm_bpe_free(bpe);
        upm_urlpat_free(pat);
        upm_catalog_close(cat);
        return cli_fail(&c->err);
    }
    uint64_t n_shards = upm_urlpat_count(pat);
    rc = decode ? decode_all(e, &vc, d.name, n_shards, &c->err) : read_all(ss, &vc, d.name, n_shards, &c->err);
    if (vc.tty)
        fprintf(stderr, "\r\033[K");
    upm_shardstream_counters k;
    if (decode)
        upm_evalset_counters(e, &k);
    else
        upm_shardstream_counters_get(ss, &k);
    upm_evalset_close(e);
    upm_shardstream_close(ss);
    upm_bpe_free(bpe);
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
        if (decode)
            cJSON_AddNumberToObject(o, "undecodable", (double)vc.undecodable);
        else
            cJSON_AddNullToObject(o, "undecodable");
        cJSON_AddBoolToObject(o, "complete", !failed);
        cli_print_json(o);
    } else {
        char dec[64] = "";
        if (decode)
            snprintf(dec, sizeof dec, ", %" PRIu64 " undecodable", vc.undecodable);
        printf("dataset %s: %" PRIu64 " shards, %" PRIu64 " samples, %" PRIu64 " bytes, %" PRIu64 " bad samples, %" PRIu64
               " bad shards%s%s\n", d.name, n_shards, k.samples, k.bytes, k.bad_samples, k.bad_shards, dec,
               failed ? " (stopped early)" : "");
    }
    if (!failed && store) {
        upm_verify_record r = {.shards = (int64_t)n_shards, .samples = (int64_t)k.samples, .bytes = (int64_t)k.bytes,
                               .bad_samples = (int64_t)k.bad_samples, .bad_shards = (int64_t)k.bad_shards,
                               .undecodable = decode ? (int64_t)vc.undecodable : -1};
        snprintf(r.dataset, sizeof r.dataset, "%s", d.name);
        snprintf(r.url_pattern, sizeof r.url_pattern, "%s", d.url_pattern);
        if ((rc = cli_write(c, cat, store_fn, &r)) == 0)
            printf("stored: %s has %" PRIu64 " samples\n", d.name, k.samples);
        else
            failed = 1;
    }
    upm_catalog_close(cat);
    return failed || k.bad_samples || k.bad_shards || vc.undecodable ? 1 : 0;
}
