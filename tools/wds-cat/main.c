/* upmoe-wds-cat: reads WebDataset shards (paths, file://, http(s)://, brace patterns) through the
 * pipeline's shard stream and prints one line per sample with a 64-bit FNV-1a hash of each field, so
 * users can check shards and the tests can compare what arrives over HTTP with the local files.
 * Exit codes: 0 everything was read, 1 a shard or sample was bad, 2 usage error. */
#include <cJSON.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardstream.h"
#include "text.h"
#include "urlpattern.h"

#define PROG "upmoe-wds-cat"

static const char usage[] =
    "usage: " PROG " [options] URL|PATTERN...\n"
    "\n"
    "Reads WebDataset shards (plain paths, file://, http://, https://; brace patterns such as\n"
    "https://host/shard-{000000..000099}.tar) and prints one line per sample:\n"
    "  URL<TAB>INDEX<TAB>KEY<TAB>EXT:SIZE:FNV1A64<TAB>...   (fields sorted by extension, hash in hex)\n"
    "Every skipped shard or sample is reported on stderr as '" PROG ": error: URL: key: what'.\n"
    "Samples are grouped as Python's webdataset does (key = path up to the first dot of the file name).\n"
    "\n"
    "options:\n"
    "  --json                  one JSON object per line: {\"url\",\"index\",\"key\",\"fields\":[{\"ext\",\"size\",\"fnv1a64\"}]}\n"
    "  --start POS:SAMPLE      begin at shard POS of the (single) pattern, skipping SAMPLE samples of it\n"
    "  --max-bad-shards N      fail after more than N bad shards per pattern (default: no limit)\n"
    "  --max-bad-sample-ratio R  fail when bad/(good+bad) samples exceeds R (default: no limit) ...\n"
    "  --min-samples N         ... once N samples were met (default 1000)\n"
    "  --connect-timeout S     seconds per connection attempt (default 30)\n"
    "  --low-speed-limit B     bytes/s below which a transfer is stalled (default 1024) ...\n"
    "  --low-speed-time S      ... for S seconds (default 30; 0 disables)\n"
    "  --retries N             consecutive retries of a failing transfer (default 5)\n"
    "  --backoff S             first retry wait, doubling each time (default 1)\n"
    "  --max-backoff S         longest wait (default 30)\n"
    "  --buffer-size BYTES     read buffer per shard (default 1048576)\n"
    "  --max-member-size BYTES largest tar member accepted (default 268435456)\n"
    "  --stats                 print counters on stderr at the end\n"
    "  --help                  this help\n"
    "\n"
    "exit status: 0 everything was read, 1 a shard or sample was bad, 2 usage error.\n";

typedef struct config {
    upm_shardstream_opts so;
    int json, stats, have_start;
    uint64_t start_pos, start_sample;
    int npat;
    char **pats;
} config;

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, PROG ": error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see --help)\n");
    va_end(ap);
    return 2;
}

static uint64_t fnv1a64(const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static int by_ext(const void *a, const void *b)
{
    return strcmp(((const upm_wds_field *)a)->ext, ((const upm_wds_field *)b)->ext);
}

static void print_text(const upm_wds_sample *s)
{
    printf("%s\t%" PRIu64 "\t%s", s->url, s->index, s->key);
    for (size_t i = 0; i < s->n_fields; i++)
        printf("\t%s:%zu:%016" PRIx64, s->fields[i].ext, s->fields[i].size, fnv1a64(s->fields[i].data, s->fields[i].size));
    putchar('\n');
}

static int print_json(const upm_wds_sample *s)
{
    char hex[17];
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = NULL;
    int ok = o && cJSON_AddStringToObject(o, "url", s->url) && cJSON_AddNumberToObject(o, "index", (double)s->index) &&
             cJSON_AddStringToObject(o, "key", s->key) && (arr = cJSON_AddArrayToObject(o, "fields")) != NULL;
    for (size_t i = 0; ok && i < s->n_fields; i++) {
        cJSON *f = cJSON_CreateObject();
        snprintf(hex, sizeof hex, "%016" PRIx64, fnv1a64(s->fields[i].data, s->fields[i].size));
        ok = f && cJSON_AddItemToArray(arr, f);
        if (!ok)
            cJSON_Delete(f);
        ok = ok && cJSON_AddStringToObject(f, "ext", s->fields[i].ext) &&
             cJSON_AddNumberToObject(f, "size", (double)s->fields[i].size) && cJSON_AddStringToObject(f, "fnv1a64", hex);
    }
    char *text = ok ? cJSON_PrintUnformatted(o) : NULL;
    if (text)
        puts(text);
    free(text);
    cJSON_Delete(o);
    return text ? 0 : -1;
}

static void report(void *ctx, const upm_stream_report *r)
{
    (void)ctx;
    fprintf(stderr, PROG ": error: %s\n", r->msg);
}

/* --name VALUE or --name=VALUE: returns the value and advances *i, or NULL when arg is not --name. */
static const char *opt_value(int argc, char **argv, int *i, const char *name, int *missing)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0)
        return NULL;
    if (argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (argv[*i][n] != '\0')
        return NULL;
    if (*i + 1 >= argc) {
        *missing = 1;
        return NULL;
    }
    return argv[++*i];
}

