/* safetensors reader and writer (see safetensors.h). The reader trusts nothing in the file: every
 * length, offset and shape is checked before a byte of data is handed out, so a damaged or hostile
 * checkpoint gives an error naming the file and tensor, never a crash or an out-of-bounds read. */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "text.h"

/* The format stores little-endian data and header length; tensors are handed out as views into the
 * mapping, which is only right on a little-endian host. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c supports little-endian hosts only"
#endif

static const struct {
    const char *name;
    size_t size;
} dtypes[UPM_ST_NDTYPES] = {
    [UPM_ST_F32] = {"F32", 4}, [UPM_ST_F16] = {"F16", 2}, [UPM_ST_BF16] = {"BF16", 2}, [UPM_ST_F64] = {"F64", 8},
    [UPM_ST_I64] = {"I64", 8}, [UPM_ST_I32] = {"I32", 4}, [UPM_ST_I16] = {"I16", 2},  [UPM_ST_I8] = {"I8", 1},
    [UPM_ST_U8] = {"U8", 1},   [UPM_ST_BOOL] = {"BOOL", 1},
};

static const char metadata_key[] = "__metadata__";

size_t upm_st_dtype_size(upm_st_dtype t)
{
    return (unsigned)t < UPM_ST_NDTYPES ? dtypes[t].size : 0;
}

const char *upm_st_dtype_name(upm_st_dtype t)
{
    return (unsigned)t < UPM_ST_NDTYPES ? dtypes[t].name : "?";
}

int upm_st_dtype_parse(const char *s, upm_st_dtype *out)
{
    for (int i = 0; i < UPM_ST_NDTYPES; i++)
        if (!strcmp(s, dtypes[i].name)) {
            *out = (upm_st_dtype)i;
            return 0;
        }
    return -1;
}

/* Names go into one-line error messages: cut long ones and hide control characters. */
static const char *shown(const char *s, char buf[static 96])
{
    size_t i = 0;
    for (; s[i] && i < 80; i++)
        buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    strcpy(buf + i, s[i] ? "..." : "");
    return buf;
}

/* Strict UTF-8 (common/text.c). With json set, raw control characters other than JSON whitespace are
 * refused too (JSON allows none inside strings). */
static int utf8_valid(const unsigned char *s, size_t n, int json)
{
    for (size_t i = 0; json && i < n; i++)
        if (s[i] < 0x20 && s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
            return 0;
    return upm_utf8_valid((const char *)s, n, NULL);
}

/* A "\u0000" escape would cut a name short once decoded into a C string, so two different JSON names
 * could become one; such headers are refused. */
static int has_nul_escape(const char *h, size_t n)
{
    for (size_t i = 0; i + 6 <= n; i++) {
        if (h[i] != '\\')
            continue;
        if (h[i + 1] == 'u' && !memcmp(h + i + 2, "0000", 4))
            return 1;
        i++; /* skip the escaped character, so "\\u0000" (a backslash, then text) is not taken */
    }
    return 0;
}

/* Bytes of a tensor of this shape: 0 ok, -1 negative or too large dimension, -2 overflow. */
static int shape_bytes(const int64_t *shape, int ndim, size_t esize, uint64_t *out)
{
    uint64_t count = 1;
    int zero = 0;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || shape[d] > UPM_ST_MAX_INT)
            return -1;
        zero |= shape[d] == 0;
    }
    if (zero) {
        *out = 0;
        return 0;
    }
    for (int d = 0; d < ndim; d++)
        if (__builtin_mul_overflow(count, (uint64_t)shape[d], &count))
            return -2;
    if (__builtin_mul_overflow(count, (uint64_t)esize, &count) || count > SIZE_MAX)
        return -2;
    *out = count;
    return 0;
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* ---------------------------------------------------------------------------------------------- */
/* Writer                                                                                          */

