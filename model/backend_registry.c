/* The backend registry (backend.h): names to constructors, and which of them this build and machine can
 * run. A program takes --backend NAME (default $UPMOE_BACKEND, else "cpu") and opens it here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

typedef struct entry {
    const char *name;
    int (*open)(const upm_backend_opts *o, upm_backend **out, upm_err *err); /* NULL: not in this build */
    const char *what;
} entry;

static int open_cpu(const upm_backend_opts *o, upm_backend **out, upm_err *err)
{
    return upm_backend_cpu_new(o->threads, out, err);
}

static int open_debug(const upm_backend_opts *o, upm_backend **out, upm_err *err)
{
    return upm_backend_debug_new(o->threads, out, err);
}

static const entry backends[] = {
    {"cpu", open_cpu, "oneDNN sgemm + OpenMP"},
    {"debug", open_debug, "the CPU ops on memory the host cannot dereference (finds host accesses to backend memory)"},
    {"cuda", NULL, "NVIDIA GPUs: not part of this build"},
};
#define NBACKENDS (int)(sizeof backends / sizeof backends[0])

const char *upm_backend_default(void)
{
    const char *e = getenv("UPMOE_BACKEND");
    return e && *e ? e : "cpu";
}

void upm_backend_list(char *buf, size_t cap)
{
    size_t n = 0;
    if (cap)
        buf[0] = 0;
    for (int i = 0; i < NBACKENDS && n < cap; i++)
        if (backends[i].open)
            n += (size_t)snprintf(buf + n, cap - n, "%s%s", n ? ", " : "", backends[i].name);
}

int upm_backend_open(const char *name, const upm_backend_opts *o, upm_backend **out, upm_err *err)
{
    *out = NULL;
    upm_backend_opts dflt = {0};
    if (!o)
        o = &dflt;
    if (!name)
        name = upm_backend_default();
    char usable[256];
    upm_backend_list(usable, sizeof usable);
    for (int i = 0; i < NBACKENDS; i++) {
        if (strcmp(name, backends[i].name))
            continue;
        if (!backends[i].open)
            return upm_errf(err, UPM_EUSAGE, "backend '%s' (%s); backends here: %s", name, backends[i].what, usable);
        return backends[i].open(o, out, err);
    }
    return upm_errf(err, UPM_EUSAGE, "unknown backend '%s'; backends here: %s", name, usable);
}
