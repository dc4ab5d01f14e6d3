/* Fuzz target "safetensors": the checkpoint reader's validation of a safetensors file (header length,
 * UTF-8 JSON header, dtypes, shapes and their overflow, data offsets covering the data section, metadata,
 * duplicates), over the bytes in memory, then every tensor's bytes read and looked up by name. */
#include <string.h>

#include "fuzz.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    upm_err err = {0};
    upm_st_file *f;
    if (upm_st_open_mem(data, size, "fuzz.safetensors", &f, &err)) {
        FUZZ_CHECK(err.msg[0]);
        return 0;
    }
    size_t total = 0;
    for (int i = 0; i < upm_st_count(f); i++) {
        const upm_st_tensor *t = upm_st_at(f, i);
        FUZZ_CHECK(t && t->name && upm_st_find(f, t->name) == t);
        FUZZ_CHECK(t->ndim >= 0 && t->ndim <= UPM_ST_MAX_DIMS);
        size_t elems = 1;
        for (int d = 0; d < t->ndim; d++)
            elems *= (size_t)t->shape[d];
        FUZZ_CHECK(elems * upm_st_dtype_size(t->dtype) == t->nbytes);
        FUZZ_CHECK((const uint8_t *)t->data >= data && (const uint8_t *)t->data + t->nbytes <= data + size);
        volatile uint8_t sink = 0;
        if (t->nbytes)
            sink ^= ((const uint8_t *)t->data)[0] ^ ((const uint8_t *)t->data)[t->nbytes - 1];
        (void)sink;
        total += t->nbytes;
    }
    FUZZ_CHECK(total == upm_st_data_bytes(f)); /* the tensors tile the data section */
    for (int i = 0; i < upm_st_meta_count(f); i++)
        FUZZ_CHECK(upm_st_meta(f, upm_st_meta_key(f, i)) != NULL && upm_st_meta_value(f, i));
    upm_st_close(f);
    return 0;
}