static int check_tensor(const char *path, const upm_st_tensor *t, upm_err *err)
{
    char b[96];
    if (!t->name || !t->name[0])
        return upm_errf(err, UPM_EINVAL, "%s: a tensor has an empty name", path);
    const char *nm = shown(t->name, b);
    if (!utf8_valid((const unsigned char *)t->name, strlen(t->name), 0))
        return upm_errf(err, UPM_EINVAL, "%s: tensor name '%s' is not valid UTF-8", path, nm);
    if (!strcmp(t->name, metadata_key))
        return upm_errf(err, UPM_EINVAL, "%s: '%s' is reserved and cannot name a tensor", path, metadata_key);
    if ((unsigned)t->dtype >= UPM_ST_NDTYPES)
        return upm_errf(err, UPM_EINVAL, "%s: tensor '%s': invalid dtype %d", path, nm, (int)t->dtype);
    if (t->ndim < 0 || t->ndim > UPM_ST_MAX_DIMS)
        return upm_errf(err, UPM_EINVAL, "%s: tensor '%s': %d dimensions (0 to %d allowed)", path, nm, t->ndim,
                        UPM_ST_MAX_DIMS);
    uint64_t bytes;
    int rc = shape_bytes(t->shape, t->ndim, dtypes[t->dtype].size, &bytes);
    if (rc == -1)
        return upm_errf(err, UPM_EINVAL, "%s: tensor '%s': a dimension is negative or above 2^53", path, nm);
    if (rc == -2)
        return upm_errf(err, UPM_EINVAL, "%s: tensor '%s': the shape's byte count overflows", path, nm);
    if (bytes != t->nbytes)
        return upm_errf(err, UPM_EINVAL, "%s: tensor '%s': shape and dtype %s need %" PRIu64 " bytes, not %zu", path,
                        nm, dtypes[t->dtype].name, bytes, t->nbytes);
    if (t->nbytes && !t->data)
        return upm_errf(err, UPM_EINVAL, "%s: tensor '%s': no data", path, nm);
    return 0;
}

/* Sorts n names (an array the caller owns) and reports the first duplicate, or NULL. */
static const char *first_duplicate(const char **names, size_t n)
{
    qsort(names, n, sizeof *names, cmp_str_ptr);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(names[i - 1], names[i]))
            return names[i];
    return NULL;
}

static int check_meta(const char *path, const char *const *meta, size_t *npairs, upm_err *err)
{
    char b[96];
    size_t n = 0;
    for (; meta && meta[2 * n]; n++) {
        const char *k = meta[2 * n], *v = meta[2 * n + 1];
        if (!v)
            return upm_errf(err, UPM_EINVAL, "%s: metadata key '%s' has no value", path, shown(k, b));
        if (!utf8_valid((const unsigned char *)k, strlen(k), 0) || !utf8_valid((const unsigned char *)v, strlen(v), 0))
            return upm_errf(err, UPM_EINVAL, "%s: metadata '%s' is not valid UTF-8", path, shown(k, b));
    }
    *npairs = n;
    if (n < 2)
        return 0;
    const char **keys = malloc(n * sizeof *keys);
    if (!keys)
        return upm_errf(err, UPM_ENOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < n; i++)
        keys[i] = meta[2 * i];
    const char *dup = first_duplicate(keys, n);
    int rc = dup ? upm_errf(err, UPM_EINVAL, "%s: metadata key '%s' given twice", path, shown(dup, b)) : 0;
    free(keys);
    return rc;
}

static int check_all(const char *path, const upm_st_tensor *t, int n, const char *const *meta, size_t *npairs,
                     upm_err *err)
{
    if (n < 0 || (n > 0 && !t))
        return upm_errf(err, UPM_EINVAL, "%s: invalid tensor list (%d tensors)", path, n);
    for (int i = 0; i < n; i++) {
        int rc = check_tensor(path, &t[i], err);
        if (rc)
            return rc;
    }
    if (n > 1) {
        const char **names = malloc((size_t)n * sizeof *names);
        if (!names)
            return upm_errf(err, UPM_ENOMEM, "%s: out of memory", path);
        for (int i = 0; i < n; i++)
            names[i] = t[i].name;
        char b[96];
        const char *dup = first_duplicate(names, (size_t)n);
        int rc = dup ? upm_errf(err, UPM_EINVAL, "%s: tensor name '%s' given twice", path, shown(dup, b)) : 0;
        free(names);
        if (rc)
            return rc;
    }
    return check_meta(path, meta, npairs, err);
}

