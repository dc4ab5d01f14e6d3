/* Unit test for pipeline/source.c, wds.c and shardstream.c on tars written here with libarchive's writer
 * from real JPEGs of the test data: webdataset grouping rules, damaged and truncated archives, .tar.gz,
 * local sources and refused schemes, and shard streams (order, bad shards, budget, resume). */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "shardstream.h"
#include "source.h"
#include "urlpattern.h"
#include "wds.h"

#define NJPEG 8

typedef struct blob {
    unsigned char *data;
    size_t size;
} blob;

static blob jpeg[NJPEG];
static char tmpdir[] = "/tmp/upmoe-test-wds-XXXXXX";

/* A tar member to write: type 'f' file, 'd' directory, 'l' symlink, 'h' hard link (to link). */
typedef struct member {
    const char *name;
    char type;
    const void *data;
    size_t size;
    const char *link;
} member;

static int load_file(const char *path, blob *b)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    b->data = malloc(n > 0 ? (size_t)n : 1);
    b->size = b->data && n > 0 && fread(b->data, 1, (size_t)n, f) == (size_t)n ? (size_t)n : 0;
    fclose(f);
    return b->size ? 0 : -1;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The first NJPEG art4apps animal pictures (sorted by name) from the real test data. */
static int load_jpegs(void)
{
    const char *td = getenv("UPMOE_TESTDATA");
    char dir[1024], path[2048], *names[256];
    int n = 0;
    if (!td || !*td) {
        fprintf(stderr, "test_wds: UPMOE_TESTDATA is not set (run tools/fetch-testdata and point it there)\n");
        return -1;
    }
    snprintf(dir, sizeof dir, "%s/images/art4apps/animals", td);
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "test_wds: test data missing: cannot open %s (run tools/fetch-testdata)\n", dir);
        return -1;
    }
    for (struct dirent *e; (e = readdir(d)) != NULL && n < 256;)
        if (strstr(e->d_name, ".jpg"))
            names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, by_name);
    int ok = n >= NJPEG;
    for (int i = 0; i < NJPEG && ok; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        ok = load_file(path, &jpeg[i]) == 0 && jpeg[i].size > 2 && jpeg[i].data[0] == 0xff && jpeg[i].data[1] == 0xd8;
    }
    for (int i = 0; i < n; i++)
        free(names[i]);
    if (!ok)
        fprintf(stderr, "test_wds: test data incomplete: need %d JPEGs in %s\n", NJPEG, dir);
    return ok ? 0 : -1;
}

static void tmp_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", tmpdir, name);
}

static int write_tar(const char *name, const member *m, size_t n, int gzip)
{
    char path[512];
    tmp_path(path, sizeof path, name);
    struct archive *a = archive_write_new();
    archive_write_set_format_ustar(a);
    if (gzip)
        archive_write_add_filter_gzip(a);
    int rc = archive_write_open_filename(a, path);
    for (size_t i = 0; i < n && rc == ARCHIVE_OK; i++) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, m[i].name);
        archive_entry_set_perm(e, 0644);
        archive_entry_set_filetype(e, m[i].type == 'd' ? AE_IFDIR : m[i].type == 'l' ? AE_IFLNK : AE_IFREG);
        archive_entry_set_size(e, m[i].type == 'f' ? (la_int64_t)m[i].size : 0);
        if (m[i].type == 'l')
            archive_entry_set_symlink(e, m[i].link);
        if (m[i].type == 'h')
            archive_entry_set_hardlink(e, m[i].link);
        rc = archive_write_header(a, e);
        if (rc == ARCHIVE_OK && m[i].type == 'f' && m[i].size)
            rc = archive_write_data(a, m[i].data, m[i].size) == (la_ssize_t)m[i].size ? ARCHIVE_OK : ARCHIVE_FATAL;
        archive_entry_free(e);
    }
    if (archive_write_close(a) != ARCHIVE_OK)
        rc = ARCHIVE_FATAL;
    archive_write_free(a);
    if (rc != ARCHIVE_OK)
        fprintf(stderr, "test_wds: cannot write %s\n", path);
    return rc == ARCHIVE_OK ? 0 : -1;
}