static int parse_number(const char *name, const char *v, double lo, double *out)
{
    if (upm_parse_double(v, out) != 0 || *out < lo)
        return usage_error("%s needs a non-negative number, not \"%s\"", name, v);
    return 0;
}

static int parse_count(const char *name, const char *v, int64_t *out)
{
    if (upm_parse_i64(v, out) != 0 || *out < 0)
        return usage_error("%s needs a non-negative integer, not \"%s\"", name, v);
    return 0;
}

static int parse_start(config *c, const char *v)
{
    int64_t p, s;
    char buf[64];
    const char *colon = strchr(v, ':');
    if (!colon || (size_t)(colon - v) >= sizeof buf)
        return usage_error("--start needs POS:SAMPLE, not \"%s\"", v);
    memcpy(buf, v, (size_t)(colon - v));
    buf[colon - v] = '\0';
    if (upm_parse_i64(buf, &p) || upm_parse_i64(colon + 1, &s) || p < 0 || s < 0)
        return usage_error("--start needs POS:SAMPLE with non-negative integers, not \"%s\"", v);
    c->have_start = 1;
    c->start_pos = (uint64_t)p;
    c->start_sample = (uint64_t)s;
    return 0;
}

/* Options taking a number; returns 0 when handled, 2 on a usage error, -1 when arg is none of them. */
static int numeric_option(config *c, int argc, char **argv, int *i)
{
    static const char *const names[] = {"--max-bad-shards", "--max-bad-sample-ratio", "--min-samples",
                                        "--connect-timeout", "--low-speed-limit", "--low-speed-time", "--retries",
                                        "--backoff", "--max-backoff", "--buffer-size", "--max-member-size"};
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        int missing = 0;
        const char *v = opt_value(argc, argv, i, names[k], &missing);
        if (missing)
            return usage_error("%s needs a value", names[k]);
        if (!v)
            continue;
        double d;
        int64_t n;
        int rc = k == 1 || k == 3 || k == 7 || k == 8 ? parse_number(names[k], v, 0, &d) : parse_count(names[k], v, &n);
        if (rc)
            return rc;
        switch (k) {
        case 0: c->so.max_bad_shards = n; break;
        case 1: c->so.max_bad_sample_ratio = d; break;
        case 2: c->so.min_samples = (uint64_t)n; break;
        case 3: c->so.source.connect_timeout_s = d; break;
        case 4: c->so.source.low_speed_limit = (long)n; break;
        case 5: c->so.source.low_speed_time_s = (long)n; break;
        case 6: c->so.source.max_retries = n > 1000000 ? 1000000 : (int)n; break;
        case 7: c->so.source.initial_backoff_s = d; break;
        case 8: c->so.source.max_backoff_s = d; break;
        case 9: c->so.source.buffer_size = (size_t)n; break;
        default: c->so.wds.max_member_size = (uint64_t)n; break;
        }
        return 0;
    }
    return -1;
}

