/* upmoe-jobs worker [--slots N] [--once] [--lease S]: runs queued local jobs until stopped. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "worker.h"

int cmd_worker(const char *path, int argc, char **argv)
{
    upm_worker_opts o;
    upm_worker_opts_default(&o);
    for (int i = 1; i < argc; i++) {
        char *end;
        if (!strcmp(argv[i], "--once"))
            o.once = 1;
        else if (!strcmp(argv[i], "--slots") && i + 1 < argc) {
            long v = strtol(argv[++i], &end, 10);
            if (v < 1 || v > 1024 || *end)
                return usage_error("--slots needs an integer in [1, 1024], not '%s'", argv[i]);
            o.slots = (int)v;
        } else if (!strcmp(argv[i], "--lease") && i + 1 < argc) {
            double v = strtod(argv[++i], &end);
            if (!(v >= 1 && v <= 86400) || *end)
                return usage_error("--lease needs seconds in [1, 86400], not '%s'", argv[i]);
            o.lease_s = v;
        } else
            return usage_error("worker: unknown or incomplete option '%s'", argv[i]);
    }
    char train[PATH_MAX];
    sibling("upmoe-train", train, sizeof train);
    char eval_prog[PATH_MAX];
    sibling("upmoe-eval", eval_prog, sizeof eval_prog);
    if (access(train, X_OK)) {
        fprintf(stderr, PROG ": error: cannot run the trainer %s (set UPMOE_TRAIN)\n", train);
        return 1;
    }
    o.catalog = path, o.train = train, o.eval = eval_prog, o.stop = &cli_stop;
    cli_catch_stop();
    upm_err err = {0};
    return upm_worker_run(&o, &err) ? fail(&err) : 0;
}

