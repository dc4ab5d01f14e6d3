/* The communicator (comm.h): launcher detection, the single-process backend, and loading the MPI
 * module only when a launcher started us. */
#include "fileio.h"
#include "comm.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "comm_module.h"
#include "progress.h"

#define MPI_MODULE "libupmoe-comm-mpi.so"

struct upm_comm {
    upm_comm_kind kind;
    int rank, world, local_rank, local_world;
    const upm_comm_ops *ops; /* NULL: local */
    void *impl, *dl;
    int failed;
    double wait_s, patience, timeout_s;
    char phase[256];
};

void upm_comm_opts_default(upm_comm_opts *o)
{
    memset(o, 0, sizeof *o);
    o->timeout_s = 60;
}

static int env_int(const char *name, int dflt)
{
    const char *v = getenv(name);
    char *end;
    long x = v && *v ? strtol(v, &end, 10) : -1;
    return v && *v && !*end && x >= 0 && x <= INT_MAX ? (int)x : dflt;
}

const char *upm_comm_launcher(int *world)
{
    /* Open MPI's mpirun; srun or mpiexec with PMIx / PMI-2 (Slurm's --mpi=pmix, MPICH's hydra). */
    static const struct { const char *size, *name; } known[] = {
        {"OMPI_COMM_WORLD_SIZE", "mpirun (Open MPI)"},
        {"PMIX_SIZE", "PMIx (srun --mpi=pmix)"},
        {"PMI_SIZE", "PMI (srun --mpi=pmi2 / mpiexec)"},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (getenv(known[i].size)) {
            *world = env_int(known[i].size, 1);
            return known[i].name;
        }
    if (getenv("PMIX_RANK")) { /* PMIx without a size variable: MPI finds it */
        *world = 0;
        return "PMIx (srun --mpi=pmix)";
    }
    *world = 1;
    return NULL;
}

static int open_mpi(upm_comm *c, const upm_comm_opts *o, upm_err *err)
{
    char path[PATH_MAX];
    if (upm_beside_program("UPMOE_COMM_MPI", MPI_MODULE, path, sizeof path))
        return upm_errf(err, UPM_EIO, "cannot find this program's folder to load %s (set UPMOE_COMM_MPI)",
                        MPI_MODULE);
    /* RTLD_GLOBAL: Open MPI's own plugins resolve symbols of libmpi loaded through us. */
    c->dl = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
    if (!c->dl)
        return upm_errf(err, UPM_EINVAL, "cannot load the MPI communicator %s: %s (build with Open MPI installed: "
                        "Debian packages openmpi-bin libopenmpi-dev)", path, dlerror());
    upm_comm_module_init_fn init;
    *(void **)&init = dlsym(c->dl, UPM_COMM_MODULE_ENTRY);
    if (!init)
        return upm_errf(err, UPM_EINVAL, "%s is not an upmoe communicator module", path);
    upm_comm_module_args mi = {.abi = UPM_COMM_MODULE_ABI, .timeout_s = o->timeout_s, .stop = o->stop,
                               .phase = c->phase, .wait_s = &c->wait_s, .patience = &c->patience,
                               .work = upm_progress_count};
    int rc = init(&mi, err);
    if (rc)
        return rc;
    c->ops = mi.ops, c->impl = mi.impl;
    c->rank = mi.rank, c->world = mi.world, c->local_rank = mi.local_rank, c->local_world = mi.local_world;
    return 0;
}

int upm_comm_open(const upm_comm_opts *o, upm_comm **out, upm_err *err)
{
    *out = NULL;
    upm_comm_opts dflt;
    if (!o) {
        upm_comm_opts_default(&dflt);
        o = &dflt;
    }
    if (!(o->timeout_s > 0))
        return upm_errf(err, UPM_EUSAGE, "communicator timeout must be > 0 seconds (got %g)", o->timeout_s);
    upm_comm *c = calloc(1, sizeof *c);
    if (!c)
        return upm_errf(err, UPM_ENOMEM, "no memory");
    snprintf(c->phase, sizeof c->phase, "start-up");
    c->patience = 10 * o->timeout_s; /* until the trainer knows its step times */
    c->timeout_s = o->timeout_s;
    int world = 1;
    const char *launcher = upm_comm_launcher(&world);
    c->kind = o->kind == UPM_COMM_AUTO ? (launcher ? UPM_COMM_MPI : UPM_COMM_LOCAL) : o->kind;
    c->world = c->local_world = 1;
    int rc = 0;
    if (c->kind == UPM_COMM_LOCAL && launcher && world > 1)
        rc = upm_errf(err, UPM_EUSAGE, "started by %s as one of %d ranks, but the communicator is 'local': use "
                      "--comm mpi (or auto)", launcher, world);
    else if (c->kind == UPM_COMM_MPI)
        rc = open_mpi(c, o, err);
    if (rc) {
        if (c->dl && !c->ops)
            dlclose(c->dl);
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void upm_comm_close(upm_comm *c, int failed)
{
    if (!c)
        return;
    if (c->ops)
        c->ops->close(c->impl, c->failed || (failed && c->world > 1)); /* dlclose is skipped: MPI's plugins stay mapped until exit */
    free(c);
}

int upm_comm_rank(const upm_comm *c) { return c->rank; }
int upm_comm_world(const upm_comm *c) { return c->world; }
int upm_comm_local_rank(const upm_comm *c) { return c->local_rank; }
int upm_comm_local_world(const upm_comm *c) { return c->local_world; }
const char *upm_comm_name(const upm_comm *c) { return c->ops ? "mpi" : "local"; }
double upm_comm_wait_seconds(const upm_comm *c) { return c->wait_s; }

void upm_comm_set_patience(upm_comm *c, double seconds) { c->patience = seconds; }
double upm_comm_timeout(const upm_comm *c) { return c->timeout_s; }
double upm_comm_patience(const upm_comm *c) { return c->patience; }

void upm_comm_set_phase(upm_comm *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->phase, sizeof c->phase, fmt, ap);
    va_end(ap);
}

/* A failed collective leaves the job unusable: remember it so close aborts every rank. */
static int done(upm_comm *c, int rc)
{
    if (rc)
        c->failed = 1;
    return rc;
}

int upm_comm_allreduce_sum(upm_comm *c, float *buf, size_t n, upm_err *err)
{
    upm_comm_req r;
    int rc = upm_comm_iallreduce_sum(c, buf, n, &r, err);
    return rc ? rc : upm_comm_wait(c, r, err);
}

int upm_comm_allreduce_mean(upm_comm *c, float *buf, size_t n, upm_err *err)
{
    int rc = upm_comm_allreduce_sum(c, buf, n, err);
    if (rc || c->world == 1)
        return rc;
    float scale = 1.0f / (float)c->world;
    for (size_t i = 0; i < n; i++)
        buf[i] *= scale;
    return 0;
}

int upm_comm_iallreduce_sum(upm_comm *c, float *buf, size_t n, upm_comm_req *req, upm_err *err)
{
    *req = -1;
    return c->ops ? done(c, c->ops->iallreduce_sum(c->impl, buf, n, req, err)) : 0;
}

int upm_comm_test(upm_comm *c, upm_comm_req req, int *is_done, upm_err *err)
{
    *is_done = 1;
    if (!c->ops || req < 0)
        return 0;
    return done(c, c->ops->test(c->impl, req, is_done, err));
}

int upm_comm_wait(upm_comm *c, upm_comm_req req, upm_err *err)
{
    return c->ops && req >= 0 ? done(c, c->ops->wait(c->impl, req, err)) : 0;
}

int upm_comm_allreduce_max_i64(upm_comm *c, int64_t *v, size_t n, upm_err *err)
{
    return c->ops ? done(c, c->ops->allreduce_max_i64(c->impl, v, n, err)) : 0;
}

int upm_comm_broadcast(upm_comm *c, void *buf, size_t bytes, int root, upm_err *err)
{
    if (root < 0 || root >= c->world)
        return upm_errf(err, UPM_EINVAL, "broadcast from rank %d of %d", root, c->world);
    return c->ops ? done(c, c->ops->broadcast(c->impl, buf, bytes, root, err)) : 0;
}

int upm_comm_barrier(upm_comm *c, upm_err *err)
{
    return c->ops ? done(c, c->ops->barrier(c->impl, err)) : 0;
}

int upm_comm_allgather(upm_comm *c, const void *mine, size_t bytes, void *all, upm_err *err)
{
    if (!c->ops) {
        if (bytes)
            memmove(all, mine, bytes);
        return 0;
    }
    return done(c, c->ops->allgather(c->impl, mine, bytes, all, err));
}

int upm_comm_allgatherv(upm_comm *c, const void *mine, size_t bytes, char **all, size_t **off, upm_err *err)
{
    int W = c->world;
    *all = NULL, *off = NULL;
    int64_t *sizes = calloc((size_t)W, sizeof *sizes), me = (int64_t)bytes;
    size_t *o = calloc((size_t)W + 1, sizeof *o), *counts = calloc((size_t)W, sizeof *counts);
    int rc = sizes && o && counts ? 0 : upm_errf(err, UPM_ENOMEM, "no memory");
    if (!rc)
        rc = upm_comm_allgather(c, &me, sizeof me, sizes, err);
    for (int r = 0; !rc && r < W; r++)
        counts[r] = (size_t)sizes[r], o[r + 1] = o[r] + counts[r];
    char *buf = rc ? NULL : malloc(o[W] + 1);
    if (!rc && !buf)
        rc = upm_errf(err, UPM_ENOMEM, "no memory for %zu gathered bytes", o[W]);
    if (!rc) {
        if (!c->ops)
            memcpy(buf, mine, bytes);
        else
            rc = done(c, c->ops->allgatherv(c->impl, mine, bytes, buf, counts, o, err));
    }
    free(sizes);
    free(counts);
    if (rc) {
        free(buf);
        free(o);
        return rc;
    }
    buf[o[W]] = 0;
    *all = buf, *off = o;
    return 0;
}