static int parse_args(config *c, int argc, char **argv)
{
    upm_shardstream_opts_default(&c->so);
    c->so.max_bad_shards = -1;      /* a reading tool reports everything unless asked to stop early */
    c->so.max_bad_sample_ratio = 2; /* a ratio never exceeds 1 */
    c->so.report = report;
    c->pats = calloc((size_t)argc, sizeof *c->pats);
    if (!c->pats)
        return usage_error("out of memory");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int missing = 0, rc;
        const char *v;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage, stdout);
            return -1;
        } else if (strcmp(a, "--json") == 0) {
            c->json = 1;
        } else if (strcmp(a, "--stats") == 0) {
            c->stats = 1;
        } else if ((v = opt_value(argc, argv, &i, "--start", &missing)) != NULL) {
            if ((rc = parse_start(c, v)) != 0)
                return rc;
        } else if (missing) {
            return usage_error("%s needs a value", a);
        } else if ((rc = numeric_option(c, argc, argv, &i)) >= 0) {
            if (rc)
                return rc;
        } else if (a[0] == '-' && a[1] != '\0') {
            return usage_error("unknown option \"%s\"", a);
        } else {
            c->pats[c->npat++] = argv[i];
        }
    }
    if (c->npat == 0)
        return usage_error("no shard URL or pattern given");
    if (c->have_start && c->npat != 1)
        return usage_error("--start needs exactly one pattern, not %d", c->npat);
    return 0;
}

/* Streams one pattern; returns 0 when all was read, 1 when something was skipped, 3 on a fatal error. */
static int cat_pattern(const config *c, const upm_urlpat *pat, upm_shardstream_counters *total)
{
    upm_shardstream *s;
    upm_wds_sample smp;
    upm_err err;
    uint64_t n = upm_urlpat_count(pat);
    int rc = upm_shardstream_open(pat, NULL, n, c->start_pos, c->start_sample, &c->so, &s, &err);
    if (rc) {
        fprintf(stderr, PROG ": error: %s\n", err.msg);
        return 3;
    }
    while ((rc = upm_shardstream_next(s, &smp, &err)) == 1) {
        qsort(smp.fields, smp.n_fields, sizeof *smp.fields, by_ext);
        if (c->json ? print_json(&smp) : (print_text(&smp), 0)) {
            upm_wds_sample_free(&smp);
            fprintf(stderr, PROG ": error: out of memory printing a sample\n");
            rc = UPM_ENOMEM;
            break;
        }
        upm_wds_sample_free(&smp);
    }
    if (rc < 0 && rc != UPM_ENOMEM)
        fprintf(stderr, PROG ": error: %s\n", err.msg);
    upm_shardstream_counters cnt;
    upm_shardstream_counters_get(s, &cnt);
    upm_shardstream_close(s);
    total->samples += cnt.samples;
    total->bytes += cnt.bytes;
    total->bad_samples += cnt.bad_samples;
    total->bad_shards += cnt.bad_shards;
    total->shards_done += cnt.shards_done;
    total->skipped_samples += cnt.skipped_samples;
    total->retries += cnt.retries;
    return rc < 0 ? 3 : cnt.bad_samples || cnt.bad_shards ? 1 : 0;
}

int main(int argc, char **argv)
{
    config c;
    memset(&c, 0, sizeof c);
    int rc = parse_args(&c, argc, argv);
    upm_urlpat **pats = rc ? NULL : calloc((size_t)c.npat, sizeof *pats);
    if (!rc && !pats)
        rc = usage_error("out of memory");
    for (int i = 0; !rc && i < c.npat; i++) {
        upm_err err;
        if (upm_urlpat_parse(c.pats[i], &pats[i], &err) != 0) {
            fprintf(stderr, PROG ": error: %s\n", err.msg);
            rc = 2;
        } else if (c.have_start && c.start_pos > upm_urlpat_count(pats[i])) {
            rc = usage_error("--start position %" PRIu64 " is past the %" PRIu64 " shards of \"%s\"", c.start_pos,
                             upm_urlpat_count(pats[i]), c.pats[i]);
        }
    }
    upm_shardstream_counters total;
    memset(&total, 0, sizeof total);
    int status = rc < 0 ? 0 : rc;
    for (int i = 0; rc == 0 && i < c.npat; i++) {
        int r = cat_pattern(&c, pats[i], &total);
        status = r ? 1 : status;
        if (r == 3)
            break;
    }
    fflush(stdout);
    if (c.stats && rc == 0)
        fprintf(stderr, PROG ": stats: samples=%" PRIu64 " bytes=%" PRIu64 " bad_samples=%" PRIu64 " bad_shards=%" PRIu64
                " shards_done=%" PRIu64 " skipped_samples=%" PRIu64 " retries=%" PRIu64 "\n", total.samples, total.bytes,
                total.bad_samples, total.bad_shards, total.shards_done, total.skipped_samples, total.retries);
    for (int i = 0; pats && i < c.npat; i++)
        upm_urlpat_free(pats[i]);
    free(pats);
    free(c.pats);
    return status;
}