/* Reads a whole shard and describes it: "key{ext=size,...}" per sample, "BAD(key)" per bad sample,
 * "ERR" for a shard error (which ends the walk), separated by spaces. The last error goes to *last. */
static void describe(const char *url, const upm_wds_opts *o, char *out, size_t n, upm_err *last)
{
    upm_wds *r;
    upm_wds_sample s;
    size_t k = 0;
    out[0] = '\0';
    int rc = upm_wds_open(url, NULL, o, &r, last);
    if (rc) {
        snprintf(out, n, "OPEN%d", rc);
        return;
    }
    while ((rc = upm_wds_next(r, &s, last)) != 0) {
        if (rc == 1) {
            k += (size_t)snprintf(out + k, n - k, "%s%s{", k ? " " : "", s.key);
            for (size_t i = 0; i < s.n_fields; i++)
                k += (size_t)snprintf(out + k, n - k, "%s%s=%zu", i ? "," : "", s.fields[i].ext, s.fields[i].size);
            k += (size_t)snprintf(out + k, n - k, "}");
            upm_wds_sample_free(&s);
        } else if (!upm_wds_broken(r)) {
            k += (size_t)snprintf(out + k, n - k, "%sBAD(%s)", k ? " " : "", upm_wds_last_key(r));
        } else {
            k += (size_t)snprintf(out + k, n - k, "%sERR", k ? " " : "");
            break;
        }
        if (k >= n)
            break;
    }
    upm_wds_close(r);
}

static const char grouping_expect[] =
    "a.b/c{d.jpg=%zu,txt=5} s1{jpg=%zu,cls=1} s2{jpg=%zu} s3{jpg=%zu} s2{txt=6} BAD(s4) s5{empty.txt=0,jpg=%zu} "
    "./dot/s6{jpg=%zu}";

static void test_grouping(void)
{
    const member m[] = {
        {"a.b/", 'd', NULL, 0, NULL},
        {"a.b/c.d.jpg", 'f', jpeg[0].data, jpeg[0].size, NULL}, /* dots in the directory and the extension */
        {"a.b/c.txt", 'f', "koala", 5, NULL},
        {"__meta__", 'f', "x", 1, NULL},                         /* metadata: skipped */
        {"s1.JPG", 'f', jpeg[1].data, jpeg[1].size, NULL},       /* extension lower-cased */
        {"s1.lnk", 'l', NULL, 0, "s1.JPG"},                      /* symlink: skipped, the sample goes on */
        {"s1.Cls", 'f', "3", 1, NULL},
        {"s2.jpg", 'f', jpeg[2].data, jpeg[2].size, NULL},
        {"noextension", 'f', "zz", 2, NULL},                     /* no match: skipped */
        {"s3.jpg", 'f', jpeg[3].data, jpeg[3].size, NULL},
        {"s2.txt", 'f', "parrot", 6, NULL},                      /* key again later: a new sample */
        {"s4.jpg", 'f', jpeg[4].data, jpeg[4].size, NULL},
        {"s4.jpg", 'f', jpeg[5].data, jpeg[5].size, NULL},       /* duplicate extension: sample bad */
        {"s5.empty.txt", 'f', "", 0, NULL},                      /* zero bytes: an empty field */
        {"s5.jpg", 'f', jpeg[5].data, jpeg[5].size, NULL},
        {"s5.hl", 'h', NULL, 0, "s5.jpg"},                       /* hard link: skipped */
        {"./dot/s6.jpg", 'f', jpeg[6].data, jpeg[6].size, NULL},
    };
    char url[512], got[2048], want[1024];
    upm_err e;
    snprintf(want, sizeof want, grouping_expect, jpeg[0].size, jpeg[1].size, jpeg[2].size, jpeg[3].size, jpeg[5].size,
             jpeg[6].size);
    for (int gz = 0; gz < 2; gz++) {
        CHECK(write_tar(gz ? "group.tar.gz" : "group.tar", m, sizeof m / sizeof *m, gz) == 0);
        tmp_path(url, sizeof url, gz ? "group.tar.gz" : "group.tar");
        describe(url, NULL, got, sizeof got, &e);
        if (strcmp(got, want) != 0)
            fprintf(stderr, "grouping (%s):\n got  %s\n want %s\n", gz ? "gz" : "tar", got, want);
        CHECK(strcmp(got, want) == 0);
    }

    /* bytes, index, key and URL of one sample; the bad sample's message names URL and key */
    upm_wds *r;
    upm_wds_sample s;
    tmp_path(url, sizeof url, "group.tar");
    CHECK(upm_wds_open(url, NULL, NULL, &r, &e) == 0);
    CHECK(upm_wds_next(r, &s, &e) == 1);
    const upm_wds_field *f = upm_wds_sample_get(&s, "d.jpg");
    CHECK(f && f->size == jpeg[0].size && memcmp(f->data, jpeg[0].data, f->size) == 0);
    CHECK(strcmp(s.url, url) == 0 && s.index == 0 && strcmp(s.key, "a.b/c") == 0);
    upm_wds_sample_free(&s);
    for (int i = 0; i < 4; i++) {
        CHECK(upm_wds_next(r, &s, &e) == 1);
        upm_wds_sample_free(&s);
    }
    CHECK(upm_wds_next(r, &s, &e) == UPM_EBADDATA && !upm_wds_broken(r));
    CHECK(strstr(e.msg, url) && strstr(e.msg, ": s4: duplicate extension \"jpg\""));
    CHECK(upm_wds_next(r, &s, &e) == 1 && s.index == 6 && strcmp(s.key, "s5") == 0);
    f = upm_wds_sample_get(&s, "empty.txt");
    CHECK(f && f->size == 0 && f->data != NULL);
    upm_wds_sample_free(&s);
    upm_wds_close(r);
}

