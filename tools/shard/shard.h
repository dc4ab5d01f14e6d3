/* upmoe-shard internals: the sample list every input kind (class folder, CSV/JSONL annotations, plain
 * text) builds, and the shard writer that turns the list into WebDataset tar shards with libarchive.
 * Inputs are read and checked completely before the first shard is written. */
#ifndef UPM_SHARD_H
#define UPM_SHARD_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define UPM_SHARD_PROG "upmoe-shard"
#define UPM_SHARD_EXT_MAX 16

typedef enum upm_shard_kind {
    UPM_KIND_IMAGE_CLASS,
    UPM_KIND_VIDEO_CLASS,
    UPM_KIND_IMAGE_CAPTION,
    UPM_KIND_VIDEO_CAPTION,
    UPM_KIND_TEXT,
} upm_shard_kind;

/* One tar member of a sample: its extension and its bytes, taken from a file or held in memory. */
typedef struct upm_shard_member {
    char ext[UPM_SHARD_EXT_MAX]; /* "jpg", "txt", "cls": the member is "<key>.<ext>" */
    char *path;                  /* source file (owned), or NULL when data holds the bytes */
    char *data;                  /* owned bytes when path is NULL */
    uint64_t size;               /* bytes: the file's size when the input was read, or of data */
} upm_shard_member;

typedef struct upm_shard_sample {
    uint64_t index;  /* position in input order: the default key */
    char *keypath;   /* --key-from-path: the sanitised key (owned), else NULL */
    const char *src; /* file the sample came from (borrowed from the list's sources) */
    uint64_t line;   /* its line in src (annotations, text), 0 for a folder entry */
    int n;
    upm_shard_member m[2];
} upm_shard_sample;

typedef struct upm_shard_list {
    upm_shard_sample *v;
    size_t n, cap;
    char **classes; /* class names in index order (class kinds), owned */
    size_t nclasses;
    char **sources; /* file names that samples point into, owned */
    size_t nsources;
    uint64_t skipped;   /* folder entries that are not media files of the kind */
    char *skipped_first; /* the first of them, for the warning (owned) */
} upm_shard_list;

/* How an input is read. Field names apply to annotation files. */
typedef struct upm_shard_input {
    upm_shard_kind kind;
    const char *path_field, *text_field, *label_field;
    const char *format;       /* "csv", "jsonl" or NULL (from the file's extension) */
    const char *classes_file; /* --classes: fixed class list for name labels */
    int numeric_labels;       /* --numeric-labels: a label is the class index itself */
    int key_from_path;
    long lines_per_sample, paragraphs_per_sample; /* text kind: exactly one is > 0 */
} upm_shard_input;

/* samples.c: list ownership and shared helpers. */
void upm_shard_list_free(upm_shard_list *l);
/* Appends a zeroed sample (index = its position) and returns it, or NULL when out of memory. */
upm_shard_sample *upm_shard_list_push(upm_shard_list *l);
/* Keeps a copy of name for samples to point at; returns it or NULL when out of memory. */
const char *upm_shard_list_source(upm_shard_list *l, const char *name);
/* Member from a file: checks it is a regular file, records its size. where = "FILE:LINE: " or "". */
int upm_shard_member_file(upm_shard_member *m, const char *ext, const char *path, const char *where, upm_err *err);
/* Member from bytes (copied). */
int upm_shard_member_bytes(upm_shard_member *m, const char *ext, const char *bytes, size_t n, upm_err *err);
/* The member extension for a media file of the kind: lower-cased, "jpeg"/"jpe" -> "jpg"; refuses an
 * extension that is not an image (video) format. */
int upm_shard_media_ext(upm_shard_kind kind, const char *path, char ext[UPM_SHARD_EXT_MAX], const char *where,
                        upm_err *err);
/* Sets s->keypath from rel (a path relative to the input's folder): extension dropped, anything but
 * [A-Za-z0-9_-/] replaced by '_', so WebDataset's "key = up to the first dot" rule reads it back. */
int upm_shard_set_keypath(upm_shard_sample *s, const char *rel, upm_err *err);
/* Refuses two samples with the same --key-from-path key, naming both sources. */
int upm_shard_check_unique_keys(const upm_shard_list *l, upm_err *err);
/* Deterministic Fisher-Yates shuffle from the counter-based RNG. */
void upm_shard_shuffle(upm_shard_list *l, uint64_t seed);
/* Writes the class names one per line to path atomically (temporary name, fsync, rename). */
int upm_shard_write_classes(const upm_shard_list *l, const char *path, upm_err *err);
/* "FILE:LINE: " (or "FILE: " when line is 0) into buf, for error messages. */
const char *upm_shard_where(char *buf, size_t n, const char *file, uint64_t line);

/* folder.c: DIR/<class>/<file>, classes sorted by name. */
int upm_shard_read_folder(const char *dir, const upm_shard_input *in, upm_shard_list *l, upm_err *err);
/* annotations.c: CSV with a header row, or JSON Lines. */
int upm_shard_read_annotations(const char *file, const upm_shard_input *in, upm_shard_list *l, upm_err *err);
/* textsplit.c: a plain text file cut into samples of N lines or N paragraphs. */
int upm_shard_read_text(const char *file, const upm_shard_input *in, upm_shard_list *l, upm_err *err);

/* csv.c: RFC 4180 records (quoted fields may hold commas, quotes as "", and line breaks). */
typedef struct upm_csv {
    const char *file; /* for messages */
    const char *p, *end;
    uint64_t line; /* line where the next record starts */
    char **fields;
    size_t nfields, cap;
    char *buf;
    size_t buflen, bufcap;
} upm_csv;
void upm_csv_init(upm_csv *c, const char *file, const char *text, size_t n);
void upm_csv_free(upm_csv *c);
/* Reads the next record: 1 with c->fields filled (and *line its first line), 0 at the end, or a
 * negative code. Blank lines are skipped. */
int upm_csv_next(upm_csv *c, uint64_t *line, upm_err *err);

/* writer.c */
typedef struct upm_shard_opts {
    const char *out_dir;
    const char *prefix;
    uint64_t max_samples, max_bytes;
    int force, progress;
    long mtime; /* member mtime, fixed for reproducible bytes */
    volatile sig_atomic_t *interrupted; /* set by SIGINT/SIGTERM handlers */
} upm_shard_opts;

typedef struct upm_shard_result {
    uint64_t samples, shards, bytes, oversized, removed_stale;
    char out_abs[4096]; /* the output folder as an absolute path */
    char url[4200];     /* brace pattern of the written shards */
} upm_shard_result;

/* writer.c: writes all shards. On failure removes the temporary file and the shards this run wrote. */
int upm_shard_write_all(const upm_shard_list *l, const upm_shard_opts *o, upm_shard_result *r, upm_err *err);

/* outdir.c: creates the output folder when missing, fills r->out_abs, checks that it can stand in a
 * shard URL pattern, refuses existing shards of the prefix (unless force) and removes temporary files
 * that dead runs left. */
int upm_shard_prepare(const upm_shard_opts *o, upm_shard_result *r, upm_err *err);
/* --force: removes PREFIX-NNNNNN.tar shards numbered nshards or more (left by a larger earlier run). */
int upm_shard_remove_stale(const upm_shard_opts *o, uint64_t nshards, uint64_t *removed, upm_err *err);

#endif
