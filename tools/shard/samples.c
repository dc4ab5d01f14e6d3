/* upmoe-shard: the sample list shared by every input kind: members from files or bytes, media
 * extensions, keys taken from paths, the deterministic shuffle and the class-name file. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "rng.h"
#include "shard.h"

void upm_shard_list_free(upm_shard_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        upm_shard_sample *s = &l->v[i];
        free(s->keypath);
        for (int k = 0; k < s->n; k++) {
            free(s->m[k].path);
            free(s->m[k].data);
        }
    }
    free(l->v);
    for (size_t i = 0; i < l->nclasses; i++)
        free(l->classes[i]);
    free(l->classes);
    for (size_t i = 0; i < l->nsources; i++)
        free(l->sources[i]);
    free(l->sources);
    free(l->skipped_first);
    memset(l, 0, sizeof *l);
}

upm_shard_sample *upm_shard_list_push(upm_shard_list *l)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        void *p = realloc(l->v, cap * sizeof *l->v);
        if (!p)
            return NULL;
        l->v = p;
        l->cap = cap;
    }
    upm_shard_sample *s = &l->v[l->n];
    memset(s, 0, sizeof *s);
    s->index = l->n++;
    return s;
}

const char *upm_shard_list_source(upm_shard_list *l, const char *name)
{
    char *copy = strdup(name);
    void *p = copy ? realloc(l->sources, (l->nsources + 1) * sizeof *l->sources) : NULL;
    if (!p) {
        free(copy);
        return NULL;
    }
    l->sources = p;
    l->sources[l->nsources++] = copy;
    return copy;
}

const char *upm_shard_where(char *buf, size_t n, const char *file, uint64_t line)
{
    if (line)
        snprintf(buf, n, "%s:%llu: ", file, (unsigned long long)line);
    else
        snprintf(buf, n, "%s: ", file);
    return buf;
}

int upm_shard_member_file(upm_shard_member *m, const char *ext, const char *path, const char *where, upm_err *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return upm_errf(err, errno == ENOENT ? UPM_ENOTFOUND : UPM_EIO, "%s%s: %s", where, path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return upm_errf(err, UPM_EINVAL, "%s%s: not a regular file", where, path);
    if (access(path, R_OK) != 0)
        return upm_errf(err, UPM_EIO, "%s%s: %s", where, path, strerror(errno));
    snprintf(m->ext, sizeof m->ext, "%s", ext);
    m->path = strdup(path);
    if (!m->path)
        return upm_errf(err, UPM_ENOMEM, "out of memory");
    m->size = (uint64_t)st.st_size;
    return 0;
}

int upm_shard_member_bytes(upm_shard_member *m, const char *ext, const char *bytes, size_t n, upm_err *err)
{
    snprintf(m->ext, sizeof m->ext, "%s", ext);
    m->data = malloc(n + 1); /* NUL-terminated too: labels are compared as strings */
    if (!m->data)
        return upm_errf(err, UPM_ENOMEM, "out of memory");
    memcpy(m->data, bytes, n);
    m->data[n] = '\0';
    m->size = n;
    return 0;
}

static const char *const image_exts[] = {"jpg", "png", "webp", "gif", "bmp", "tif", "tiff", "ppm", "pgm", "pnm", NULL};
static const char *const video_exts[] = {"mp4", "m4v", "mov", "webm", "mkv", "avi", "flv", "3gp", "ogv",
                                         "ogg", "mpg", "mpeg", "ts",  NULL};

int upm_shard_media_ext(upm_shard_kind kind, const char *path, char ext[UPM_SHARD_EXT_MAX], const char *where,
                        upm_err *err)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    int video = kind == UPM_KIND_VIDEO_CLASS || kind == UPM_KIND_VIDEO_CAPTION;
    if (!dot || !dot[1] || strlen(dot + 1) >= UPM_SHARD_EXT_MAX)
        return upm_errf(err, UPM_EINVAL, "%s%s: no %s file extension to name the member by", where, path,
                        video ? "video" : "image");
    size_t i = 0;
    for (const char *c = dot + 1; *c; c++)
        ext[i++] = (char)tolower((unsigned char)*c);
    ext[i] = '\0';
    /* One name for one format: WebDataset tasks address images as "jpg". */
    if (strcmp(ext, "jpeg") == 0 || strcmp(ext, "jpe") == 0)
        strcpy(ext, "jpg");
    for (const char *const *e = video ? video_exts : image_exts; *e; e++)
        if (strcmp(ext, *e) == 0)
            return 0;
    return upm_errf(err, UPM_EINVAL, "%s%s: '.%s' is not %s file extension", where, path, ext,
                    video ? "a video" : "an image");
}

