/* upmoe-shard folder: DIR/<class>/<file> becomes one sample per file with its class index, the classes
 * being DIR's subfolders sorted by name (byte order, whatever the locale), files sorted by name too, so
 * the same folder always gives the same samples in the same order. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "shard.h"
#include "text.h"

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void free_names(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* The visible entries of dir, sorted. */
static int list_dir(const char *dir, char ***out, size_t *nout, upm_err *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return upm_errf(err, errno == ENOENT ? UPM_ENOTFOUND : UPM_EIO, "%s: %s", dir, strerror(errno));
    char **v = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *e;
    errno = 0;
    while (!rc && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') /* ".", "..", and hidden files (editor and OS droppings) */
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            void *p = realloc(v, cap * sizeof *v);
            if (!p) {
                rc = upm_errf(err, UPM_ENOMEM, "out of memory listing %s", dir);
                break;
            }
            v = p;
        }
        if (!(v[n] = strdup(e->d_name)))
            rc = upm_errf(err, UPM_ENOMEM, "out of memory listing %s", dir);
        else
            n++;
        errno = 0;
    }
    if (!rc && errno)
        rc = upm_errf(err, UPM_EIO, "%s: %s", dir, strerror(errno));
    closedir(d);
    if (rc) {
        free_names(v, n);
        return rc;
    }
    if (n)
        qsort(v, n, sizeof *v, cmp_str);
    *out = v;
    *nout = n;
    return 0;
}

static char *join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 2);
    if (s) {
        memcpy(s, a, la);
        s[la] = '/';
        memcpy(s + la + 1, b, lb + 1);
    }
    return s;
}

static int note_skipped(upm_shard_list *l, const char *path, upm_err *err)
{
    if (l->skipped++ == 0 && !(l->skipped_first = strdup(path)))
        return upm_errf(err, UPM_ENOMEM, "out of memory");
    return 0;
}

/* The samples of one class folder. */
static int read_class(const char *cdir, const char *cname, size_t cls, const upm_shard_input *in, upm_shard_list *l,
                      upm_err *err)
{
    char **files = NULL;
    size_t nfiles = 0;
    int rc = list_dir(cdir, &files, &nfiles, err);
    for (size_t i = 0; !rc && i < nfiles; i++) {
        char *path = join(cdir, files[i]);
        struct stat st;
        char ext[UPM_SHARD_EXT_MAX];
        if (!path) {
            rc = upm_errf(err, UPM_ENOMEM, "out of memory");
        } else if (stat(path, &st) != 0) {
            rc = upm_errf(err, UPM_EIO, "%s: %s", path, strerror(errno));
        } else if (!S_ISREG(st.st_mode) || upm_shard_media_ext(in->kind, path, ext, "", NULL) != 0) {
            rc = note_skipped(l, path, err);
        } else {
            upm_shard_sample *s = upm_shard_list_push(l);
            char txt[32];
            snprintf(txt, sizeof txt, "%zu", cls);
            if (!s) {
                rc = upm_errf(err, UPM_ENOMEM, "out of memory");
            } else {
                s->src = l->sources[0];
                s->n = 2;
                rc = upm_shard_member_file(&s->m[0], ext, path, "", err);
                if (!rc)
                    rc = upm_shard_member_bytes(&s->m[1], "cls", txt, strlen(txt), err);
                if (!rc && in->key_from_path) {
                    char *rel = join(cname, files[i]);
                    rc = rel ? upm_shard_set_keypath(s, rel, err) : upm_errf(err, UPM_ENOMEM, "out of memory");
                    free(rel);
                }
            }
        }
        free(path);
    }
    free_names(files, nfiles);
    return rc;
}

int upm_shard_read_folder(const char *dir, const upm_shard_input *in, upm_shard_list *l, upm_err *err)
{
    if (in->kind != UPM_KIND_IMAGE_CLASS && in->kind != UPM_KIND_VIDEO_CLASS)
        return upm_errf(err, UPM_EUSAGE, "'folder' takes --kind image-class or video-class");
    if (!upm_shard_list_source(l, dir))
        return upm_errf(err, UPM_ENOMEM, "out of memory");
    struct stat dst;
    if (stat(dir, &dst) != 0)
        return upm_errf(err, errno == ENOENT ? UPM_ENOTFOUND : UPM_EIO, "%s: %s", dir, strerror(errno));
    if (!S_ISDIR(dst.st_mode))
        return upm_errf(err, UPM_EINVAL, "%s: not a folder (expected DIR/<class>/<file>)", dir);
    char **names = NULL;
    size_t n = 0;
    int rc = list_dir(dir, &names, &n, err);
    for (size_t i = 0; !rc && i < n; i++) {
        char *cdir = join(dir, names[i]);
        struct stat st;
        if (!cdir) {
            rc = upm_errf(err, UPM_ENOMEM, "out of memory");
        } else if (stat(cdir, &st) != 0) {
            rc = upm_errf(err, UPM_EIO, "%s: %s", cdir, strerror(errno));
        } else if (!S_ISDIR(st.st_mode)) {
            rc = note_skipped(l, cdir, err); /* a file next to the class folders */
        } else if (upm_has_control(names[i]) || !upm_utf8_valid(names[i], strlen(names[i]), NULL)) {
            rc = upm_errf(err, UPM_EINVAL, "%s: a class folder name must be UTF-8 without control characters",
                          cdir);
        } else {
            void *p = realloc(l->classes, (l->nclasses + 1) * sizeof *l->classes);
            if (!p) {
                rc = upm_errf(err, UPM_ENOMEM, "out of memory");
            } else {
                l->classes = p;
                l->classes[l->nclasses] = names[i];
                names[i] = NULL; /* the list owns it now */
                l->nclasses++;
                rc = read_class(cdir, l->classes[l->nclasses - 1], l->nclasses - 1, in, l, err);
            }
        }
        free(cdir);
    }
    free_names(names, n);
    if (!rc && l->nclasses == 0)
        rc = upm_errf(err, UPM_EINVAL, "%s: no class folders (expected DIR/<class>/<file>)", dir);
    else if (!rc && l->n == 0)
        rc = upm_errf(err, UPM_EINVAL, "%s: no %s files in its %zu class folders", dir,
                      in->kind == UPM_KIND_VIDEO_CLASS ? "video" : "image", l->nclasses);
    return rc;
}
