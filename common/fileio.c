/* Whole-file reads, full writes, directory fsync, atomic file writes and mkdir -p (see fileio.h). */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int upm_read_file(const char *path, char **data, size_t *len, upm_err *err)
{
    *data = NULL;
    int std = !strcmp(path, "-");
    FILE *f = std ? stdin : fopen(path, "rb");
    if (!f)
        return upm_errf(err, errno == ENOENT ? UPM_ENOTFOUND : UPM_EIO, "cannot read %s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    int rc = buf ? 0 : upm_errf(err, UPM_ENOMEM, "out of memory reading %s", path);
    while (!rc) {
        if (n + 1 >= cap) {
            char *p = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
            if (!p) {
                rc = upm_errf(err, UPM_ENOMEM, "out of memory reading %s", path);
                break;
            }
            buf = p, cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) {
            if (ferror(f))
                rc = upm_errf(err, UPM_EIO, "cannot read %s: %s", path, strerror(errno));
            break;
        }
    }
    if (!std)
        fclose(f);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[n] = 0;
    *data = buf;
    if (len)
        *len = n;
    return 0;
}

int upm_write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            return -1;
        }
        p += w, n -= (size_t)w;
    }
    return 0;
}

int upm_fsync_dir(const char *dir, upm_err *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return upm_errf(err, UPM_EIO, "cannot open directory %s: %s", dir, strerror(errno));
    /* EINVAL: a file system that cannot sync directories; there is nothing more to do there */
    int rc = fsync(fd) == 0 || errno == EINVAL ? 0 : upm_errf(err, UPM_EIO, "%s: fsync: %s", dir, strerror(errno));
    close(fd);
    return rc;
}

void upm_dirname(const char *path, char *buf, size_t bufsize)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(buf, bufsize, ".");
    else if (slash == path)
        snprintf(buf, bufsize, "/");
    else
        snprintf(buf, bufsize, "%.*s", (int)(slash - path), path);
}

static atomic_uint tmp_counter; /* two threads writing the same path get different temporary names */

int upm_write_parts_atomic(const char *path, const void *const *parts, const size_t *lens, int nparts, upm_err *err)
{
    char tmp[4200], dir[4200];
    if (!path || !path[0])
        return upm_errf(err, UPM_EUSAGE, "empty output path");
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld.%u", path, (long)getpid(), atomic_fetch_add(&tmp_counter, 1u)) >=
        (int)sizeof tmp)
        return upm_errf(err, UPM_EUSAGE, "path too long: %s", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 && errno == EEXIST && unlink(tmp) == 0) /* left by a dead process that had our pid */
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return upm_errf(err, UPM_EIO, "cannot create %s: %s", tmp, strerror(errno));
    int bad = 0;
    for (int i = 0; i < nparts && !bad; i++)
        bad = lens[i] && upm_write_all(fd, parts[i], lens[i]) != 0;
    bad = bad || fsync(fd) != 0;
    int e = errno;
    if (close(fd) != 0 && !bad)
        bad = 1, e = errno;
    if (bad) {
        unlink(tmp);
        return upm_errf(err, UPM_EIO, "cannot write %s: %s", tmp, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        return upm_errf(err, UPM_EIO, "cannot rename %s to %s: %s", tmp, path, strerror(e));
    }
    upm_dirname(path, dir, sizeof dir);
    upm_err derr;
    if (upm_fsync_dir(dir, &derr))
        return upm_errf(err, UPM_EIO, "%s: written, but syncing its directory failed: %s", path, derr.msg);
    return 0;
}

int upm_write_file_atomic(const char *path, const void *data, size_t n, upm_err *err)
{
    const void *parts[] = {data};
    return upm_write_parts_atomic(path, parts, &n, 1, err);
}

int upm_mkdirs(const char *path, upm_err *err)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return upm_errf(err, UPM_EINVAL, "path too long: %s", path);
    for (char *s = buf + 1;; s++) {
        if (*s != '/' && *s)
            continue;
        char c = *s;
        *s = 0;
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return upm_errf(err, UPM_EIO, "cannot create %s: %s", buf, strerror(errno));
        *s = c;
        if (!c)
            return 0;
    }
}

int upm_beside_program(const char *env_var, const char *file, char *buf, size_t n)
{
    const char *env = env_var ? getenv(env_var) : NULL;
    if (env && *env) {
        snprintf(buf, n, "%s", env);
        return 0;
    }
    char exe[4096];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (k <= 0) {
        snprintf(buf, n, "%s", file);
        return -1;
    }
    exe[k] = 0;
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = 0;
    snprintf(buf, n, "%s/%s", exe, file);
    return 0;
}