/* An integer JSON item with its exact decimal text (cJSON's numbers are doubles). */
static cJSON *exact_int(uint64_t v)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    return cJSON_CreateRaw(buf);
}

static cJSON *tensor_entry(const upm_st_tensor *t, uint64_t begin)
{
    cJSON *e = cJSON_CreateObject(), *shape = cJSON_CreateArray(), *offs = cJSON_CreateArray();
    int ok = e && shape && offs && cJSON_AddStringToObject(e, "dtype", dtypes[t->dtype].name);
    for (int d = 0; ok && d < t->ndim; d++)
        ok = cJSON_AddItemToArray(shape, exact_int((uint64_t)t->shape[d]));
    ok = ok && cJSON_AddItemToArray(offs, exact_int(begin)) && cJSON_AddItemToArray(offs, exact_int(begin + t->nbytes));
    if (ok && cJSON_AddItemToObject(e, "shape", shape)) {
        shape = NULL;
        if (cJSON_AddItemToObject(e, "data_offsets", offs))
            return e;
    }
    cJSON_Delete(e);
    cJSON_Delete(shape);
    cJSON_Delete(offs);
    return NULL;
}

/* The 8-byte length, the JSON header and its space padding, in one malloc'd buffer. */
static char *build_header(const upm_st_tensor *t, int n, const char *const *meta, size_t npairs, size_t *len)
{
    cJSON *root = cJSON_CreateObject();
    int ok = root != NULL;
    if (ok && npairs) {
        cJSON *m = cJSON_AddObjectToObject(root, metadata_key);
        ok = m != NULL;
        for (size_t i = 0; ok && i < npairs; i++)
            ok = cJSON_AddStringToObject(m, meta[2 * i], meta[2 * i + 1]) != NULL;
    }
    uint64_t off = 0;
    for (int i = 0; ok && i < n; i++) {
        cJSON *e = tensor_entry(&t[i], off);
        ok = e && cJSON_AddItemToObject(root, t[i].name, e);
        if (e && !ok)
            cJSON_Delete(e);
        off += t[i].nbytes;
    }
    char *json = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!json)
        return NULL;
    size_t jn = strlen(json), padded = (jn + 7) & ~(size_t)7;
    char *buf = malloc(8 + padded);
    if (buf) {
        uint64_t n64 = padded;
        memcpy(buf, &n64, 8);
        memcpy(buf + 8, json, jn);
        memset(buf + 8 + jn, ' ', padded - jn);
        *len = 8 + padded;
    }
    cJSON_free(json);
    return buf;
}

int upm_st_write(const char *path, const upm_st_tensor *t, int n, const char *const *meta, upm_err *err)
{
    if (!path || !path[0])
        return upm_errf(err, UPM_EUSAGE, "safetensors: empty output path");
    size_t npairs = 0, hlen = 0;
    int rc = check_all(path, t, n, meta, &npairs, err);
    if (rc)
        return rc;
    char *hdr = build_header(t, n, meta, npairs, &hlen);
    if (!hdr)
        return upm_errf(err, UPM_ENOMEM, "%s: out of memory building the header", path);
    if (hlen - 8 > UPM_ST_MAX_HEADER) {
        free(hdr);
        return upm_errf(err, UPM_EINVAL, "%s: header of %zu bytes exceeds the format's limit of %u", path, hlen - 8,
                        UPM_ST_MAX_HEADER);
    }
    const void **parts = malloc(sizeof(void *) * ((size_t)n + 1));
    size_t *lens = malloc(sizeof(size_t) * ((size_t)n + 1));
    if (!parts || !lens)
        rc = upm_errf(err, UPM_ENOMEM, "%s: out of memory", path);
    else {
        parts[0] = hdr, lens[0] = hlen;
        for (int i = 0; i < n; i++)
            parts[i + 1] = t[i].data, lens[i + 1] = t[i].nbytes;
        rc = upm_write_parts_atomic(path, parts, lens, n + 1, err);
    }
    free(parts);
    free(lens);
    free(hdr);
    return rc;
}

/* ---------------------------------------------------------------------------------------------- */
/* Reader                                                                                          */

