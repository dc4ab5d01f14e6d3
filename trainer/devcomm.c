/* The device communicator's loader and bootstrap (devcomm.h). */
#include "fileio.h"
#include "devcomm.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "devcomm_module.h"

#define NCCL_MODULE "libupmoe-comm-nccl.so"

struct upm_devcomm {
    upm_comm *c;
    void *dl;
    const upm_devcomm_module *mod;
    void *impl;
};

static int load(upm_devcomm *d, upm_err *err)
{
    char path[PATH_MAX];
    upm_beside_program("UPMOE_COMM_NCCL", NCCL_MODULE, path, sizeof path);
    if (access(path, F_OK) != 0)
        return upm_errf(err, UPM_EUSAGE, "the NCCL communicator is not part of this build (no %s; it is built where "
                        "nvcc and NCCL are installed)", path);
    if (!(d->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL)))
        return upm_errf(err, UPM_EINVAL, "cannot load the device communicator %s: %s", path, dlerror());
    upm_devcomm_module_fn fn;
    *(void **)&fn = dlsym(d->dl, UPM_DEVCOMM_MODULE_ENTRY);
    if (!fn || !(d->mod = fn()) || d->mod->abi != UPM_DEVCOMM_MODULE_ABI || d->mod->id_bytes > UPM_DEVCOMM_ID_MAX)
        return upm_errf(err, UPM_EINVAL, "%s is not a device communicator module of this version", path);
    return 0;
}

int upm_devcomm_open(upm_comm *c, void *stream, upm_devcomm **out, upm_err *err)
{
    *out = NULL;
    upm_devcomm *d = calloc(1, sizeof *d);
    if (!d)
        return upm_errf(err, UPM_ENOMEM, "no memory for the device communicator");
    d->c = c;
    int rank = upm_comm_rank(c), world = upm_comm_world(c);
    upm_err mine = {0};
    /* Every rank takes part in every collective below, whatever failed before, so no rank waits alone. */
    int rc = load(d, &mine);
    unsigned char msg[1 + UPM_DEVCOMM_ID_MAX] = {0}; /* rank 0's status, then the id */
    if (rank == 0) {
        msg[0] = (unsigned char)(rc == 0 && d->mod->make_id(msg + 1, &mine) == 0);
        if (!rc && !msg[0])
            rc = mine.code ? mine.code : UPM_ECOMM;
    }
    upm_comm_set_phase(c, "starting the device communicator");
    int crc = upm_comm_broadcast(c, msg, sizeof msg, 0, err);
    if (crc) {
        upm_devcomm_close(d, 1);
        return crc;
    }
    if (!rc && !msg[0])
        rc = upm_errf(&mine, UPM_ECOMM, "rank 0 could not make the communicator's id");
    if (!rc)
        rc = d->mod->open(msg + 1, rank, world, stream, upm_comm_timeout(c), &d->impl, &mine);
    /* the outcome of every rank, with the first failure's reason */
    struct {
        int32_t rc;
        char why[200];
    } st = {rc, ""}, *all = calloc((size_t)world, sizeof *all);
    if (!all) {
        upm_devcomm_close(d, 1);
        return upm_errf(err, UPM_ENOMEM, "no memory");
    }
    if (rc) /* the reason, cut to the record's size */
        memcpy(st.why, mine.msg, sizeof st.why - 1);
    crc = upm_comm_allgather(c, &st, sizeof st, all, err);
    if (crc) {
        free(all);
        upm_devcomm_close(d, 1);
        return crc;
    }
    char ranks[256] = "";
    int bad = 0, first = -1;
    for (int r = 0; r < world; r++)
        if (all[r].rc) {
            size_t n = strlen(ranks);
            if (n < sizeof ranks - 16)
                snprintf(ranks + n, sizeof ranks - n, "%s%d", bad ? ", " : "", r);
            bad++;
            if (first < 0)
                first = r;
        }
    if (bad) {
        int code = all[first].rc == UPM_EUSAGE ? UPM_EUSAGE : UPM_ECOMM;
        upm_errf(err, code, "the device communicator could not start on rank%s %s (rank %d: %s)", bad > 1 ? "s" : "",
                 ranks, first, all[first].why);
        free(all);
        upm_devcomm_close(d, 1);
        return code;
    }
    free(all);
    *out = d;
    return 0;
}

const char *upm_devcomm_name(const upm_devcomm *d) { return d->mod->name; }

int upm_devcomm_allreduce_sum(upm_devcomm *d, float *buf, size_t n, upm_err *err)
{
    return d->mod->allreduce_sum(d->impl, buf, n, err);
}

int upm_devcomm_wait(upm_devcomm *d, upm_err *err)
{
    return d->mod->wait(d->impl, upm_comm_patience(d->c), err);
}

void upm_devcomm_close(upm_devcomm *d, int abort)
{
    if (!d)
        return;
    if (d->impl)
        d->mod->close(d->impl, abort);
    if (d->dl)
        dlclose(d->dl);
    free(d);
}
