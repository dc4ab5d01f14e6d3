/* upmoe-catalog export / import: the whole catalog as JSON, so a team can keep it under version
 * control. Export to a file is atomic (temporary file, fsync, rename); import is one transaction. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "json.h"

/* Writes text to path through path.tmp.PID + fsync + rename, so readers never see half a file. */
static int write_atomic(const char *path, const char *text, upm_err *err)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return upm_errf(err, UPM_EIO, "cannot write %s: %s", tmp, strerror(errno));
    size_t n = strlen(text), off = 0;
    while (off < n) {
        ssize_t w = write(fd, text + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return upm_errf(err, UPM_EIO, "cannot write %s: %s", tmp, strerror(e));
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        return upm_errf(err, UPM_EIO, "cannot write %s: %s", tmp, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return upm_errf(err, UPM_EIO, "cannot rename %s to %s: %s", tmp, path, strerror(e));
    }
    return 0;
}

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
        rc = write_atomic(out, text, &c->err) ? cli_fail(&c->err) : 0;
        if (!rc)
            fprintf(stderr, "exported the catalog to %s\n", out);
    } else {
        fputs(text, stdout);
    }
    free(text);
    return rc;
}

/* Reads a whole file ("-" = standard input) into a NUL-terminated buffer. */
static char *slurp(const char *path, upm_err *err)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        upm_errf(err, UPM_EINVAL, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    size_t n = 0, cap = 1 << 16;
    char *buf = malloc(cap);
    size_t r;
    while (buf && (r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (cap - n - 1 == 0) {
            char *p = realloc(buf, cap *= 2);
            if (!p)
                free(buf);
            buf = p;
        }
    }
    int bad = ferror(f);
    if (f != stdin)
        fclose(f);
    if (!buf || bad) {
        free(buf);
        upm_errf(err, UPM_EIO, "cannot read %s", path);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
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
    char *text = slurp(pos[0], &c->err);
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