struct upm_st_file {
    void *map;
    size_t map_len;
    int borrowed;                   /* map is the caller's memory (upm_st_open_mem), not a mapping */
    size_t data_len;
    int n, nmeta;
    upm_st_tensor *t;               /* data-offset order */
    const upm_st_tensor **by_name;  /* sorted by name, for upm_st_find */
    char **meta;                    /* key, value, key, value, ... in header order */
};

/* A tensor entry as parsed, before sorting by offset. */
typedef struct entry {
    uint64_t begin, end;
    int order; /* position in the header: empty tensors sharing an offset keep the header's order */
    upm_st_tensor t;
} entry;

static int get_uint(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v))
        return -1;
    double d = v->valuedouble;
    if (!(d >= 0) || d > (double)UPM_ST_MAX_INT || d != (double)(uint64_t)d)
        return -1;
    *out = (uint64_t)d;
    return 0;
}

static int parse_shape(const char *path, const char *nm, const cJSON *shape, entry *en, upm_err *err)
{
    if (!cJSON_IsArray(shape))
        return upm_errf(err, UPM_EBADDATA, "%s: tensor '%s': \"shape\" is missing or not an array", path, nm);
    int d = 0;
    for (const cJSON *x = shape->child; x; x = x->next, d++) {
        uint64_t v;
        if (d >= UPM_ST_MAX_DIMS)
            return upm_errf(err, UPM_EBADDATA, "%s: tensor '%s': more than %d dimensions", path, nm, UPM_ST_MAX_DIMS);
        if (get_uint(x, &v) != 0)
            return upm_errf(err, UPM_EBADDATA, "%s: tensor '%s': shape[%d] is not an integer in [0, 2^53]", path, nm,
                            d);
        en->t.shape[d] = (int64_t)v;
    }
    en->t.ndim = d;
    return 0;
}

static int parse_offsets(const char *path, const char *nm, const cJSON *offs, entry *en, upm_err *err)
{
    const cJSON *b = cJSON_IsArray(offs) ? offs->child : NULL, *e = b ? b->next : NULL;
    if (!e || e->next)
        return upm_errf(err, UPM_EBADDATA, "%s: tensor '%s': \"data_offsets\" is not an array of two numbers", path,
                        nm);
    if (get_uint(b, &en->begin) != 0 || get_uint(e, &en->end) != 0)
        return upm_errf(err, UPM_EBADDATA, "%s: tensor '%s': data_offsets are not integers in [0, 2^53]", path, nm);
    if (en->begin > en->end)
        return upm_errf(err, UPM_EBADDATA, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] are out of order",
                        path, nm, en->begin, en->end);
    return 0;
}

/* One tensor's header entry: dtype, shape and offsets, checked against each other and the data size. */
static int parse_entry(const char *path, const cJSON *j, size_t data_len, entry *en, upm_err *err)
{
    char b[96];
    const char *nm = shown(j->string, b);
    if (!j->string[0])
        return upm_errf(err, UPM_EBADDATA, "%s: a tensor has an empty name", path);
    if (!cJSON_IsObject(j))
        return upm_errf(err, UPM_EBADDATA, "%s: tensor '%s': entry is not a JSON object", path, nm);
    en->t.name = j->string;
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(j, "dtype");
    if (!cJSON_IsString(dt))
        return upm_errf(err, UPM_EBADDATA, "%s: tensor '%s': \"dtype\" is missing or not a string", path, nm);
    if (upm_st_dtype_parse(dt->valuestring, &en->t.dtype) != 0) {
        char b2[96];
        return upm_errf(err, UPM_EBADDATA,
                        "%s: tensor '%s': unknown or unsupported dtype '%s' (known: F32 F16 BF16 F64 I64 I32 I16 I8 U8 "
                        "BOOL)",
                        path, nm, shown(dt->valuestring, b2));
    }
    int rc = parse_shape(path, nm, cJSON_GetObjectItemCaseSensitive(j, "shape"), en, err);
    if (!rc)
        rc = parse_offsets(path, nm, cJSON_GetObjectItemCaseSensitive(j, "data_offsets"), en, err);
    if (rc)
        return rc;
    uint64_t bytes;
    if (shape_bytes(en->t.shape, en->t.ndim, dtypes[en->t.dtype].size, &bytes) != 0)
        return upm_errf(err, UPM_EBADDATA, "%s: tensor '%s': the shape's byte count overflows", path, nm);
    if (bytes != en->end - en->begin)
        return upm_errf(err, UPM_EBADDATA,
                        "%s: tensor '%s': shape of %d dims and dtype %s need %" PRIu64
                        " bytes but data_offsets [%" PRIu64 ", %" PRIu64 "] span %" PRIu64,
                        path, nm, en->t.ndim, dtypes[en->t.dtype].name, bytes, en->begin, en->end,
                        en->end - en->begin);
    if (en->end > data_len)
        return upm_errf(err, UPM_EBADDATA,
                        "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                        "] run past the data section of %zu bytes (truncated file?)",
                        path, nm, en->begin, en->end, data_len);
    en->t.nbytes = (size_t)bytes;
    return 0;
}

