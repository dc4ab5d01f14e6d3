/* The backend registry (backend.h): names to constructors, and which of them this build and machine can
 * run. A program takes --backend NAME (default $UPMOE_BACKEND, else "cpu") and opens it here. The CUDA
 * backend is a module loaded on first use (backend_module.h): $UPMOE_BACKEND_CUDA, else
 * libupmoe-backend-cuda.so next to the program. */
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fileio.h"
#include "backend.h"
#include "backend_module.h"

typedef struct entry {
    const char *name;
    int (*open)(const upm_backend_opts *o, upm_backend **out, upm_err *err);
    /* > 0 when this machine can run it; else 0 with the reason (NULL: always) */
    int (*usable)(char *why, size_t cap);
    const char *what;
} entry;

#define CUDA_MODULE "libupmoe-backend-cuda.so"

/* The CUDA module, loaded once; NULL with the reason when this build or machine has none. */
static const upm_backend_module *cuda_module(char *why, size_t cap)
{
    static const upm_backend_module *mod;
    static int tried;
    static char reason[PATH_MAX + 256];
    if (!tried) {
        tried = 1;
        char path[PATH_MAX];
        upm_beside_program("UPMOE_BACKEND_CUDA", CUDA_MODULE, path, sizeof path);
        void *dl = access(path, F_OK) == 0 ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
        upm_backend_module_fn fn = NULL;
        if (dl)
            *(void **)&fn = dlsym(dl, UPM_BACKEND_MODULE_ENTRY);
        if (access(path, F_OK) != 0)
            snprintf(reason, sizeof reason, "not part of this build (no %s; configure where nvcc is installed)", path);
        else if (!dl)
            snprintf(reason, sizeof reason, "cannot load %s: %s", path, dlerror());
        else if (!fn || !(mod = fn()) || mod->abi != UPM_BACKEND_MODULE_ABI) {
            snprintf(reason, sizeof reason, "%s is not a backend module of this version", path);
            mod = NULL;
        }
    }
    if (!mod && cap) { /* the reason, cut to the caller's buffer */
        size_t k = strlen(reason) < cap - 1 ? strlen(reason) : cap - 1;
        memcpy(why, reason, k);
        why[k] = 0;
    }
    return mod;
}

static int cuda_usable(char *why, size_t cap)
{
    const upm_backend_module *m = cuda_module(why, cap);
    return m ? m->probe(why, cap) : 0;
}

static int open_cuda(const upm_backend_opts *o, upm_backend **out, upm_err *err)
{
    char why[512];
    const upm_backend_module *m = cuda_module(why, sizeof why);
    return m ? m->open(o, out, err) : upm_errf(err, UPM_EUSAGE, "backend 'cuda': %s", why);
}

static int open_cpu(const upm_backend_opts *o, upm_backend **out, upm_err *err)
{
    return upm_backend_cpu_new(o->threads, out, err);
}

static int open_debug(const upm_backend_opts *o, upm_backend **out, upm_err *err)
{
    return upm_backend_debug_new(o->threads, out, err);
}

static const entry backends[] = {
    {"cpu", open_cpu, NULL, "oneDNN sgemm + OpenMP"},
    {"debug", open_debug, NULL,
     "the CPU ops on memory the host cannot dereference (finds host accesses to backend memory)"},
    {"cuda", open_cuda, cuda_usable, "NVIDIA GPUs: cuBLAS and CUDA kernels"},
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
    char why[512];
    for (int i = 0; i < NBACKENDS && n < cap; i++)
        if (!backends[i].usable || backends[i].usable(why, sizeof why) > 0)
            n += (size_t)snprintf(buf + n, cap - n, "%s%s", n ? ", " : "", backends[i].name);
}

int upm_backend_why_not(const char *name, char *why, size_t cap)
{
    for (int i = 0; i < NBACKENDS; i++)
        if (!strcmp(name, backends[i].name)) {
            if (!backends[i].usable || backends[i].usable(why, cap) > 0)
                return 0;
            return 1;
        }
    snprintf(why, cap, "unknown backend '%s'", name);
    return 1;
}

int upm_backend_open(const char *name, const upm_backend_opts *o, upm_backend **out, upm_err *err)
{
    *out = NULL;
    upm_backend_opts dflt = {0};
    if (!o)
        o = &dflt;
    if (!name)
        name = upm_backend_default();
    char usable[256], why[512];
    upm_backend_list(usable, sizeof usable);
    for (int i = 0; i < NBACKENDS; i++) {
        if (strcmp(name, backends[i].name))
            continue;
        if (backends[i].usable && backends[i].usable(why, sizeof why) < 1)
            return upm_errf(err, UPM_EUSAGE, "backend '%s' (%s): %s; backends here: %s", name, backends[i].what, why,
                            usable);
        return backends[i].open(o, out, err);
    }
    return upm_errf(err, UPM_EUSAGE, "unknown backend '%s'; backends here: %s", name, usable);
}

int upm_precision_parse(const char *name, const upm_backend *be, upm_dtype *out, upm_err *err)
{
    if (!name) /* the GPU recipe computes in bf16; the CPU has no bf16 matmul unit to gain from */
        name = !strcmp(be->name, "cuda") ? "bf16" : "fp32";
    if (!strcmp(name, "fp32"))
        *out = UPM_F32;
    else if (!strcmp(name, "bf16"))
        *out = UPM_BF16;
    else
        return upm_errf(err, UPM_EUSAGE, "--precision takes fp32 or bf16, not '%s'", name);
    return 0;
}
