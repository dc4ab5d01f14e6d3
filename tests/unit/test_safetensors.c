/* safetensors writer and reader: round trips of every dtype (a scalar and empty tensors included) with
 * metadata and lookups, the writer's refusals and its atomicity when the disk fails it, and every
 * kind of malformed file, written here byte by byte, refused with an error naming file and tensor. */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "safetensors.h"

static char dir[64];

static char *at(const char *name)
{
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

/* Entries in a directory other than . and .. (temporary files left behind show up here). */
static int dir_entries(const char *path)
{
    DIR *d = opendir(path);
    int n = 0;
    if (!d)
        return -1;
    for (struct dirent *e; (e = readdir(d));)
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(p, 1, n, f) == n);
    if (f)
        fclose(f);
}

/* A file of: the 8-byte length field hlen (true or not), then json, then data. */
static void raw_file_len(const char *path, uint64_t hlen, const char *json, const void *data, size_t dn)
{
    size_t jn = strlen(json);
    uint8_t *b = calloc(1, 8 + jn + dn + 1);
    memcpy(b, &hlen, 8);
    memcpy(b + 8, json, jn);
    if (dn)
        memcpy(b + 8 + jn, data, dn);
    write_bytes(path, b, 8 + jn + dn);
    free(b);
}

static void raw_file(const char *path, const char *json, const void *data, size_t dn)
{
    raw_file_len(path, strlen(json), json, data, dn);
}

/* open must fail with code, and the message must name the file and contain each needle. */
static void expect_bad_code(const char *path, int code, const char *needle, const char *needle2)
{
    upm_st_file *f = (upm_st_file *)1;
    upm_err err = {0};
    int rc = upm_st_open(path, &f, &err);
    CHECK(rc == code);
    CHECK(f == NULL);
    CHECK(strstr(err.msg, path) != NULL);
    if (needle && !strstr(err.msg, needle)) {
        fprintf(stderr, "  message '%s' lacks '%s'\n", err.msg, needle);
        failures++;
    }
    if (needle2 && !strstr(err.msg, needle2)) {
        fprintf(stderr, "  message '%s' lacks '%s'\n", err.msg, needle2);
        failures++;
    }
    CHECK(strchr(err.msg, '\n') == NULL);
    if (rc == 0)
        upm_st_close(f);
}

static void expect_bad(const char *path, const char *needle, const char *needle2)
{
    expect_bad_code(path, UPM_EBADDATA, needle, needle2);
}

static int same_tensor(const upm_st_tensor *a, const upm_st_tensor *b)
{
    if (strcmp(a->name, b->name) || a->dtype != b->dtype || a->ndim != b->ndim || a->nbytes != b->nbytes)
        return 0;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d])
            return 0;
    return a->nbytes == 0 || !memcmp(a->data, b->data, a->nbytes);
}

static void test_dtypes(void)
{
    static const size_t sizes[] = {4, 2, 2, 8, 8, 4, 2, 1, 1, 1};
    static const char *const names[] = {"F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL"};
    for (int i = 0; i < UPM_ST_NDTYPES; i++) {
        upm_st_dtype t;
        CHECK(upm_st_dtype_size((upm_st_dtype)i) == sizes[i]);
        CHECK(!strcmp(upm_st_dtype_name((upm_st_dtype)i), names[i]));
        CHECK(upm_st_dtype_parse(names[i], &t) == 0 && t == (upm_st_dtype)i);
    }
    upm_st_dtype t;
    CHECK(upm_st_dtype_size((upm_st_dtype)UPM_ST_NDTYPES) == 0);
    CHECK(!strcmp(upm_st_dtype_name((upm_st_dtype)-1), "?"));
    CHECK(upm_st_dtype_parse("f32", &t) == -1 && upm_st_dtype_parse("U16", &t) == -1);
}

