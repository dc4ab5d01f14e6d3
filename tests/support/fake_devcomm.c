/* A stand-in device communicator module (devcomm_module.h) for the bootstrap tests on machines without
 * GPUs (tests/trainer/test_comm.py): rank 0's id is 32 random bytes; each rank's open prints the id it
 * received ("fake devcomm: rank R of W joined with id HEX" on stderr), so the test sees that every rank
 * got rank 0's. $FAKE_DEVCOMM_FAIL_RANK makes that rank's open fail, $FAKE_DEVCOMM_FAIL_ID rank 0's id. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devcomm_module.h"

enum { ID = 32 };

static int make_id(void *id, upm_err *err)
{
    if (getenv("FAKE_DEVCOMM_FAIL_ID")) {
        err->code = UPM_ECOMM;
        snprintf(err->msg, sizeof err->msg, "fake devcomm: no id (as asked)");
        return UPM_ECOMM;
    }
    FILE *f = fopen("/dev/urandom", "rb");
    size_t got = f ? fread(id, 1, ID, f) : 0;
    if (f)
        fclose(f);
    if (got != ID) {
        err->code = UPM_EIO;
        snprintf(err->msg, sizeof err->msg, "fake devcomm: cannot read /dev/urandom");
        return UPM_EIO;
    }
    return 0;
}

static int open_comm(const void *id, int rank, int world, void *stream, double timeout_s, void **impl, upm_err *err)
{
    (void)stream, (void)timeout_s;
    const char *fail = getenv("FAKE_DEVCOMM_FAIL_RANK");
    if (fail && atoi(fail) == rank) {
        err->code = UPM_ECOMM;
        snprintf(err->msg, sizeof err->msg, "fake devcomm: rank %d refused (as asked)", rank);
        return UPM_ECOMM;
    }
    char hex[2 * ID + 1];
    for (int i = 0; i < ID; i++)
        snprintf(hex + 2 * i, 3, "%02x", ((const unsigned char *)id)[i]);
    fprintf(stderr, "fake devcomm: rank %d of %d joined with id %s\n", rank, world, hex);
    *impl = malloc(1);
    return *impl ? 0 : UPM_ENOMEM;
}

static int allreduce_sum(void *impl, float *buf, size_t n, upm_err *err)
{
    (void)impl, (void)buf, (void)n;
    err->code = UPM_ECOMM;
    snprintf(err->msg, sizeof err->msg, "fake devcomm: no sums (bootstrap tests only)");
    return UPM_ECOMM;
}

static int wait_all(void *impl, double timeout_s, upm_err *err)
{
    (void)impl, (void)timeout_s, (void)err;
    return 0;
}

static void close_comm(void *impl, int abort)
{
    (void)abort;
    free(impl);
}

static const upm_devcomm_module module = {UPM_DEVCOMM_MODULE_ABI, "fake", ID, make_id, open_comm, allreduce_sum,
                                          wait_all, close_comm};

const upm_devcomm_module *upm_devcomm_module_v1(void);
const upm_devcomm_module *upm_devcomm_module_v1(void) { return &module; }
