/* Where programs find CLIP's merges file when the command line names none (bpe.h: upm_bpe_default_path). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bpe.h"

#define MERGES "bpe_simple_vocab_16e6.txt"

static int readable(const char *path) { return access(path, R_OK) == 0; }

const char *upm_bpe_default_path(char *buf, size_t n)
{
    const char *env = getenv("UPMOE_BPE_VOCAB");
    if (env && *env)
        return snprintf(buf, n, "%s", env) < (int)n ? buf : NULL;
    /* next to the programs: tools/setup installs it into the build's share/ */
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {
        exe[len] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            if (snprintf(buf, n, "%s/share/" MERGES, exe) < (int)n && readable(buf))
                return buf;
        }
    }
    /* the catalog's home (docs/catalog.md): $UPMOE_HOME, else ~/.upmoe */
    const char *home = getenv("UPMOE_HOME"), *h = getenv("HOME");
    if (home && *home && snprintf(buf, n, "%s/" MERGES, home) < (int)n && readable(buf))
        return buf;
    if (h && *h && snprintf(buf, n, "%s/.upmoe/" MERGES, h) < (int)n && readable(buf))
        return buf;
    return NULL;
}