int upm_shard_set_keypath(upm_shard_sample *s, const char *rel, upm_err *err)
{
    size_t n = strlen(rel);
    char *k = malloc(n + 1);
    if (!k)
        return upm_errf(err, UPM_ENOMEM, "out of memory");
    const char *base = strrchr(rel, '/');
    const char *dot = strrchr(base ? base + 1 : rel, '.');
    size_t end = dot && dot != (base ? base + 1 : rel) ? (size_t)(dot - rel) : n;
    size_t o = 0;
    for (size_t i = 0; i < end;) {
        /* Path components: drop empty and "." ones, so "./a//b" and "a/b" name the same key. */
        size_t j = i;
        while (j < end && rel[j] != '/')
            j++;
        size_t len = j - i;
        if (len && !(len == 1 && rel[i] == '.')) {
            if (o)
                k[o++] = '/';
            for (size_t c = i; c < j; c++) {
                unsigned char ch = (unsigned char)rel[c];
                k[o++] = (isalnum(ch) && ch < 0x80) || ch == '_' || ch == '-' ? (char)ch : '_';
            }
        }
        i = j + 1;
    }
    k[o] = '\0';
    if (!o) {
        free(k);
        return upm_errf(err, UPM_EINVAL, "cannot make a key from the path '%s'", rel);
    }
    free(s->keypath);
    s->keypath = k;
    return 0;
}

static int cmp_keyptr(const void *a, const void *b)
{
    const upm_shard_sample *x = *(const upm_shard_sample *const *)a, *y = *(const upm_shard_sample *const *)b;
    return strcmp(x->keypath, y->keypath);
}

int upm_shard_check_unique_keys(const upm_shard_list *l, upm_err *err)
{
    if (l->n < 2)
        return 0;
    const upm_shard_sample **v = malloc(l->n * sizeof *v);
    if (!v)
        return upm_errf(err, UPM_ENOMEM, "out of memory");
    for (size_t i = 0; i < l->n; i++)
        v[i] = &l->v[i];
    qsort(v, l->n, sizeof *v, cmp_keyptr);
    int rc = 0;
    for (size_t i = 1; i < l->n && !rc; i++)
        if (strcmp(v[i - 1]->keypath, v[i]->keypath) == 0) {
            const upm_shard_sample *a = v[i - 1]->index < v[i]->index ? v[i - 1] : v[i];
            const upm_shard_sample *b = a == v[i] ? v[i - 1] : v[i];
            char wa[512] = "", wb[512] = "";
            if (a->line) {
                upm_shard_where(wa, sizeof wa, a->src, a->line);
                upm_shard_where(wb, sizeof wb, b->src, b->line);
                wa[strlen(wa) - 2] = wb[strlen(wb) - 2] = '\0'; /* drop ": " */
            }
            rc = upm_errf(err, UPM_EINVAL, "--key-from-path: %s and %s give the same key '%s'%s%s%s%s%s",
                          a->m[0].path, b->m[0].path, a->keypath, a->line ? " (" : "", wa, a->line ? " and " : "", wb,
                          a->line ? ")" : "");
        }
    free(v);
    return rc;
}

void upm_shard_shuffle(upm_shard_list *l, uint64_t seed)
{
    /* Its own stream (purpose SHUFFLE, coordinate 'shard'), apart from the sampler's shuffle buffers. */
    upm_rng r = upm_rng_stream(seed, UPM_RNG_SHUFFLE, UINT64_C(0x7368617264), 0, 0);
    for (size_t i = l->n; i > 1; i--) {
        size_t j = (size_t)upm_rng_below(&r, i);
        upm_shard_sample t = l->v[i - 1];
        l->v[i - 1] = l->v[j];
        l->v[j] = t;
    }
}

int upm_shard_write_classes(const upm_shard_list *l, const char *path, upm_err *err)
{
    size_t n = 0;
    for (size_t i = 0; i < l->nclasses; i++)
        n += strlen(l->classes[i]) + 1;
    char *text = malloc(n + 1), *p = text;
    if (!text)
        return upm_errf(err, UPM_ENOMEM, "out of memory");
    for (size_t i = 0; i < l->nclasses; i++)
        p += sprintf(p, "%s\n", l->classes[i]);
    int rc = upm_write_file_atomic(path, text, n, err);
    free(text);
    return rc;
}

