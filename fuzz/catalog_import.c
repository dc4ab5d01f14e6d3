/* Fuzz target "catalog_import": `upmoe-catalog import FILE` on arbitrary text: cJSON's parse as the command
 * does it, then upm_catalog_import's validation of every record (tasks, datasets, label sets, mixtures,
 * names, weights, attribute fields, references between them) against a catalog holding the paper's preset,
 * inside a transaction that is rolled back, so every input meets the same catalog. */
#include <string.h>
#include <unistd.h>

#include "catalog.h"
#include "catalog_ops.h"
#include "fuzz.h"
#include "json.h"

static upm_catalog *cat;
static char dir[64];

static void remove_catalog(void)
{
    char path[128];
    upm_catalog_close(cat);
    const char *files[] = {"catalog.db", "catalog.db-journal", "catalog.db-wal", "catalog.db-shm"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    /* tmpfs where there is one: the rollback journal is written for every input */
    snprintf(dir, sizeof dir, "%s/upmoe-fuzz-XXXXXX", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    char path[128];
    upm_err err = {0};
    if (!mkdtemp(dir) || snprintf(path, sizeof path, "%s/catalog.db", dir) < 0 ||
        upm_catalog_open(path, UPM_CAT_CREATE, &cat, &err) || upm_catalog_begin(cat, &err) ||
        upm_preset_apply(cat, "uniperceiver-moe", &err) || upm_catalog_commit(cat, &err)) {
        fprintf(stderr, "fuzz catalog_import: cannot make a catalog in %s: %s\n", dir, err.msg);
        exit(1);
    }
    atexit(remove_catalog);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_cstring(data, size);
    if (!text)
        return 0;
    const char *end = NULL;
    cJSON *doc = cJSON_ParseWithOpts(text, &end, 1);
    free(text);
    if (!doc)
        return 0;
    upm_err err = {0};
    FUZZ_CHECK(upm_catalog_begin(cat, &err) == 0);
    if (upm_catalog_import(cat, doc, "fuzz.json", &err) != 0)
        FUZZ_CHECK(err.msg[0]);
    else {
        /* what was imported exports again */
        cJSON *out = upm_catalog_export(cat, &err);
        FUZZ_CHECK(out);
        cJSON_Delete(out);
    }
    upm_catalog_rollback(cat);
    cJSON_Delete(doc);
    return 0;
}
