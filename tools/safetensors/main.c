/* upmoe-safetensors: lists, validates and re-writes safetensors files (upmoe's checkpoints and any
 * other) with the same reader and writer the trainer uses, so a checkpoint can be inspected or
 * checked without Python, and a file from another writer can be rewritten in upmoe's canonical form. */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

#define PROG "upmoe-safetensors"

static const char *const usage =
    "usage: " PROG " ls FILE [--json]\n"
    "       " PROG " check FILE\n"
    "       " PROG " copy IN OUT\n"
    "\n"
    "Reads safetensors files (an 8-byte header length, a JSON header, raw little-endian tensors) after\n"
    "validating all of them: header length, JSON, dtypes, shapes against offsets, no holes, overlaps or\n"
    "trailing bytes, string-only metadata.\n"
    "\n"
    "  ls FILE        one line per tensor in data order: name, dtype, shape, bytes; then the metadata\n"
    "  ls FILE --json the same as one JSON object: {\"tensors\": [{\"name\", \"dtype\", \"shape\",\n"
    "                 \"data_offsets\", \"bytes\"}, ...], \"metadata\": {...}, \"data_bytes\": N}\n"
    "  check FILE     validate only: exit 0 and one summary line, or exit 1 and the error\n"
    "  copy IN OUT    re-write IN to OUT through upmoe's reader and writer (atomically): same tensors,\n"
    "                 order and metadata, with a compact header padded to 8 bytes; e.g. to normalise a\n"
    "                 file from another writer. IN and OUT may be the same file.\n"
    "  --help         this text    --version   the version of upmoe and of cJSON\n"
    "exit status: 0 ok, 1 error (an invalid or unreadable file), 2 usage error\n";

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, PROG ": error: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see '" PROG " --help')\n");
    return 2;
}

static int fail(const upm_err *err)
{
    fprintf(stderr, PROG ": error: %s\n", err->msg);
    return 1;
}

static void print_shape(const upm_st_tensor *t, char *buf, size_t n)
{
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < t->ndim && k < n; d++)
        k += (size_t)snprintf(buf + k, n - k, "%s%" PRId64, d ? ", " : "", t->shape[d]);
    if (k < n)
        snprintf(buf + k, n - k, "]");
}

/* Names and metadata go out one per line: control characters are shown escaped (\n, \x01), and
 * widths count characters rather than UTF-8 bytes so that columns line up. */
static int put_text(const char *s, int width)
{
    int w = 0;
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '\n' || *c == '\t' || *c == '\r')
            w += printf("\\%c", *c == '\n' ? 'n' : *c == '\t' ? 't' : 'r');
        else if (*c < 0x20 || *c == 0x7f)
            w += printf("\\x%02x", *c);
        else
            putchar(*c), w += (*c & 0xc0) != 0x80;
    }
    for (int k = w; k < width; k++)
        putchar(' ');
    return w;
}

static int text_width(const char *s)
{
    int w = 0;
    for (const unsigned char *c = (const unsigned char *)s; *c; c++)
        w += *c == '\n' || *c == '\t' || *c == '\r' ? 2 : *c < 0x20 || *c == 0x7f ? 4 : (*c & 0xc0) != 0x80;
    return w;
}

static void ls_text(const upm_st_file *f)
{
    int n = upm_st_count(f), wname = 4, wshape = 5;
    char shape[UPM_ST_MAX_DIMS * 24 + 4];
    for (int i = 0; i < n; i++) {
        const upm_st_tensor *t = upm_st_at(f, i);
        print_shape(t, shape, sizeof shape);
        int ln = text_width(t->name), ls = (int)strlen(shape);
        wname = ln > wname ? (ln < 60 ? ln : 60) : wname;
        wshape = ls > wshape ? ls : wshape;
    }
    for (int i = 0; i < n; i++) {
        const upm_st_tensor *t = upm_st_at(f, i);
        print_shape(t, shape, sizeof shape);
        put_text(t->name, wname);
        printf("  %-4s  %-*s  %zu\n", upm_st_dtype_name(t->dtype), wshape, shape, t->nbytes);
    }
    if (upm_st_meta_count(f))
        printf("metadata:\n");
    for (int i = 0; i < upm_st_meta_count(f); i++) {
        printf("  ");
        put_text(upm_st_meta_key(f, i), 0);
        printf(": ");
        put_text(upm_st_meta_value(f, i), 0);
        putchar('\n');
    }
    printf("%d tensors, %zu bytes of data\n", n, upm_st_data_bytes(f));
}

/* A JSON integer with exact decimal text (cJSON's own numbers are doubles). */
static cJSON *json_int(uint64_t v)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    return cJSON_CreateRaw(buf);
}

