/* The catalog as JSON (cJSON): one object per record with stable keys (docs/catalog.md), used by
 * `export`, `import`, `list --json` and `show --json`. */
#ifndef UPM_CATALOG_JSON_H
#define UPM_CATALOG_JSON_H

#include <cJSON.h>

#include "catalog_ops.h"

#define UPM_EXPORT_FORMAT "upmoe-catalog"

cJSON *upm_task_to_json(const upm_task *t);
cJSON *upm_dataset_to_json(const upm_dataset *d);
cJSON *upm_labelset_to_json(const upm_labelset *ls);
/* A mixture with its members; NULL and err set on failure. */
cJSON *upm_mixture_to_json(upm_catalog *cat, const char *name, upm_err *err);

/* The whole catalog. */
cJSON *upm_catalog_export(upm_catalog *cat, upm_err *err);
/* Adds everything in doc (an export) to the catalog, inside the caller's transaction; what names a
 * source for messages (a file name). */
int upm_catalog_import(upm_catalog *cat, const cJSON *doc, const char *what, upm_err *err);

#endif
