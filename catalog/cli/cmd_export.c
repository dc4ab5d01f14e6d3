/* upmoe-catalog export / import: the whole catalog as JSON, so a team can keep it under version
 * control. Export to a file is atomic (temporary file, fsync, rename); import is one transaction. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fileio.h"
#include "json.h"

int cmd_export(cli *c, int argc, char **argv)
{
    const char *out = NULL, *pos[1];
    int npos;
    const cli_opt opts[] = {{"output", 1, &out, NULL, NULL, NULL, 0}, {"o", 1, &out, NULL, NULL, NULL, 0}, {0}};
    /* Accept the short "-o FILE" too. */
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "-o") == 0)
            argv[i] = "--o";
    int rc = cli_parse(argc - 1, argv + 1, opts, pos, 0, &npos, "export");
    if (rc)
        return rc;
    upm_catalog *cat;
    if ((rc = cli_open(c, UPM_CAT_READONLY, &cat)))
        return rc;
    cJSON *doc = upm_catalog_export(cat, &c->err);
    upm_catalog_close(cat);
    if (!doc)
        return cli_fail(&c->err);
    char *text = cJSON_Print(doc);
    cJSON_Delete(doc);
    if (!text) {
        upm_errf(&c->err, UPM_ENOMEM, "out of memory writing the export");
        return cli_fail(&c->err);
    }
    size_t len = strlen(text);
    text = realloc(text, len + 2);
    strcat(text, "\n");
    if (out) {
        rc = upm_write_file_atomic(out, text, strlen(text), &c->err) ? cli_fail(&c->err) : 0;
        if (!rc)
            fprintf(stderr, "exported the catalog to %s\n", out);
    } else {
        fputs(text, stdout);
    }
    free(text);
    return rc;
}

typedef struct import_job {
    const cJSON *doc;
    const char *path;
} import_job;

static int import_fn(upm_catalog *cat, void *p, upm_err *err)
{
    import_job *j = p;
    return upm_catalog_import(cat, j->doc, j->path, err);
}

int cmd_import(cli *c, int argc, char **argv)
{
    const char *pos[1];
    int npos;
    int rc = cli_parse(argc - 1, argv + 1, NULL, pos, 1, &npos, "import");
    if (rc)
        return rc;
    if (npos != 1)
        return cli_usage_error("import", "import needs a FILE (an export; '-' for standard input)");
    char *text = NULL;
    upm_read_file(pos[0], &text, NULL, &c->err);
    if (!text)
        return cli_fail(&c->err);
    const char *end = NULL;
    cJSON *doc = cJSON_ParseWithOpts(text, &end, 1);
    if (!doc) {
        long off = end ? (long)(end - text) : 0;
        upm_errf(&c->err, UPM_EINVAL, "%s is not valid JSON (near byte %ld)", pos[0], off + 1);
        free(text);
        return cli_fail(&c->err);
    }
    free(text);
    upm_catalog *cat;
    import_job job = {doc, pos[0]};
    if (!(rc = cli_open(c, 0, &cat))) {
        rc = cli_write(c, cat, import_fn, &job);
        upm_catalog_close(cat);
    }
    if (!rc)
        printf("imported %s\n", pos[0]);
    cJSON_Delete(doc);
    return rc;
}