/* ustar layout: each member is a 512-byte header plus its data rounded up to 512 bytes. */
static size_t member_offset(const member *m, size_t i)
{
    size_t off = 0;
    for (size_t k = 0; k < i; k++)
        off += 512 + (m[k].size + 511) / 512 * 512;
    return off;
}

static int rewrite(const char *from, const char *to, size_t keep, size_t corrupt_at)
{
    char a[512], b[512];
    blob x;
    tmp_path(a, sizeof a, from);
    tmp_path(b, sizeof b, to);
    if (load_file(a, &x))
        return -1;
    int ok = keep <= x.size;
    if (ok && corrupt_at) {
        ok = corrupt_at + 512 <= x.size && memcmp(x.data + corrupt_at + 257, "ustar", 5) == 0; /* a header */
        if (ok)
            memcpy(x.data + corrupt_at + 20, "#garbage#", 9); /* the checksum no longer matches */
    }
    FILE *f = ok ? fopen(b, "wb") : NULL;
    ok = f && fwrite(x.data, 1, keep, f) == keep;
    if (f)
        fclose(f);
    free(x.data);
    return ok ? 0 : -1;
}

static void test_damage(void)
{
    member m[2 * NJPEG];
    char names[2 * NJPEG][24], url[512], got[2048];
    upm_err e;
    for (int i = 0; i < NJPEG; i++) {
        snprintf(names[2 * i], 24, "k%d.jpg", i);
        snprintf(names[2 * i + 1], 24, "k%d.txt", i);
        m[2 * i] = (member){names[2 * i], 'f', jpeg[i].data, jpeg[i].size, NULL};
        m[2 * i + 1] = (member){names[2 * i + 1], 'f', "caption", 7, NULL};
    }
    size_t nm = 2 * NJPEG, total = member_offset(m, nm) + 1024;
    CHECK(write_tar("five.tar", m, nm, 0) == 0);

    /* a damaged header (sample k3's first member): k0..k2 read, then a shard error naming k2 */
    CHECK(rewrite("five.tar", "corrupt.tar", total, member_offset(m, 6)) == 0);
    tmp_path(url, sizeof url, "corrupt.tar");
    describe(url, NULL, got, sizeof got, &e);
    CHECK(strncmp(got, "k0{jpg=", 7) == 0 && strstr(got, " k2{jpg=") && strstr(got, "txt=7} ERR") && !strstr(got, "k3"));
    CHECK(e.code == UPM_EBADDATA && strstr(e.msg, url) && strstr(e.msg, "after sample \"k2\""));

    /* cut inside k3's JPEG bytes: k0..k2 read, k3 dropped, a shard error */
    CHECK(rewrite("five.tar", "cut.tar", member_offset(m, 6) + 512 + 100, 0) == 0);
    tmp_path(url, sizeof url, "cut.tar");
    describe(url, NULL, got, sizeof got, &e);
    CHECK(strstr(got, " k2{jpg=") && strstr(got, "} ERR") && !strstr(got, "k3"));
    CHECK(e.code == UPM_EBADDATA && strstr(e.msg, url) && strstr(e.msg, "runcated"));

    /* cut inside a header: k0 only */
    CHECK(rewrite("five.tar", "cuthdr.tar", member_offset(m, 2) + 100, 0) == 0);
    tmp_path(url, sizeof url, "cuthdr.tar");
    describe(url, NULL, got, sizeof got, &e);
    CHECK(strncmp(got, "k0{", 3) == 0 && strstr(got, "} ERR") && !strstr(got, "k1"));

    /* a truncated .tar.gz */
    CHECK(write_tar("five.tar.gz", m, nm, 1) == 0);
    char gz[512];
    struct stat st;
    tmp_path(gz, sizeof gz, "five.tar.gz");
    CHECK(stat(gz, &st) == 0 && rewrite("five.tar.gz", "cut.tar.gz", (size_t)st.st_size / 2, 0) == 0);
    tmp_path(url, sizeof url, "cut.tar.gz");
    describe(url, NULL, got, sizeof got, &e);
    /* libarchive's gzip filter fails as soon as its 64 KiB output window cannot be filled, so the error may
     * already come while opening */
    CHECK((strcmp(got, "OPEN-7") == 0 || (strncmp(got, "k0{", 3) == 0 && strstr(got, "} ERR"))) && !strstr(got, "k7"));
    CHECK(e.code == UPM_EBADDATA && strstr(e.msg, url) && strstr(e.msg, "truncated gzip input"));

    /* not a tar at all (a JPEG), and an empty file */
    tmp_path(url, sizeof url, "notar.tar");
    FILE *nf = fopen(url, "wb");
    CHECK(nf && fwrite(jpeg[0].data, 1, jpeg[0].size, nf) == jpeg[0].size);
    if (nf)
        fclose(nf);
    describe(url, NULL, got, sizeof got, &e);
    CHECK(strcmp(got, "OPEN-7") == 0 && strstr(e.msg, url) && strstr(e.msg, "not a readable tar archive"));
    CHECK(rewrite("five.tar", "empty.tar", 0, 0) == 0);
    tmp_path(url, sizeof url, "empty.tar");
    describe(url, NULL, got, sizeof got, &e);
    CHECK(strcmp(got, "OPEN-7") == 0);

    /* a member over the size cap makes its sample bad (its bytes are never buffered); reading goes on */
    upm_wds_opts o;
    upm_wds_opts_default(&o);
    int big = 0;
    for (int i = 1; i < NJPEG; i++)
        big = jpeg[i].size > jpeg[big].size ? i : big;
    o.max_member_size = jpeg[big].size - 1;
    tmp_path(url, sizeof url, "five.tar");
    describe(url, &o, got, sizeof got, &e);
    char bad[24];
    snprintf(bad, sizeof bad, "BAD(k%d)", big);
    CHECK(strstr(got, bad) && strstr(got, "k7") && !strstr(got, "ERR") && strstr(e.msg, "over the limit"));

    /* skip reads headers only and keeps indices */
    upm_wds *r;
    upm_wds_sample s;
    uint64_t done;
    CHECK(upm_wds_open(url, NULL, NULL, &r, &e) == 0);
    CHECK(upm_wds_skip(r, 5, &done, &e) == 0 && done == 5);
    CHECK(upm_wds_next(r, &s, &e) == 1 && s.index == 5 && strcmp(s.key, "k5") == 0);
    CHECK(upm_wds_sample_get(&s, "jpg") && memcmp(upm_wds_sample_get(&s, "jpg")->data, jpeg[5].data, jpeg[5].size) == 0);
    upm_wds_sample_free(&s);
    CHECK(upm_wds_skip(r, 10, &done, &e) == 0 && done == 2 && upm_wds_at_end(r));
    CHECK(upm_wds_next(r, &s, &e) == 0);
    upm_wds_close(r);
}

