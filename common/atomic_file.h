/* Writing a file so that readers never see half of it: a temporary name in the same directory,
 * fsync, rename. Used for exports, cursors and anything else that must not tear. */
#ifndef UPM_ATOMIC_FILE_H
#define UPM_ATOMIC_FILE_H

#include <stddef.h>

#include "err.h"

int upm_write_file_atomic(const char *path, const void *data, size_t n, upm_err *err);
/* mkdir -p: the folder and its missing parents (mode 0777 less the umask). */
int upm_mkdirs(const char *path, upm_err *err);

#endif