static void test_round_trip(void)
{
    float f32[6] = {1.5f, -2.25f, 3e-8f, 1e30f, 0.0f, -0.0f}, scalar = 42.0f;
    uint16_t f16[5] = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x7e00}, bf16[2] = {0x3f80, 0xff80};
    double f64[3] = {1.0 / 3.0, -1e300, 5e-324};
    int64_t i64[2] = {INT64_MIN, INT64_MAX};
    int32_t i32[4] = {-1, 0, 1, INT32_MAX};
    int16_t i16[3] = {-32768, 7, 32767};
    int8_t i8[7] = {-128, -1, 0, 1, 2, 3, 127};
    uint8_t u8[4] = {0, 1, 254, 255}, b8[3] = {1, 0, 1};
    upm_st_tensor t[] = {
        {"layers.0.w", UPM_ST_F32, 2, {2, 3}, f32, sizeof f32},
        {"half", UPM_ST_F16, 1, {5}, f16, sizeof f16}, /* 10 bytes: later tensors start unaligned */
        {"bf", UPM_ST_BF16, 3, {1, 2, 1}, bf16, sizeof bf16},
        {"empty", UPM_ST_F32, 1, {0}, NULL, 0},
        {"empty2", UPM_ST_I64, 3, {3, 0, 2}, f32, 0},
        {"f64", UPM_ST_F64, 1, {3}, f64, sizeof f64},
        {"step", UPM_ST_I64, 1, {2}, i64, sizeof i64},
        {"i32", UPM_ST_I32, 2, {2, 2}, i32, sizeof i32},
        {"i16", UPM_ST_I16, 1, {3}, i16, sizeof i16},
        {"i8", UPM_ST_I8, 1, {7}, i8, sizeof i8},
        {"u8", UPM_ST_U8, 4, {1, 2, 2, 1}, u8, sizeof u8},
        {"mask", UPM_ST_BOOL, 1, {3}, b8, sizeof b8},
        {"loss_scale", UPM_ST_F32, 0, {0}, &scalar, sizeof scalar},
        {"name with \"quotes\", \\ and ünïcode \xe2\x82\xac", UPM_ST_U8, 1, {1}, u8, 1},
        {"tail_empty", UPM_ST_BOOL, 2, {0, 4}, NULL, 0},
    };
    int n = (int)(sizeof t / sizeof t[0]);
    const char *meta[] = {"format", "pt", "step", "1200", "note", "línea \"1\"\n\ttab", "empty", "", NULL};
    upm_err err = {0};
    const char *path = at("rt.safetensors");
    CHECK(upm_st_write(path, t, n, meta, &err) == 0);
    CHECK(dir_entries(dir) == 1);

    size_t fn;
    uint8_t *raw = check_read_file(path, &fn);
    uint64_t hlen = 0;
    size_t data = 0;
    for (int i = 0; i < n; i++)
        data += t[i].nbytes;
    if (raw && fn >= 8) {
        memcpy(&hlen, raw, 8);
        CHECK(hlen % 8 == 0 && raw[8] == '{');
        CHECK(fn == 8 + hlen + data);
        CHECK(memcmp(raw + 8 + hlen, f32, sizeof f32) == 0);
        CHECK(raw[8 + hlen - 1] == ' ' || raw[8 + hlen - 1] == '}');
    }
    free(raw);

    upm_st_file *f = NULL;
    CHECK(upm_st_open(path, &f, &err) == 0);
    if (!f) {
        fprintf(stderr, "open: %s\n", err.msg);
        failures++;
        return;
    }
    CHECK(upm_st_count(f) == n);
    CHECK(upm_st_data_bytes(f) == data);
    for (int i = 0; i < n; i++) {
        const upm_st_tensor *r = upm_st_at(f, i); /* written in this order, so data-offset order */
        CHECK(r && same_tensor(r, &t[i]));
        CHECK(upm_st_find(f, t[i].name) == r);
    }
    CHECK(upm_st_at(f, n) == NULL && upm_st_at(f, -1) == NULL);
    CHECK(upm_st_find(f, "missing") == NULL && upm_st_find(f, "") == NULL && upm_st_find(f, "layers.0") == NULL);
    const upm_st_tensor *s = upm_st_find(f, "loss_scale");
    float sv = 0; /* memcpy: after the 10-byte F16 tensor, later data is not 4-byte aligned */
    if (s && s->nbytes == 4)
        memcpy(&sv, s->data, 4);
    CHECK(s && s->ndim == 0 && s->nbytes == 4 && sv == 42.0f);
    CHECK(upm_st_meta_count(f) == 4);
    for (int i = 0; i < 4; i++) {
        CHECK(!strcmp(upm_st_meta(f, meta[2 * i]), meta[2 * i + 1]));
        CHECK(!strcmp(upm_st_meta_key(f, i), meta[2 * i]) && !strcmp(upm_st_meta_value(f, i), meta[2 * i + 1]));
    }
    CHECK(upm_st_meta(f, "absent") == NULL && upm_st_meta_key(f, 4) == NULL);
    upm_st_close(f);
    unlink(path);
}