static void test_source(void)
{
    char path[512], url[600];
    upm_source *s;
    upm_err e;
    unsigned char buf[4096];
    size_t got, total = 0;
    uint64_t skipped;
    int same = 1;

    tmp_path(path, sizeof path, "five.tar");
    blob x;
    CHECK(load_file(path, &x) == 0);
    /* file:// with a percent escape ("%2E" = '.') */
    snprintf(url, sizeof url, "file://%s", path);
    memcpy(strstr(url, ".tar"), "%2Etar", 7);
    upm_source_opts so;
    upm_source_opts_default(&so);
    so.buffer_size = 1; /* raised to the minimum */
    CHECK(upm_source_open(url, &so, &s, &e) == 0);
    CHECK(upm_source_skip(s, 1000, &skipped, &e) == 0 && skipped == 1000 && upm_source_offset(s) == 1000);
    total = 1000;
    while (upm_source_read(s, buf, 777, &got, &e) == 0 && got > 0) {
        same &= total + got <= x.size && memcmp(buf, x.data + total, got) == 0;
        total += got;
    }
    CHECK(same && total == x.size && upm_source_offset(s) == x.size);
    CHECK(upm_source_skip(s, 10, &skipped, &e) == 0 && skipped == 0);
    upm_source_close(s);
    free(x.data);

    tmp_path(path, sizeof path, "missing.tar");
    CHECK(upm_source_open(path, NULL, &s, &e) == UPM_ENOTFOUND && strstr(e.msg, path));
    CHECK(upm_source_open(tmpdir, NULL, &s, &e) == UPM_EIO && strstr(e.msg, "directory"));
    const char *refused[] = {"ftp://host/shard.tar", "pipe:cat shard.tar", "gopher://host/x.tar", "s3://b/x.tar",
                             "file://otherhost/x.tar", "/data/shard-{0..9}.tar"};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        int rc = upm_source_open(refused[i], NULL, &s, &e);
        CHECK(rc == UPM_EUSAGE);
        if (rc != UPM_EUSAGE)
            fprintf(stderr, "not refused: %s\n", refused[i]);
    }
    upm_wds *w;
    CHECK(upm_wds_open("ftp://host/shard.tar", NULL, NULL, &w, &e) == UPM_EUSAGE && strstr(e.msg, "ftp"));
}