static cJSON *tensor_json(const upm_st_tensor *t, uint64_t begin)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", t->name);
    cJSON_AddStringToObject(o, "dtype", upm_st_dtype_name(t->dtype));
    cJSON *shape = cJSON_AddArrayToObject(o, "shape"), *offs = cJSON_AddArrayToObject(o, "data_offsets");
    for (int d = 0; d < t->ndim; d++)
        cJSON_AddItemToArray(shape, json_int((uint64_t)t->shape[d]));
    cJSON_AddItemToArray(offs, json_int(begin));
    cJSON_AddItemToArray(offs, json_int(begin + t->nbytes));
    cJSON_AddItemToObject(o, "bytes", json_int(t->nbytes));
    return o;
}

/* Builds the whole --json answer; returns 0, or 1 when memory ran out part way (cJSON then drops
 * items silently, so the printed text is checked for completeness by re-parsing it). */
static int ls_json(const upm_st_file *f)
{
    cJSON *root = cJSON_CreateObject(), *tensors = cJSON_AddArrayToObject(root, "tensors");
    cJSON *meta = cJSON_AddObjectToObject(root, "metadata");
    uint64_t off = 0;
    for (int i = 0; i < upm_st_count(f); i++) {
        const upm_st_tensor *t = upm_st_at(f, i);
        cJSON_AddItemToArray(tensors, tensor_json(t, off));
        off += t->nbytes;
    }
    for (int i = 0; i < upm_st_meta_count(f); i++)
        cJSON_AddStringToObject(meta, upm_st_meta_key(f, i), upm_st_meta_value(f, i));
    cJSON_AddItemToObject(root, "data_bytes", json_int(upm_st_data_bytes(f)));
    char *s = cJSON_PrintUnformatted(root);
    cJSON *back = s ? cJSON_Parse(s) : NULL;
    int ok = back && cJSON_GetArraySize(cJSON_GetObjectItem(back, "tensors")) == upm_st_count(f) &&
             cJSON_GetArraySize(cJSON_GetObjectItem(back, "metadata")) == upm_st_meta_count(f);
    if (ok)
        printf("%s\n", s);
    else
        fprintf(stderr, PROG ": error: out of memory printing the listing\n");
    cJSON_Delete(back);
    cJSON_free(s);
    cJSON_Delete(root);
    return ok ? 0 : 1;
}

static int copy_file(const upm_st_file *f, const char *out, upm_err *err)
{
    int n = upm_st_count(f), nm = upm_st_meta_count(f);
    upm_st_tensor *t = malloc(((size_t)n + 1) * sizeof *t);
    const char **meta = malloc((2 * (size_t)nm + 1) * sizeof *meta);
    int rc;
    if (!t || !meta) {
        rc = upm_errf(err, UPM_ENOMEM, "out of memory copying to %s", out);
    } else {
        for (int i = 0; i < n; i++)
            t[i] = *upm_st_at(f, i);
        for (int i = 0; i < nm; i++) {
            meta[2 * i] = upm_st_meta_key(f, i);
            meta[2 * i + 1] = upm_st_meta_value(f, i);
        }
        meta[2 * nm] = NULL;
        rc = upm_st_write(out, t, n, meta, err);
    }
    free(t);
    free(meta);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage_error("%s", "a command is required: ls, check or copy");
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        fputs(usage, stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf(PROG " " UPMOE_VERSION " (cJSON %s)\n", cJSON_Version());
        return 0;
    }
    const char *pos[2] = {NULL, NULL};
    int npos = 0, json = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--json") && !strcmp(cmd, "ls"))
            json = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(usage, stdout);
            return 0;
        } else if (argv[i][0] == '-' && argv[i][1])
            return usage_error("unknown option %s", argv[i]);
        else if (npos < 2)
            pos[npos++] = argv[i];
        else
            return usage_error("unexpected argument %s", argv[i]);
    }
    int want = !strcmp(cmd, "copy") ? 2 : (!strcmp(cmd, "ls") || !strcmp(cmd, "check")) ? 1 : 0;
    if (!want)
        return usage_error("unknown command '%s' (commands: ls, check, copy)", cmd);
    if (npos != want)
        return usage_error(want == 2 ? "%s needs IN and OUT" : "%s needs one FILE", cmd);

    upm_err err = {0};
    upm_st_file *f = NULL;
    if (upm_st_open(pos[0], &f, &err) != 0)
        return fail(&err);
    int rc = 0;
    if (!strcmp(cmd, "ls") && json)
        rc = ls_json(f);
    else if (!strcmp(cmd, "ls"))
        ls_text(f);
    else if (!strcmp(cmd, "check"))
        printf("%s: ok, %d tensors, %zu bytes of data\n", pos[0], upm_st_count(f), upm_st_data_bytes(f));
    else if (copy_file(f, pos[1], &err) != 0)
        rc = fail(&err);
    upm_st_close(f);
    return rc;
}
