/* upm_err: the error record every fallible function fills.
 * Functions return 0 on success and a negative UPM_E* code on failure, and write a message that says
 * what went wrong and where (file, URL, name, value) into the caller's upm_err. */
#ifndef UPM_ERR_H
#define UPM_ERR_H

#include <stddef.h>

enum {
    UPM_OK = 0,
    UPM_EUSAGE = -1,   /* malformed argument or value given by the user (CLI exit 2) */
    UPM_EINVAL = -2,   /* well-formed but not acceptable here: unknown name, duplicate, dependency */
    UPM_EIO = -3,      /* file system or database I/O */
    UPM_EDB = -4,      /* the catalog file is not usable: not SQLite, not ours, newer schema, read-only */
    UPM_ENOMEM = -5,
    UPM_ENOTFOUND = -6, /* a resource that is not there: HTTP 404/403, a missing shard file */
    UPM_EBADDATA = -7,  /* corrupt or unusable input data: a bad sample, a damaged tar, a truncated JPEG */
    UPM_ECOMM = -8,     /* another rank died, hung or disagrees (data-parallel runs) */
    UPM_ELEASE = -9,    /* this process's job attempt lost its lease: another attempt owns the job now */
    UPM_EBACKEND = -10, /* a backend op failed (a kernel error, device memory exhausted): backend.h status */
};

typedef struct upm_err {
    int code;
    char msg[1024];
} upm_err;

/* Sets err (when non-NULL) and returns code, so callers can write `return upm_errf(err, ...)`. */
int upm_errf(upm_err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Clears err to "no error". */
void upm_err_clear(upm_err *err);

#endif
