/* Record-level catalog operations. Every write validates its record first (with messages that name
 * the offending value) and relies on the schema as the last line of defence. Writes do not open
 * transactions themselves: wrap a command's writes in upm_catalog_begin/commit so that a failure
 * leaves the catalog unchanged. */
#ifndef UPM_CATALOG_OPS_H
#define UPM_CATALOG_OPS_H

#include <stddef.h>

#include "catalog.h"
#include "records.h"

/* ---- validation (no database needed) ---- */
int upm_name_check(const char *kind, const char *name, upm_err *err);
int upm_field_check(const char *field, upm_err *err);
int upm_weight_check(const char *what, double w, upm_err *err);
int upm_task_validate(const upm_task *t, upm_err *err);
/* Also fills num_shards from the URL pattern when unknown, and checks it against the pattern. */
int upm_dataset_validate(upm_dataset *d, upm_err *err);
void upm_task_init(upm_task *t);       /* defaults: no inputs, weights 1, text limits 64 / 32 */
void upm_dataset_init(upm_dataset *d); /* defaults: train split, unknown counts, weight 1, batch 1 */

/* ---- tasks ---- */
int upm_task_add(upm_catalog *cat, const upm_task *t, upm_err *err);
int upm_task_get(upm_catalog *cat, const char *name, upm_task *out, upm_err *err);
typedef int (*upm_task_fn)(const upm_task *t, void *ctx);
int upm_task_foreach(upm_catalog *cat, upm_task_fn fn, void *ctx, upm_err *err);

/* ---- datasets ---- */
int upm_dataset_add(upm_catalog *cat, upm_dataset *d, upm_err *err);
int upm_dataset_get(upm_catalog *cat, const char *name, upm_dataset *out, upm_err *err);
/* Rewrites an existing dataset (same name) after validation. */
int upm_dataset_update(upm_catalog *cat, upm_dataset *d, upm_err *err);
typedef int (*upm_dataset_fn)(const upm_dataset *d, void *ctx);
int upm_dataset_foreach(upm_catalog *cat, upm_dataset_fn fn, void *ctx, upm_err *err);
/* The loss weight that applies: the dataset's, else its task's. */
int upm_dataset_effective_loss_weight(upm_catalog *cat, const upm_dataset *d, double *out, upm_err *err);

/* ---- label sets ---- */
typedef struct upm_label {
    char *key;     /* NULL when the set has no keys */
    int n_names;   /* >= 1; names[0] is the canonical text, the rest synonyms */
    char **names;
} upm_label;

typedef struct upm_labelset {
    char name[UPM_NAME_MAX + 1];
    int synonyms;
    char notes[UPM_NOTES_MAX + 1];
    size_t n;
    upm_label *labels;
} upm_labelset;

void upm_labelset_free(upm_labelset *ls); /* frees the labels, not ls itself */
/* Appends a label to ls (copies the strings). */
int upm_labelset_push(upm_labelset *ls, const char *key, const char *const *names, int n_names, upm_err *err);
/* Reads a label file: one label per line, UTF-8; with synonyms, each line is a comma-separated list of
 * names; with keyed, each line is KEY<TAB>label. Errors name the file and line. */
int upm_labelset_read_file(const char *path, int synonyms, int keyed, upm_labelset *ls, upm_err *err);
/* Adds a label set; with replace, an existing set of that name gets the new labels. */
int upm_labelset_add(upm_catalog *cat, const upm_labelset *ls, int replace, upm_err *err);
int upm_labelset_get(upm_catalog *cat, const char *name, upm_labelset *out, upm_err *err);
typedef struct upm_labelset_info {
    char name[UPM_NAME_MAX + 1];
    int synonyms;
    long long count;
    char notes[UPM_NOTES_MAX + 1];
} upm_labelset_info;
typedef int (*upm_labelset_fn)(const upm_labelset_info *info, void *ctx);
int upm_labelset_foreach(upm_catalog *cat, upm_labelset_fn fn, void *ctx, upm_err *err);

/* ---- mixtures ---- */
int upm_mixture_create(upm_catalog *cat, const char *name, const char *notes, upm_err *err);
int upm_mixture_add(upm_catalog *cat, const char *mixture, const upm_mixture_member *m, upm_err *err);
int upm_mixture_remove(upm_catalog *cat, const char *mixture, const char *dataset, upm_err *err);
int upm_mixture_get_notes(upm_catalog *cat, const char *mixture, char *notes, size_t n, upm_err *err);
typedef int (*upm_member_fn)(const upm_mixture_member *m, void *ctx);
int upm_mixture_foreach_member(upm_catalog *cat, const char *mixture, upm_member_fn fn, void *ctx, upm_err *err);
typedef int (*upm_mixture_fn)(const char *name, const char *notes, long long members, void *ctx);
int upm_mixture_foreach(upm_catalog *cat, upm_mixture_fn fn, void *ctx, upm_err *err);

/* ---- removal ---- */
typedef enum upm_kind { UPM_KIND_TASK, UPM_KIND_DATASET, UPM_KIND_LABELS, UPM_KIND_MIXTURE } upm_kind;
int upm_kind_parse(const char *s, upm_kind *out);
const char *upm_kind_name(upm_kind k);
/* 1 if a record of that kind and name exists, 0 if not, negative on error. */
int upm_exists(upm_catalog *cat, upm_kind kind, const char *name, upm_err *err);
/* The number of records of a kind. */
int upm_count(upm_catalog *cat, upm_kind kind, long long *n, upm_err *err);
/* Comma-separated names, in name order, into buf (truncated to n): the datasets of task `name` (kind
 * TASK) or the mixtures holding dataset `name` (kind DATASET). */
int upm_related_names(upm_catalog *cat, upm_kind kind, const char *name, char *buf, size_t n, upm_err *err);
/* Removes a record. Without cascade, refuses when anything depends on it and lists what. With
 * cascade, removes the dependents too (a task's datasets, their mixture memberships, ...). */
int upm_remove(upm_catalog *cat, upm_kind kind, const char *name, int cascade, upm_err *err);

/* ---- presets ---- */
/* Registers a named preset into an open write transaction. */
int upm_preset_apply(upm_catalog *cat, const char *preset, upm_err *err);
const char *const *upm_preset_names(void);

#endif
