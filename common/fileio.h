/* Files: reading one whole, writing all of a buffer, and writing so that readers never see half of it
 * (a temporary name in the same directory, fsync, rename, fsync of the directory). The one copy of
 * each; used for exports, cursors, checkpoints' state, shards and anything else that must not tear. */
#ifndef UPM_FILEIO_H
#define UPM_FILEIO_H

#include <stddef.h>

#include "err.h"

/* Reads the whole file ("-" = standard input) into a new NUL-terminated buffer (*data, free() it) of
 * *len bytes (len may be NULL). UPM_ENOTFOUND for a missing file, else UPM_EIO; the message names it. */
int upm_read_file(const char *path, char **data, size_t *len, upm_err *err);

/* Writes all n bytes to fd, retrying short and interrupted writes: 0, or -1 with errno set. */
int upm_write_all(int fd, const void *buf, size_t n);

/* fsyncs a directory, so that a rename or a new name in it survives a crash. */
int upm_fsync_dir(const char *dir, upm_err *err);

/* The directory part of path ("." when it has none) into buf. */
void upm_dirname(const char *path, char *buf, size_t bufsize);

/* Writes path atomically: a temporary name next to it (unique per process and call), fsync, rename,
 * fsync of the directory. Readers see the old file or the whole new one, never a part. */
int upm_write_file_atomic(const char *path, const void *data, size_t n, upm_err *err);
/* The same for a file made of nparts buffers written one after another (no copy into one buffer). */
int upm_write_parts_atomic(const char *path, const void *const *parts, const size_t *lens, int nparts, upm_err *err);
/* The path of `file` beside this program (its executable's folder), or $env_var when that is set and not
 * empty: where the optional modules (MPI, NCCL, CUDA) are looked for. -1 when the program's folder cannot
 * be found (buf then holds file alone). */
int upm_beside_program(const char *env_var, const char *file, char *buf, size_t n);
/* mkdir -p: the folder and its missing parents (mode 0777 less the umask). */
int upm_mkdirs(const char *path, upm_err *err);

#endif