static int parse_meta(const char *path, const cJSON *m, upm_st_file *f, upm_err *err)
{
    if (f->meta)
        return upm_errf(err, UPM_EBADDATA, "%s: \"%s\" appears twice", path, metadata_key);
    if (!cJSON_IsObject(m))
        return upm_errf(err, UPM_EBADDATA, "%s: \"%s\" is not a JSON object", path, metadata_key);
    int n = cJSON_GetArraySize(m);
    f->meta = calloc(2 * (size_t)n + 1, sizeof *f->meta);
    if (!f->meta)
        return upm_errf(err, UPM_ENOMEM, "%s: out of memory", path);
    char b[96];
    for (const cJSON *x = m->child; x; x = x->next) {
        if (!cJSON_IsString(x))
            return upm_errf(err, UPM_EBADDATA, "%s: metadata '%s' is not a string (metadata holds strings only)",
                            path, shown(x->string, b));
        char **kv = f->meta + 2 * f->nmeta;
        kv[0] = strdup(x->string);
        kv[1] = strdup(x->valuestring);
        f->nmeta++; /* counted before the check so close frees both */
        if (!kv[0] || !kv[1])
            return upm_errf(err, UPM_ENOMEM, "%s: out of memory", path);
    }
    const char **keys = malloc((size_t)n * sizeof *keys + 1);
    if (!keys)
        return upm_errf(err, UPM_ENOMEM, "%s: out of memory", path);
    for (int i = 0; i < n; i++)
        keys[i] = f->meta[2 * i];
    const char *dup = first_duplicate(keys, (size_t)n);
    int rc = dup ? upm_errf(err, UPM_EBADDATA, "%s: metadata key '%s' appears twice", path, shown(dup, b)) : 0;
    free(keys);
    return rc;
}

static int cmp_entry(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return (x->order > y->order) - (x->order < y->order);
}

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp((*(const upm_st_tensor *const *)a)->name, (*(const upm_st_tensor *const *)b)->name);
}

/* Sorted by offset, the tensors must tile the data section exactly (as the reference reader demands). */
static int check_layout(const char *path, entry *en, int n, size_t data_len, upm_err *err)
{
    qsort(en, (size_t)n, sizeof *en, cmp_entry);
    uint64_t pos = 0;
    char b[96], b2[96];
    for (int i = 0; i < n; i++) {
        if (en[i].begin > pos)
            return upm_errf(err, UPM_EBADDATA,
                            "%s: hole in the data section: bytes [%" PRIu64 ", %" PRIu64
                            ") before tensor '%s' belong to no tensor",
                            path, pos, en[i].begin, shown(en[i].t.name, b));
        if (en[i].begin < pos)
            return upm_errf(err, UPM_EBADDATA,
                            "%s: tensor '%s' (data_offsets [%" PRIu64 ", %" PRIu64 "]) overlaps tensor '%s' (ends at %" PRIu64
                            ")",
                            path, shown(en[i].t.name, b), en[i].begin, en[i].end, shown(en[i - 1].t.name, b2), pos);
        pos = en[i].end;
    }
    if (pos != data_len)
        return upm_errf(err, UPM_EBADDATA,
                        "%s: %" PRIu64 " trailing bytes after the last tensor (data section of %zu bytes, tensors end at "
                        "%" PRIu64 ")",
                        path, (uint64_t)data_len - pos, data_len, pos);
    return 0;
}

