/* A backend in a loadable module (libupmoe-backend-NAME.so next to the programs): the CUDA backend lives
 * in one, so programs, tests and sanitizer builds link no GPU library, and a machine without the CUDA
 * runtime runs everything else. The registry (backend_registry.c) loads it with dlopen when the backend
 * is named or listed, and calls the entry point UPM_BACKEND_MODULE_ENTRY for this table. */
#ifndef UPM_BACKEND_MODULE_H
#define UPM_BACKEND_MODULE_H

#include <stddef.h>

#include "backend.h"

#define UPM_BACKEND_MODULE_ABI 1
#define UPM_BACKEND_MODULE_ENTRY "upm_backend_module_v1"

typedef struct upm_backend_module {
    int abi; /* UPM_BACKEND_MODULE_ABI */
    const char *name;
    /* Devices this machine offers the backend (> 0), or 0 with the reason in why. */
    int (*probe)(char *why, size_t cap);
    int (*open)(const upm_backend_opts *o, upm_backend **out, upm_err *err);
} upm_backend_module;

typedef const upm_backend_module *(*upm_backend_module_fn)(void);

#endif
