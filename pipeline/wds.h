/* upm_wds: reads one WebDataset shard (a tar, optionally compressed) from a upm_source and groups its
 * members into samples exactly as Python's webdataset library does (tariterators.py).
 *
 * Grouping rules (webdataset's tar_file_iterator + group_by_keys, with base_plus_ext):
 *  - only regular files count: directories, symlinks, hard links and devices are skipped;
 *  - metadata members are skipped: a name without '/' that starts and ends with "__", or a name whose
 *    first path component is "__...__" (the regex "__[^/]*__($|/)");
 *  - the member path is split by the regex ^((?:.*\/|)[^.]+)[.]([^/]*)$ (Python `re` semantics, emulated
 *    exactly, backtracking order included): key = group 1, extension = group 2 lower-cased
 *    ("a.b/c.d.JPG" -> key "a.b/c", extension "d.jpg"); a name that does not match is skipped;
 *  - consecutive members with the same key form one sample; a key that reappears later starts a new one.
 * Where we differ on purpose: a sample with the same extension twice is reported and skipped whole
 * (Python raises, and with a "continue" handler keeps the sample minus the duplicate; half a sample is
 * worse for training than none); lower-casing is ASCII-only (Python's str.lower also folds non-ASCII
 * letters; extensions are ASCII in practice).
 *
 * Memory: one sample at a time; each member is read into an exact-size allocation, and a member larger
 * than max_member_size makes its sample bad (its bytes are skipped, never buffered), so a lying tar
 * header cannot exhaust memory. The source's buffer is the only other per-shard memory.
 *
 * Errors: a bad sample (duplicate extension, member over the size cap) is UPM_EBADDATA naming URL and
 * key, and reading continues with the next sample. A damaged or truncated archive is a shard error:
 * UPM_EBADDATA naming the URL and the last sample read before the damage; a source error (HTTP 404,
 * retries exhausted) keeps the source's code (UPM_ENOTFOUND, UPM_EIO). When the damage is in the header
 * that follows a sample whose members were all read, that sample is still returned (where Python's
 * tarfile silently ends the shard) and the next call reports the damage; a sample cut inside a member's
 * bytes is dropped. After a shard error upm_wds_broken() is 1 and every later call returns the same
 * error. A tar that simply ends at a member boundary without end-of-archive blocks reads as complete,
 * as in Python. */
#ifndef UPM_WDS_H
#define UPM_WDS_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "source.h"

typedef struct upm_wds_field {
    char *ext;           /* lower-cased extension, e.g. "jpg", "d.jpg" */
    unsigned char *data; /* the member's bytes (never NULL, also for an empty member) */
    size_t size;
} upm_wds_field;

typedef struct upm_wds_sample {
    char *key;           /* "__key__" */
    char *url;           /* "__url__": the shard's URL */
    uint64_t index;      /* 0-based position of this sample in its shard (bad samples count too) */
    size_t n_fields;
    upm_wds_field *fields; /* in archive order */
} upm_wds_sample;

/* Frees what the sample owns and zeroes it (safe on a zeroed sample). */
void upm_wds_sample_free(upm_wds_sample *s);
/* The field with extension ext, or NULL. */
const upm_wds_field *upm_wds_sample_get(const upm_wds_sample *s, const char *ext);

typedef struct upm_wds_opts {
    uint64_t max_member_size; /* default 256 MiB */
} upm_wds_opts;

void upm_wds_opts_default(upm_wds_opts *o);

typedef struct upm_wds upm_wds;

/* Opens url through a new upm_source (src_opts, opts may be NULL for defaults) and reads the archive's
 * first block, so a missing shard (UPM_ENOTFOUND) or a file that is not a tar (UPM_EBADDATA) fails here. */
int upm_wds_open(const char *url, const upm_source_opts *src_opts, const upm_wds_opts *opts, upm_wds **out,
                 upm_err *err);
/* The same over an open source, which the reader takes over on success (upm_wds_close closes it); on
 * error the caller still owns src (to read its retry count) and closes it. */
int upm_wds_open_source(upm_source *src, const upm_wds_opts *opts, upm_wds **out, upm_err *err);
void upm_wds_close(upm_wds *r);

/* Reads the next sample into *out (which the caller frees with upm_wds_sample_free). Returns 1 with a
 * sample, 0 at the end of the shard, or a negative UPM_E*: UPM_EBADDATA for a bad sample (the reader
 * goes on: call again) or a shard error (upm_wds_broken(r) == 1). */
int upm_wds_next(upm_wds *r, upm_wds_sample *out, upm_err *err);

/* Skips up to n samples reading only tar headers (member bytes are skipped, never copied or decoded);
 * *skipped says how many were skipped (fewer only at the end of the shard). Returns 0 or a shard error. */
int upm_wds_skip(upm_wds *r, uint64_t n, uint64_t *skipped, upm_err *err);

int upm_wds_broken(const upm_wds *r);
/* 1 when the shard has no more samples (known without further reading: the next header was read). */
int upm_wds_at_end(const upm_wds *r);
const char *upm_wds_url(const upm_wds *r);
/* Key of the last sample read, skipped or found bad, or NULL before the first. */
const char *upm_wds_last_key(const upm_wds *r);
/* Index the next sample will have (samples read or skipped so far). */
uint64_t upm_wds_next_index(const upm_wds *r);
upm_source *upm_wds_source(upm_wds *r);

/* Splits a member path as webdataset's base_plus_ext does: returns 1 and sets *key_len (the key is
 * name[0..key_len), the extension starts at name + key_len + 1) or 0 when the name does not match. */
int upm_wds_split_name(const char *name, size_t len, size_t *key_len);
/* 1 when webdataset skips the member name as metadata ("__meta__", "__x__/..."). */
int upm_wds_is_meta(const char *name, size_t len);

#endif