typedef struct reports {
    int n;
    char urls[8][512];
    char keys[8][64];
} reports;

static void on_report(void *ctx, const upm_stream_report *r)
{
    reports *rp = ctx;
    if (rp->n < 8) {
        snprintf(rp->urls[rp->n], sizeof rp->urls[0], "%s", r->url);
        snprintf(rp->keys[rp->n], sizeof rp->keys[0], "%s", r->key ? r->key : "-");
    }
    rp->n++;
}

/* Runs a stream to its end; returns the keys as "shard:key ..." and the final return code. */
static int stream_keys(const upm_urlpat *pat, const uint64_t *order, uint64_t n, uint64_t p, uint64_t smp,
                       const upm_shardstream_opts *o, char *out, size_t outn, upm_shardstream_counters *c, upm_err *e)
{
    upm_shardstream *st;
    upm_wds_sample s;
    size_t k = 0;
    int rc = upm_shardstream_open(pat, order, n, p, smp, o, &st, e);
    out[0] = '\0';
    if (rc)
        return rc;
    while ((rc = upm_shardstream_next(st, &s, e)) == 1) {
        const char *base = strrchr(s.url, '/');
        /* "/shard-N.tar" gives N ("/ratio.tar" gives 't') */
        k += (size_t)snprintf(out + k, outn - k, "%s%c:%s", k ? " " : "", base[7], s.key);
        upm_wds_sample_free(&s);
        if (k >= outn)
            break;
    }
    upm_shardstream_counters_get(st, c);
    upm_shardstream_close(st);
    return rc;
}

