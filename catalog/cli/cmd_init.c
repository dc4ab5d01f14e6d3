/* upmoe-catalog init: create the catalog, optionally with a preset. */
#include <string.h>

#include "cli.h"

static int apply_preset(upm_catalog *cat, void *preset, upm_err *err)
{
    return upm_preset_apply(cat, preset, err);
}

static long long count_of(upm_catalog *cat, upm_kind kind)
{
    long long n = -1;
    upm_count(cat, kind, &n, NULL);
    return n;
}

int cmd_init(cli *c, int argc, char **argv)
{
    const char *preset = NULL, *pos[1];
    int npos;
    const cli_opt opts[] = {{"preset", 1, &preset, NULL, NULL, NULL, 0}, {0}};
    int rc = cli_parse(argc - 1, argv + 1, opts, pos, 0, &npos, "init");
    if (rc)
        return rc;
    if (preset) {
        const char *const *names = upm_preset_names();
        int known = 0;
        for (int i = 0; names[i]; i++)
            known |= strcmp(names[i], preset) == 0;
        if (!known)
            return cli_usage_error("init", "unknown preset '%s' (known: uniperceiver-moe)", preset);
    }
    char path[4096];
    if ((rc = upm_catalog_resolve_path(c->catalog_opt, path, sizeof path, &c->err)))
        return cli_fail(&c->err);
    /* Always open with create: when several processes run init at once, the one that creates the
     * schema wins and the others find an existing catalog, decided under the migration lock. */
    upm_catalog *cat;
    if ((rc = upm_catalog_open(path, UPM_CAT_CREATE, &cat, &c->err)))
        return cli_fail(&c->err);
    int existed = !upm_catalog_created(cat);
    if (existed && !preset) {
        upm_catalog_close(cat);
        upm_errf(&c->err, UPM_EINVAL, "a catalog already exists at %s (use --preset NAME to add a preset to it)", path);
        return cli_fail(&c->err);
    }
    if (preset && (rc = cli_write(c, cat, apply_preset, (void *)preset))) {
        upm_catalog_close(cat);
        return rc;
    }
    printf("%s catalog %s (schema version %d)\n", existed ? "updated" : "created", path, UPM_CATALOG_SCHEMA_VERSION);
    if (preset)
        printf("preset %s: the catalog now holds label sets: %lld, tasks: %lld, datasets: %lld, mixtures: %lld\n"
               "next: give each dataset its shard URL with '" PROG " set DATASET url=PATTERN'\n"
               "      ('" PROG " list datasets' shows which still have a placeholder)\n",
               preset, count_of(cat, UPM_KIND_LABELS), count_of(cat, UPM_KIND_TASK), count_of(cat, UPM_KIND_DATASET),
               count_of(cat, UPM_KIND_MIXTURE));
    upm_catalog_close(cat);
    return 0;
}
