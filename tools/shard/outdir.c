/* upmoe-shard output folder: creates it, checks that its path can stand in a shard URL pattern, refuses
 * to overwrite shards without --force, clears temporary files of runs that died (SIGKILL, power loss)
 * and, with --force, removes the higher-numbered shards of an earlier, larger run. */
#define _XOPEN_SOURCE 700 /* realpath(): XSI, beside the POSIX 2008 the build asks for */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "shard.h"
#include "urlpattern.h"

/* 1 when name is "PREFIX-NNNNNN.tar" (6 or more digits); *index gets NNNNNN. */
static int match_shard(const char *name, const char *prefix, uint64_t *index)
{
    size_t pl = strlen(prefix);
    if (strncmp(name, prefix, pl) != 0 || name[pl] != '-')
        return 0;
    const char *d = name + pl + 1, *e = d;
    uint64_t v = 0;
    while (*e >= '0' && *e <= '9' && e - d < 18)
        v = v * 10 + (uint64_t)(*e++ - '0');
    if (e - d < 6 || strcmp(e, ".tar") != 0)
        return 0;
    *index = v;
    return 1;
}

/* 1 when name is ".PREFIX-NNNNNN.tar.tmp.PID", the temporary name writer.c uses; *pid gets PID. */
static int match_tmp(const char *name, const char *prefix, long *pid)
{
    if (name[0] != '.')
        return 0;
    const char *t = strstr(name, ".tar.tmp.");
    if (!t)
        return 0;
    char shard[NAME_MAX + 1];
    size_t n = (size_t)(t - (name + 1)) + 4;
    if (n >= sizeof shard)
        return 0;
    memcpy(shard, name + 1, n);
    shard[n] = '\0';
    uint64_t index;
    char *end;
    errno = 0;
    long v = strtol(t + 9, &end, 10);
    if (!match_shard(shard, prefix, &index) || errno || *end || end == t + 9 || v <= 0)
        return 0;
    *pid = v;
    return 1;
}

/* Characters a path can hold and still be read back from a URL pattern unchanged. */
static int url_safe(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || *s == 0x7f || *s == '{' || *s == '}' || *s == ',')
            return 0;
    return 1;
}

static int check_prefix(const char *prefix, upm_err *err)
{
    if (!*prefix || prefix[0] == '.' || prefix[0] == '-')
        return upm_errf(err, UPM_EUSAGE, "--prefix '%s': must be a name that starts with a letter, digit or '_'", prefix);
    for (const char *c = prefix; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_' ||
              *c == '-' || *c == '.'))
            return upm_errf(err, UPM_EUSAGE, "--prefix '%s': only letters, digits, '_', '-' and '.' (it becomes part "
                                             "of file names and of a URL pattern)", prefix);
    if (strlen(prefix) > 200)
        return upm_errf(err, UPM_EUSAGE, "--prefix is longer than 200 characters");
    return 0;
}

/* Looks at every entry of the folder: existing shards of the prefix, temporary files of other runs. */
static int scan(const upm_shard_opts *o, upm_err *err)
{
    DIR *d = opendir(o->out_dir);
    if (!d)
        return upm_errf(err, UPM_EIO, "%s: %s", o->out_dir, strerror(errno));
    uint64_t existing = 0, index, lowest = 0;
    char first[NAME_MAX + 1] = "";
    long pid;
    int rc = 0;
    struct dirent *e;
    while (!rc && (e = readdir(d)) != NULL) {
        if (match_shard(e->d_name, o->prefix, &index)) {
            if (!existing++ || index < lowest) { /* name the first shard, whatever order readdir gives */
                snprintf(first, sizeof first, "%s", e->d_name);
                lowest = index;
            }
        } else if (match_tmp(e->d_name, o->prefix, &pid)) {
            char path[PATH_MAX];
            snprintf(path, sizeof path, "%s/%s", o->out_dir, e->d_name);
            if (pid != (long)getpid() && (kill((pid_t)pid, 0) == 0 || errno == EPERM))
                rc = upm_errf(err, UPM_EINVAL,
                              "another process (pid %ld) is writing '%s' shards in %s (remove %s if it is not "
                              "upmoe-shard)", pid, o->prefix, o->out_dir, path);
            else if (unlink(path) != 0 && errno != ENOENT)
                rc = upm_errf(err, UPM_EIO, "cannot remove the stale temporary file %s: %s", path, strerror(errno));
        }
    }
    closedir(d);
    if (!rc && existing && !o->force)
        rc = upm_errf(err, UPM_EINVAL,
                      "%s already holds %llu '%s' shard%s (%s%s): give --force to replace them, or another --prefix "
                      "or --out", o->out_dir, (unsigned long long)existing, o->prefix, existing == 1 ? "" : "s", first,
                      existing > 1 ? ", ..." : "");
    return rc;
}

int upm_shard_prepare(const upm_shard_opts *o, upm_shard_result *r, upm_err *err)
{
    int rc = check_prefix(o->prefix, err);
    if (!rc && !*o->out_dir)
        rc = upm_errf(err, UPM_EUSAGE, "--out needs a folder");
    if (!rc && !url_safe(o->out_dir))
        rc = upm_errf(err, UPM_EINVAL, "the output folder %s cannot be named in a shard URL pattern "
                                       "(no spaces, braces or commas, please)", o->out_dir);
    if (!rc)
        rc = upm_mkdirs(o->out_dir, err);
    if (rc)
        return rc;
    struct stat st;
    if (stat(o->out_dir, &st) != 0)
        return upm_errf(err, UPM_EIO, "%s: %s", o->out_dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return upm_errf(err, UPM_EINVAL, "--out %s: not a folder", o->out_dir);
    if (access(o->out_dir, W_OK | X_OK) != 0)
        return upm_errf(err, UPM_EIO, "--out %s: %s", o->out_dir, strerror(errno));
    char abs[PATH_MAX];
    if (!realpath(o->out_dir, abs))
        return upm_errf(err, UPM_EIO, "%s: %s", o->out_dir, strerror(errno));
    snprintf(r->out_abs, sizeof r->out_abs, "%s", abs);
    /* The catalog reads the folder inside a URL pattern: braces, commas, spaces would not survive. */
    char url[sizeof r->url];
    snprintf(url, sizeof url, "%s/%s-{000000..000001}.tar", abs, o->prefix);
    upm_urlpat *p = NULL;
    upm_err perr;
    if (!url_safe(abs) || upm_urlpat_parse(url, &p, &perr) != 0 || upm_urlpat_count(p) != 2) {
        upm_urlpat_free(p);
        return upm_errf(err, UPM_EINVAL, "the output folder %s cannot be named in a shard URL pattern "
                                         "(no spaces, braces or commas, please)", abs);
    }
    upm_urlpat_free(p);
    return scan(o, err);
}

int upm_shard_remove_stale(const upm_shard_opts *o, uint64_t nshards, uint64_t *removed, upm_err *err)
{
    DIR *d = opendir(o->out_dir);
    if (!d)
        return upm_errf(err, UPM_EIO, "%s: %s", o->out_dir, strerror(errno));
    int rc = 0;
    uint64_t index;
    struct dirent *e;
    *removed = 0;
    while (!rc && (e = readdir(d)) != NULL) {
        if (!match_shard(e->d_name, o->prefix, &index) || index < nshards)
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", o->out_dir, e->d_name);
        if (unlink(path) != 0 && errno != ENOENT)
            rc = upm_errf(err, UPM_EIO, "cannot remove the old shard %s: %s", path, strerror(errno));
        else
            (*removed)++;
    }
    closedir(d);
    return rc;
}