/* No metadata and no tensors, written over an existing file: a valid, empty file. */
static void test_empty_file(void)
{
    uint8_t x[4] = {0};
    upm_st_tensor t = {"x", UPM_ST_U8, 1, {4}, x, 4};
    const char *path = at("empty.safetensors");
    upm_err err;
    upm_st_file *f = NULL;
    size_t fn;
    uint8_t *raw;
    CHECK(upm_st_write(path, &t, 1, NULL, &err) == 0);
    CHECK(upm_st_write(path, NULL, 0, NULL, &err) == 0);
    raw = check_read_file(path, &fn);
    CHECK(raw && fn == 16 && !memcmp(raw + 8, "{}      ", 8));
    free(raw);
    CHECK(upm_st_open(path, &f, &err) == 0);
    CHECK(f && upm_st_count(f) == 0 && upm_st_meta_count(f) == 0 && upm_st_data_bytes(f) == 0);
    CHECK(f && upm_st_find(f, "x") == NULL && upm_st_meta(f, "format") == NULL);
    upm_st_close(f);
    CHECK(dir_entries(dir) == 1);
    unlink(path);
}

/* Every refusal is UPM_EINVAL before anything touches the disk. */
static void test_write_refusals(void)
{
    float x[4] = {0};
    const char *path = at("refused.safetensors");
    upm_err err;
    struct {
        upm_st_tensor t[2];
        int n;
        const char *const *meta;
        const char *needle;
    } cases[] = {
        {{{"a", UPM_ST_F32, 1, {4}, x, 16}, {"a", UPM_ST_F32, 1, {4}, x, 16}}, 2, NULL, "given twice"},
        {{{"", UPM_ST_F32, 1, {4}, x, 16}}, 1, NULL, "empty name"},
        {{{NULL, UPM_ST_F32, 1, {4}, x, 16}}, 1, NULL, "empty name"},
        {{{"__metadata__", UPM_ST_F32, 1, {4}, x, 16}}, 1, NULL, "reserved"},
        {{{"a", UPM_ST_F32, 1, {4}, x, 12}}, 1, NULL, "need 16 bytes, not 12"},
        {{{"a", UPM_ST_F32, 2, {2, 2}, x, 8}}, 1, NULL, "need 16 bytes"},
        {{{"a", UPM_ST_F32, 1, {-4}, x, 16}}, 1, NULL, "negative"},
        {{{"a", UPM_ST_F32, 9, {1, 1, 1, 1, 1, 1, 1, 1}, x, 4}}, 1, NULL, "9 dimensions"},
        {{{"a", UPM_ST_F32, -1, {0}, x, 4}}, 1, NULL, "dimensions"},
        {{{"a", (upm_st_dtype)99, 1, {4}, x, 16}}, 1, NULL, "invalid dtype"},
        {{{"a", UPM_ST_F32, 1, {4}, NULL, 16}}, 1, NULL, "no data"},
        {{{"a", UPM_ST_F64, 3, {1 << 30, 1 << 30, 1 << 30}, x, 16}}, 1, NULL, "overflows"},
        {{{"bad \xff utf8", UPM_ST_F32, 1, {4}, x, 16}}, 1, NULL, "UTF-8"},
        {{{"a", UPM_ST_F32, 1, {4}, x, 16}}, 1, (const char *const[]){"k", NULL}, "has no value"},
        {{{"a", UPM_ST_F32, 1, {4}, x, 16}}, 1, (const char *const[]){"k", "1", "j", "2", "k", "3", NULL}, "twice"},
        {{{"a", UPM_ST_F32, 1, {4}, x, 16}}, 1, (const char *const[]){"k", "\xc0\x80", NULL}, "UTF-8"},
        {{{"a", UPM_ST_F32, 1, {4}, x, 16}}, -1, NULL, "invalid tensor list"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        upm_err_clear(&err);
        int rc = upm_st_write(path, cases[i].t, cases[i].n, cases[i].meta, &err);
        CHECK(rc == UPM_EINVAL);
        if (!strstr(err.msg, cases[i].needle)) {
            fprintf(stderr, "  write case %zu: message '%s' lacks '%s'\n", i, err.msg, cases[i].needle);
            failures++;
        }
        CHECK(access(path, F_OK) != 0);
        CHECK(dir_entries(dir) == 0);
    }
}

/* A write that fails on the disk (file size limit mid-stream, rename onto a directory, missing
 * directory, and an unwritable one when not root) leaves no temporary file and the old file as it was. */
static void test_write_failures(void)
{
    float small[4] = {1, 2, 3, 4};
    upm_st_tensor keep_t = {"w", UPM_ST_F32, 1, {4}, small, sizeof small};
    const char *keep = at("keep.safetensors");
    upm_err err;
    CHECK(upm_st_write(keep, &keep_t, 1, NULL, &err) == 0);
    size_t n0, n1;
    uint8_t *before = check_read_file(keep, &n0);

    static float big[1 << 16];
    for (int i = 0; i < 1 << 16; i++)
        big[i] = (float)i;
    upm_st_tensor big_t = {"w", UPM_ST_F32, 1, {1 << 16}, big, sizeof big};
    struct rlimit old, lim;
    CHECK(getrlimit(RLIMIT_FSIZE, &old) == 0);
    lim = old;
    lim.rlim_cur = 8192;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    int rc = upm_st_write(keep, &big_t, 1, NULL, &err);
    CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0);
    signal(SIGXFSZ, prev);
    CHECK(rc == UPM_EIO && strstr(err.msg, "cannot write") != NULL);
    CHECK(dir_entries(dir) == 1);
    uint8_t *after = check_read_file(keep, &n1);
    CHECK(before && after && n0 == n1 && !memcmp(before, after, n0));
    free(after);

    /* rename(2) cannot replace a non-empty directory: the fully written temporary file must go. */
    const char *sub = at("sub");
    CHECK(mkdir(sub, 0755) == 0);
    char inner[300];
    snprintf(inner, sizeof inner, "%s/inner", sub);
    write_bytes(inner, "x", 1);
    rc = upm_st_write(sub, &keep_t, 1, NULL, &err);
    CHECK(rc == UPM_EIO && strstr(err.msg, "cannot rename") != NULL);
    CHECK(dir_entries(dir) == 2 && dir_entries(sub) == 1);

    char missing[300];
    snprintf(missing, sizeof missing, "%s/nodir/x.safetensors", dir);
    rc = upm_st_write(missing, &keep_t, 1, NULL, &err);
    CHECK(rc == UPM_EIO && strstr(err.msg, "cannot create") != NULL);
    CHECK(dir_entries(dir) == 2);

    if (geteuid() != 0) { /* root ignores directory permissions */
        snprintf(missing, sizeof missing, "%s/keep.safetensors", sub);
        CHECK(chmod(sub, 0555) == 0);
        rc = upm_st_write(missing, &keep_t, 1, NULL, &err);
        CHECK(rc == UPM_EIO);
        CHECK(chmod(sub, 0755) == 0);
        CHECK(dir_entries(sub) == 1);
    }
    unlink(inner);
    rmdir(sub);
    after = check_read_file(keep, &n1);
    CHECK(before && after && n0 == n1 && !memcmp(before, after, n0));
    free(before);
    free(after);
    unlink(keep);
}

