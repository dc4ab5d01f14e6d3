/* safetensors files (the Hugging Face format) for checkpoints: an 8-byte little-endian header length,
 * a JSON header naming each tensor's dtype, shape and byte range, then the raw row-major little-endian
 * data. Written atomically and streamed; read through a read-only mmap after full validation. */
#ifndef UPM_SAFETENSORS_H
#define UPM_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef enum upm_st_dtype {
    UPM_ST_F32,
    UPM_ST_F16,
    UPM_ST_BF16,
    UPM_ST_F64,
    UPM_ST_I64,
    UPM_ST_I32,
    UPM_ST_I16,
    UPM_ST_I8,
    UPM_ST_U8,
    UPM_ST_BOOL,
} upm_st_dtype;
#define UPM_ST_NDTYPES 10

#define UPM_ST_MAX_DIMS 8
/* The format's own limit on the JSON header (the reference implementation's MAX_HEADER_SIZE). */
#define UPM_ST_MAX_HEADER 100000000u
/* Shape entries and offsets are read through cJSON's doubles, so values above 2^53 are refused
 * rather than silently rounded; no real tensor comes near. */
#define UPM_ST_MAX_INT ((int64_t)1 << 53)

/* One tensor: for the writer, a description of caller memory; for the reader, a view into the file's
 * mapping (valid until upm_st_close). ndim == 0 is a scalar (one element). The reader's data pointer
 * is aligned to the element size only if the writer laid tensors out that way (upm_st_write keeps the
 * caller's order and never pads between tensors, and the data section starts 8-byte aligned), so
 * code reading typed values from a file of unknown origin should memcpy or check the alignment. */
typedef struct upm_st_tensor {
    const char *name;
    upm_st_dtype dtype;
    int ndim;
    int64_t shape[UPM_ST_MAX_DIMS];
    const void *data;
    size_t nbytes;
} upm_st_tensor;

/* Bytes per element (BOOL is one byte); 0 for a value outside the enum. */
size_t upm_st_dtype_size(upm_st_dtype t);
/* The format's name ("F32", "BF16", ...); "?" for a value outside the enum. */
const char *upm_st_dtype_name(upm_st_dtype t);
/* The dtype named s (exact, case-sensitive); 0 if found, -1 if not. */
int upm_st_dtype_parse(const char *s, upm_st_dtype *out);

/* Writes tensors (data in the given order, header entries in the same order) and metadata pairs
 * (meta = key, value, key, value, ..., NULL; may be NULL) to path atomically: a temporary name in the
 * same directory, fsync, rename, fsync of the directory. Each tensor's bytes are streamed from the
 * caller's memory (no copy of the whole file). The header is padded with spaces to a multiple of 8, so
 * the data section starts 8-byte aligned. Refuses (UPM_EINVAL, nothing written) duplicate, empty, non
 * UTF-8 or "__metadata__" names, more than UPM_ST_MAX_DIMS or negative dimensions, shapes whose
 * element count * dtype size != nbytes, duplicate metadata keys and a key without a value. On any
 * failure the temporary file is removed and an existing file at path is left as it was. */
int upm_st_write(const char *path, const upm_st_tensor *t, int n, const char *const *meta, upm_err *err);

typedef struct upm_st_file upm_st_file;

/* Opens path and validates all of it before returning: header length vs file size and the 100 MB
 * limit, UTF-8 JSON object, dtypes, shapes (non-negative, no overflow) vs data_offsets, tensors that
 * cover the data section with no hole or overlap and a file that ends at the last offset, metadata of
 * strings only, no duplicate or empty names. The file is mmapped read-only (a file truncated by
 * someone else while open can still raise SIGBUS, as with any mapping). Errors (UPM_EIO for the file
 * system, UPM_EBADDATA for the content) name the file and the offending tensor. */
int upm_st_open(const char *path, upm_st_file **out, upm_err *err);
/* The same validation over bytes in memory (data[0..n), which must outlive the handle), named `name` in
 * messages: for bytes that did not come from a file, and for the fuzz harness (fuzz/safetensors.c). */
int upm_st_open_mem(const void *data, size_t n, const char *name, upm_st_file **out, upm_err *err);
int upm_st_count(const upm_st_file *f);
/* Tensor i in data-offset order (0 <= i < count), else NULL. */
const upm_st_tensor *upm_st_at(const upm_st_file *f, int i);
/* The tensor named name, or NULL if absent. O(log n). */
const upm_st_tensor *upm_st_find(const upm_st_file *f, const char *name);
/* Metadata value of key, or NULL if absent. */
const char *upm_st_meta(const upm_st_file *f, const char *key);
/* Metadata pairs in the header's order: count, and key/value i (NULL when out of range). */
int upm_st_meta_count(const upm_st_file *f);
const char *upm_st_meta_key(const upm_st_file *f, int i);
const char *upm_st_meta_value(const upm_st_file *f, int i);
/* Size of the data section in bytes. */
size_t upm_st_data_bytes(const upm_st_file *f);
/* Unmaps and frees; NULL is fine. */
void upm_st_close(upm_st_file *f);

#endif