static void test_stream(void)
{
    char pattern[600], got[2048], name[32];
    upm_err e;
    upm_urlpat *pat;
    upm_shardstream_counters c;
    /* shard-N.tar holds samples "N-0" .. "N-(N+1)" (N+2 samples); shard-3.tar is missing */
    for (int sh = 0; sh < 5; sh++) {
        member m[8];
        char keys[8][24];
        for (int i = 0; i < sh + 2; i++) {
            snprintf(keys[i], 24, "%d-%d.jpg", sh, i);
            m[i] = (member){keys[i], 'f', jpeg[i].data, jpeg[i].size, NULL};
        }
        snprintf(name, sizeof name, "shard-%d.tar", sh);
        if (sh != 3)
            CHECK(write_tar(name, m, (size_t)sh + 2, 0) == 0);
    }
    snprintf(pattern, sizeof pattern, "%s/shard-{0..4}.tar", tmpdir);
    CHECK(upm_urlpat_parse(pattern, &pat, &e) == 0);
    const uint64_t order[] = {4, 0, 3, 2, 1};
    reports rp;
    memset(&rp, 0, sizeof rp);
    upm_shardstream_opts o;
    upm_shardstream_opts_default(&o);
    o.report = on_report;
    o.report_ctx = &rp;

    CHECK(stream_keys(pat, order, 5, 0, 0, &o, got, sizeof got, &c, &e) == 0);
    CHECK(strcmp(got, "4:4-0 4:4-1 4:4-2 4:4-3 4:4-4 4:4-5 0:0-0 0:0-1 2:2-0 2:2-1 2:2-2 2:2-3 1:1-0 1:1-1 1:1-2") == 0);
    CHECK(c.samples == 15 && c.bad_shards == 1 && c.shards_done == 4 && c.bad_samples == 0);
    CHECK(rp.n == 1 && strstr(rp.urls[0], "/shard-3.tar") && strcmp(rp.keys[0], "-") == 0);

    /* budget: no bad shard allowed */
    o.max_bad_shards = 0;
    int rc = stream_keys(pat, order, 5, 0, 0, &o, got, sizeof got, &c, &e);
    CHECK(rc == UPM_EBADDATA && strstr(e.msg, "dataset stream: 1 bad shards (limit 0): ") && strstr(e.msg, "shard-3.tar"));
    CHECK(strcmp(got, "4:4-0 4:4-1 4:4-2 4:4-3 4:4-4 4:4-5 0:0-0 0:0-1") == 0);
    o.max_bad_shards = 3;

    /* resume at (position 3, sample 2): positions 0..2 are not opened (shard-4 may vanish, shard 3 is not
     * reported), two samples of shard 2 are skipped */
    char s4[600], away[600];
    snprintf(s4, sizeof s4, "%s/shard-4.tar", tmpdir);
    snprintf(away, sizeof away, "%s/shard-4.away", tmpdir);
    CHECK(rename(s4, away) == 0);
    rp.n = 0;
    CHECK(stream_keys(pat, order, 5, 3, 2, &o, got, sizeof got, &c, &e) == 0);
    CHECK(strcmp(got, "2:2-2 2:2-3 1:1-0 1:1-1 1:1-2") == 0 && c.skipped_samples == 2 && rp.n == 0 && c.bad_shards == 0);
    CHECK(rename(away, s4) == 0);

    /* tell() after every sample resumes to exactly the rest of the stream */
    upm_shardstream *st;
    upm_wds_sample s;
    uint64_t pos[32], smp[32];
    int n = 0;
    CHECK(upm_shardstream_open(pat, order, 5, 0, 0, &o, &st, &e) == 0);
    while (n < 32 && upm_shardstream_next(st, &s, &e) == 1) {
        upm_wds_sample_free(&s);
        upm_shardstream_tell(st, &pos[n], &smp[n]);
        n++;
    }
    upm_shardstream_close(st);
    CHECK(n == 15 && pos[5] == 1 && smp[5] == 0 && pos[6] == 1 && smp[6] == 1 && pos[14] == 5);
    char full[2048];
    CHECK(stream_keys(pat, order, 5, 0, 0, &o, full, sizeof full, &c, &e) == 0);
    for (int i = 0; i < n; i++) {
        const char *rest = full;
        for (int k = 0; k <= i; k++)
            rest = strchr(rest, ' ') ? strchr(rest, ' ') + 1 : "";
        CHECK(stream_keys(pat, order, 5, pos[i], smp[i], &o, got, sizeof got, &c, &e) == 0 && strcmp(got, rest) == 0);
    }
    upm_urlpat_free(pat);

    /* bad-sample ratio: 2 of 10 samples have duplicate extensions */
    member m[12];
    char keys[12][24];
    for (int i = 0, k = 0; i < 10; i++) {
        snprintf(keys[k], 24, "r%d.jpg", i);
        m[k] = (member){keys[k], 'f', jpeg[i % NJPEG].data, jpeg[i % NJPEG].size, NULL};
        k++;
        if (i == 2 || i == 7) {
            m[k] = m[k - 1];
            k++;
        }
    }
    CHECK(write_tar("ratio.tar", m, 12, 0) == 0);
    snprintf(pattern, sizeof pattern, "%s/ratio.tar", tmpdir);
    CHECK(upm_urlpat_parse(pattern, &pat, &e) == 0);
    rp.n = 0;
    o.min_samples = 5;
    o.max_bad_sample_ratio = 0.5;
    CHECK(stream_keys(pat, NULL, 1, 0, 0, &o, got, sizeof got, &c, &e) == 0 && c.samples == 8 && c.bad_samples == 2);
    CHECK(rp.n == 2 && strcmp(rp.keys[0], "r2") == 0 && strcmp(rp.keys[1], "r7") == 0);
    o.max_bad_sample_ratio = 0.1;
    rc = stream_keys(pat, NULL, 1, 0, 0, &o, got, sizeof got, &c, &e);
    /* the limit is checked as soon as min_samples were met: after r0, r1, bad r2, r3, r4 */
    CHECK(rc == UPM_EBADDATA && strstr(e.msg, "dataset stream: 1 bad samples of 5 (20.00%, limit 10.00%): ") &&
          strstr(e.msg, "ratio.tar: r2: duplicate extension") && strcmp(got, "t:r0 t:r1 t:r3") == 0);
    CHECK(upm_shardstream_open(pat, (const uint64_t[]){1}, 1, 0, 0, &o, &st, &e) == UPM_EINVAL);
    upm_urlpat_free(pat);
}

static void cleanup(void)
{
    DIR *d = opendir(tmpdir);
    char path[1024];
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", tmpdir, e->d_name);
        unlink(path);
    }
    if (d)
        closedir(d);
    rmdir(tmpdir);
}

int main(void)
{
    if (load_jpegs() != 0)
        return 1;
    if (!mkdtemp(tmpdir)) {
        perror("test_wds: mkdtemp");
        return 1;
    }
    test_grouping();
    test_damage();
    test_source();
    test_stream();
    cleanup();
    for (int i = 0; i < NJPEG; i++)
        free(jpeg[i].data);
    return CHECK_RESULT("test_wds");
}
