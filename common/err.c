/* upm_err helpers: formatting of error messages (see err.h). */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>

int upm_errf(upm_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

void upm_err_clear(upm_err *err)
{
    if (err) {
        err->code = UPM_OK;
        err->msg[0] = '\0';
    }
}