/* Copies the sorted entries into f (names duplicated out of the JSON tree) and indexes them by name. */
static int store_tensors(const char *path, entry *en, int n, const unsigned char *data, upm_st_file *f,
                         upm_err *err)
{
    f->t = calloc((size_t)n + 1, sizeof *f->t);
    f->by_name = calloc((size_t)n + 1, sizeof *f->by_name);
    if (!f->t || !f->by_name)
        return upm_errf(err, UPM_ENOMEM, "%s: out of memory", path);
    for (int i = 0; i < n; i++, f->n++) {
        f->t[i] = en[i].t;
        f->t[i].name = strdup(en[i].t.name);
        if (!f->t[i].name)
            return upm_errf(err, UPM_ENOMEM, "%s: out of memory", path);
        f->t[i].data = data + en[i].begin;
        f->by_name[i] = &f->t[i];
    }
    qsort(f->by_name, (size_t)n, sizeof *f->by_name, cmp_tensor_name);
    char b[96];
    for (int i = 1; i < n; i++)
        if (!strcmp(f->by_name[i - 1]->name, f->by_name[i]->name))
            return upm_errf(err, UPM_EBADDATA, "%s: tensor '%s' appears twice in the header", path,
                            shown(f->by_name[i]->name, b));
    return 0;
}

static int parse_header(const char *path, const char *h, size_t hn, upm_st_file *f, upm_err *err)
{
    if (hn < 2 || h[0] != '{')
        return upm_errf(err, UPM_EBADDATA, "%s: the header does not start with '{' (not a safetensors file?)", path);
    if (!utf8_valid((const unsigned char *)h, hn, 1))
        return upm_errf(err, UPM_EBADDATA, "%s: the header is not valid UTF-8 JSON text", path);
    if (has_nul_escape(h, hn))
        return upm_errf(err, UPM_EBADDATA, "%s: the header holds a \\u0000 escape, which no name may contain", path);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(h, hn, &end, 0);
    if (!root)
        return upm_errf(err, UPM_EBADDATA, "%s: the header is not valid JSON (error near header byte %td)", path,
                        end ? end - h : (ptrdiff_t)0);
    for (; end < h + hn; end++)
        if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r')
            break;
    int rc = 0, n = 0;
    if (end < h + hn)
        rc = upm_errf(err, UPM_EBADDATA, "%s: unexpected text after the header's JSON object at header byte %td", path,
                      end - h);
    else if (!cJSON_IsObject(root))
        rc = upm_errf(err, UPM_EBADDATA, "%s: the header is not a JSON object", path);
    entry *en = rc ? NULL : calloc((size_t)cJSON_GetArraySize(root) + 1, sizeof *en);
    if (!rc && !en)
        rc = upm_errf(err, UPM_ENOMEM, "%s: out of memory", path);
    for (const cJSON *x = rc ? NULL : root->child; x && !rc; x = x->next) {
        if (!strcmp(x->string, metadata_key))
            rc = parse_meta(path, x, f, err);
        else {
            en[n].order = n;
            rc = parse_entry(path, x, f->data_len, &en[n++], err);
        }
    }
    if (!rc)
        rc = check_layout(path, en, n, f->data_len, err);
    if (!rc)
        rc = store_tensors(path, en, n, (const unsigned char *)h + hn, f, err);
    free(en);
    cJSON_Delete(root);
    return rc;
}

/* Checks the header length in the first 8 bytes of f->map against the size and the format's limit. */
static int check_header_len(const char *path, upm_st_file *f, uint64_t *hn, upm_err *err)
{
    if (f->map_len < 8)
        return upm_errf(err, UPM_EBADDATA, "%s: file of %zu bytes is too short for the 8-byte header length "
                                           "(truncated or not a safetensors file)",
                        path, f->map_len);
    memcpy(hn, f->map, 8);
    if (*hn > UPM_ST_MAX_HEADER)
        return upm_errf(err, UPM_EBADDATA, "%s: header length %" PRIu64 " exceeds the format's limit of %u bytes "
                                           "(not a safetensors file?)",
                        path, *hn, UPM_ST_MAX_HEADER);
    if (*hn > f->map_len - 8)
        return upm_errf(err, UPM_EBADDATA, "%s: header length %" PRIu64 " is larger than the %zu bytes after it "
                                           "(truncated file?)",
                        path, *hn, f->map_len - 8);
    f->data_len = f->map_len - 8 - (size_t)*hn;
    return 0;
}