/* The length field, the JSON text and the entries' types. */
static void test_malformed_framing(void)
{
    const char *p = at("bad.safetensors");
    uint8_t data[64] = {0};

    write_bytes(p, "", 0);
    expect_bad(p, "too short", NULL);
    write_bytes(p, "\x10\0\0\0\0", 5);
    expect_bad(p, "too short", NULL);
    raw_file_len(p, 1000, "{}", data, 10);
    expect_bad(p, "header length 1000 is larger than the 12 bytes", NULL);
    raw_file_len(p, (uint64_t)1 << 40, "{}", NULL, 0);
    expect_bad(p, "limit", NULL);
    raw_file_len(p, 0, "", NULL, 0);
    expect_bad(p, "does not start with '{'", NULL);
    raw_file(p, "[1, 2]", NULL, 0);
    expect_bad(p, "does not start with '{'", NULL);
    raw_file(p, "{\"a\": 1", NULL, 0);
    expect_bad(p, "not valid JSON", NULL);
    raw_file(p, "{} x", NULL, 0);
    expect_bad(p, "unexpected text after", NULL);
    raw_file(p, "{\"a\": 5}", NULL, 0);
    expect_bad(p, "'a'", "not a JSON object");
    raw_file(p, "{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", data, 1);
    expect_bad(p, "'a'", "unsupported dtype 'F8_E4M3'");
    raw_file(p, "{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,1]}}", data, 1);
    expect_bad(p, "'a'", "\"dtype\"");
    unlink(p);
}