/* Maps the whole file read-only and checks its header length. */
static int map_file(const char *path, upm_st_file *f, uint64_t *hn, upm_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return upm_errf(err, UPM_EIO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return upm_errf(err, UPM_EIO, "cannot stat %s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return upm_errf(err, UPM_EIO, "%s: not a regular file", path);
    }
    if (st.st_size < 8) {
        close(fd);
        return upm_errf(err, UPM_EBADDATA, "%s: file of %lld bytes is too short for the 8-byte header length "
                                           "(truncated or not a safetensors file)",
                        path, (long long)st.st_size);
    }
    f->map_len = (size_t)st.st_size;
    f->map = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        return upm_errf(err, UPM_EIO, "cannot map %s: %s", path, strerror(e));
    }
    return check_header_len(path, f, hn, err);
}

/* Maps the file `name` (from_file) or takes f's memory as it is, validates it, and hands f out (or frees it). */
static int open_common(const char *name, upm_st_file *f, int from_file, upm_st_file **out, upm_err *err)
{
    uint64_t hn = 0;
    int rc = from_file ? map_file(name, f, &hn, err) : check_header_len(name, f, &hn, err);
    if (!rc)
        rc = parse_header(name, (const char *)f->map + 8, (size_t)hn, f, err);
    if (rc) {
        upm_st_close(f);
        return rc;
    }
    *out = f;
    return 0;
}

int upm_st_open(const char *path, upm_st_file **out, upm_err *err)
{
    *out = NULL;
    upm_st_file *f = calloc(1, sizeof *f);
    if (!f)
        return upm_errf(err, UPM_ENOMEM, "%s: out of memory", path);
    return open_common(path, f, 1, out, err);
}

int upm_st_open_mem(const void *data, size_t n, const char *name, upm_st_file **out, upm_err *err)
{
    *out = NULL;
    upm_st_file *f = calloc(1, sizeof *f);
    if (!f)
        return upm_errf(err, UPM_ENOMEM, "%s: out of memory", name);
    f->map = (void *)data;
    f->map_len = n;
    f->borrowed = 1;
    return open_common(name, f, 0, out, err);
}

int upm_st_count(const upm_st_file *f)
{
    return f->n;
}

const upm_st_tensor *upm_st_at(const upm_st_file *f, int i)
{
    return i >= 0 && i < f->n ? &f->t[i] : NULL;
}

const upm_st_tensor *upm_st_find(const upm_st_file *f, const char *name)
{
    upm_st_tensor key = {.name = name};
    const upm_st_tensor *kp = &key;
    const upm_st_tensor **hit = bsearch(&kp, f->by_name, (size_t)f->n, sizeof *f->by_name, cmp_tensor_name);
    return hit ? *hit : NULL;
}

const char *upm_st_meta(const upm_st_file *f, const char *key)
{
    for (int i = 0; i < f->nmeta; i++)
        if (!strcmp(f->meta[2 * i], key))
            return f->meta[2 * i + 1];
    return NULL;
}

int upm_st_meta_count(const upm_st_file *f)
{
    return f->nmeta;
}

const char *upm_st_meta_key(const upm_st_file *f, int i)
{
    return i >= 0 && i < f->nmeta ? f->meta[2 * i] : NULL;
}

const char *upm_st_meta_value(const upm_st_file *f, int i)
{
    return i >= 0 && i < f->nmeta ? f->meta[2 * i + 1] : NULL;
}

size_t upm_st_data_bytes(const upm_st_file *f)
{
    return f->data_len;
}

void upm_st_close(upm_st_file *f)
{
    if (!f)
        return;
    for (int i = 0; i < f->n; i++)
        free((char *)f->t[i].name);
    for (int i = 0; i < 2 * f->nmeta; i++)
        free(f->meta[i]);
    free(f->meta);
    free(f->t);
    free(f->by_name);
    if (f->map && !f->borrowed)
        munmap(f->map, f->map_len);
    free(f);
}