/* Shapes, offsets and the layout of the data section. */
static void test_malformed_entries(void)
{
    const char *p = at("bad.safetensors");
    uint8_t data[64] = {0};
    const char *e4 = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";

    raw_file(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", data, 4);
    expect_bad(p, "'a'", "shape[0]");
    raw_file(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,1.5],\"data_offsets\":[0,4]}}", data, 4);
    expect_bad(p, "'a'", "shape[1]");
    raw_file(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,4]}}", data, 4);
    expect_bad(p, "'a'", "shape[0]");
    raw_file(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":\"4\",\"data_offsets\":[0,4]}}", data, 4);
    expect_bad(p, "'a'", "\"shape\"");
    raw_file(p, "{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296,4096],\"data_offsets\":[0,8]}}", data, 8);
    expect_bad(p, "'a'", "overflows");
    raw_file(p, "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", data, 1);
    expect_bad(p, "'a'", "more than 8 dimensions");
    raw_file(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", data, 4);
    expect_bad(p, "'a'", "out of order");
    raw_file(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", data, 4);
    expect_bad(p, "'a'", "two numbers");
    raw_file(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", data, 4);
    expect_bad(p, "'a'", "two numbers");
    raw_file(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,9007199254740994]}}", data, 4);
    expect_bad(p, "'a'", "data_offsets are not integers");
    raw_file(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", data, 4);
    expect_bad(p, "'a'", "need 8 bytes but data_offsets [0, 4] span 4");
    raw_file(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
             data, 12);
    expect_bad(p, "tensor 'b'", "overlaps tensor 'a'");
    raw_file(p, "{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]},"
                "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
             data, 12);
    expect_bad(p, "hole", "bytes [4, 8) before tensor 'b'");
    raw_file(p, e4, data, 8);
    expect_bad(p, "4 trailing bytes", NULL);
    raw_file(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", data, 4);
    expect_bad(p, "'a'", "run past the data section of 4 bytes");
    raw_file(p, "{\"__metadata__\":{\"k\":1},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", data, 4);
    expect_bad(p, "metadata 'k'", "not a string");
    raw_file(p, "{\"__metadata__\":[\"k\"]}", NULL, 0);
    expect_bad(p, "__metadata__", "not a JSON object");
    raw_file(p, "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", NULL, 0);
    expect_bad(p, "metadata key 'k'", "twice");
    raw_file(p, "{\"__metadata__\":{},\"__metadata__\":{}}", NULL, 0);
    expect_bad(p, "__metadata__", "twice");
    raw_file(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
             data, 8);
    expect_bad(p, "tensor 'a'", "twice");
    raw_file(p, "{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", data, 4);
    expect_bad(p, "empty name", NULL);
    raw_file(p, "{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", data, 4);
    expect_bad(p, "\\u0000", NULL);
    raw_file(p, "{\"a\\\\u0000b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", data, 4);
    upm_st_file *f = NULL;
    upm_err err;
    CHECK(upm_st_open(p, &f, &err) == 0 && f && upm_st_find(f, "a\\u0000b") != NULL); /* an escaped backslash */
    upm_st_close(f);
    raw_file(p, "{\"a\xff\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", data, 4);
    expect_bad(p, "UTF-8", NULL);
    raw_file(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}\x01", data, 4);
    expect_bad(p, "UTF-8", NULL);

    /* Padding with JSON whitespace and unknown keys in an entry are accepted, as the reference does. */
    raw_file(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}\n \t\r   ", data, 4);
    CHECK(upm_st_open(p, &f, &err) == 0 && f && upm_st_count(f) == 1);
    upm_st_close(f);

    expect_bad_code(dir, UPM_EIO, "not a regular file", NULL);
    expect_bad_code(at("absent.safetensors"), UPM_EIO, "cannot open", NULL);
    unlink(p);
}

/* Every truncation of a valid file, and every single-byte change to its header, is either refused or
 * (for changes that keep it valid) opens with all tensors inside the file; never a crash. */
static void test_damage_sweep(void)
{
    float w[6] = {1, 2, 3, 4, 5, 6};
    uint16_t h[3] = {1, 2, 3};
    upm_st_tensor t[] = {{"w", UPM_ST_F32, 2, {3, 2}, w, sizeof w}, {"h", UPM_ST_BF16, 1, {3}, h, sizeof h},
                         {"e", UPM_ST_I8, 1, {0}, NULL, 0}};
    const char *meta[] = {"k", "v", NULL};
    const char *good = at("good.safetensors"), *p = at("damaged.safetensors");
    upm_err err;
    CHECK(upm_st_write(good, t, 3, meta, &err) == 0);
    size_t n;
    uint8_t *b = check_read_file(good, &n);
    if (!b)
        return;
    for (size_t len = 0; len < n; len++) {
        write_bytes(p, b, len);
        upm_st_file *f = NULL;
        CHECK(upm_st_open(p, &f, &err) == UPM_EBADDATA && f == NULL);
    }
    static const uint8_t repl[] = {0, ' ', '"', '{', '}', '[', ']', ',', ':', '0', '9', '-', 'e', 0x80, 0xff};
    uint64_t hlen;
    memcpy(&hlen, b, 8);
    int opened = 0;
    for (size_t i = 0; i < 8 + hlen && i < n; i++) {
        uint8_t orig = b[i];
        for (size_t r = 0; r < sizeof repl; r++) {
            if (repl[r] == orig)
                continue;
            b[i] = repl[r];
            write_bytes(p, b, n);
            upm_st_file *f = NULL;
            int rc = upm_st_open(p, &f, &err);
            CHECK(rc == 0 || rc == UPM_EBADDATA);
            if (rc == 0) {
                opened++;
                size_t sum = 0;
                for (int k = 0; k < upm_st_count(f); k++)
                    sum += upm_st_at(f, k)->nbytes;
                CHECK(sum == upm_st_data_bytes(f));
                upm_st_close(f);
            }
        }
        b[i] = orig;
    }
    CHECK(opened > 0); /* changes inside the metadata strings keep the file valid */
    free(b);
    unlink(good);
    unlink(p);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/upm-st-test-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_dtypes();
    test_round_trip();
    test_empty_file();
    test_write_refusals();
    test_write_failures();
    test_malformed_framing();
    test_malformed_entries();
    test_damage_sweep();
    CHECK(dir_entries(dir) == 0);
    rmdir(dir);
    return CHECK_RESULT("test_safetensors");
}
