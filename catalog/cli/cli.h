/* Shared plumbing of the upmoe-catalog subcommands: option parsing, opening the catalog, error
 * reporting with the exit codes of the house style (1 runtime, 2 usage), aligned tables and JSON. */
#ifndef UPM_CLI_H
#define UPM_CLI_H

#include <cJSON.h>
#include <stdio.h>

#include "catalog_ops.h"

#define PROG "upmoe-catalog"
#define EXIT_USAGE 2

typedef struct cli {
    const char *catalog_opt; /* --catalog, or NULL */
    int json;                /* --json */
    upm_err err;
} cli;

/* One option of a subcommand: "--name" (flag) or "--name VALUE" / "--name=VALUE". A repeatable
 * option collects up to max values in vals. */
typedef struct cli_opt {
    const char *name;
    int has_arg;
    const char **val; /* last value (has_arg) */
    int *flag;        /* set to 1 when present (flags, or "was given" for values) */
    const char **vals;
    int *nvals;
    int max;
} cli_opt;

/* Parses argv[0..argc) into options and positionals. Returns 0, or prints a usage error and returns
 * EXIT_USAGE. "--" ends the options. */
int cli_parse(int argc, char **argv, const cli_opt *opts, const char **pos, int maxpos, int *npos, const char *cmd);

/* Prints "upmoe-catalog: error: ..." and returns the exit code for the error (2 for usage, else 1). */
int cli_fail(const upm_err *err);
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Resolves the catalog path and opens it (flags of upm_catalog_open); prints errors itself. */
int cli_open(cli *c, unsigned flags, upm_catalog **out);
/* Runs one write command: begin, fn, commit; rolls back (catalog unchanged) on failure. */
int cli_write(cli *c, upm_catalog *cat, int (*fn)(upm_catalog *, void *, upm_err *), void *ctx);

/* Number parsing with usage errors that name the option and value. */
int cli_weight(const char *cmd, const char *what, const char *s, double *out);
int cli_int(const char *cmd, const char *what, const char *s, long long min, long long max, long long *out);
/* Copies s into a fixed buffer or fails with a usage error naming what. */
int cli_copy(const char *cmd, const char *what, const char *s, char *buf, size_t n);

/* A relative shard path becomes absolute (the trainer may run elsewhere); URLs stay as they are. */
int cli_absolute_url(char *url, size_t n);

void cli_print_json(cJSON *doc); /* prints and frees */
void cli_fmt_weight(double w, char *buf, size_t n);

/* Aligned table for people. */
typedef struct cli_table cli_table;
cli_table *cli_table_new(int ncols, const char *const *headers, const char *right_aligned /* "01.." per col */);
void cli_table_add(cli_table *t, const char *const *cells);
void cli_table_print(cli_table *t, FILE *f); /* prints and frees */
void cli_table_free(cli_table *t);

/* A task's target in words: "labels imagenet-21k (class in cls)", "txt(text)", "vocabulary (txt)". */
void cli_target_text(const upm_task *t, char *buf, size_t n);

/* Subcommands: argv[0] is the subcommand name. */
int cmd_init(cli *c, int argc, char **argv);
int cmd_add(cli *c, int argc, char **argv);
int cmd_set(cli *c, int argc, char **argv);
int cmd_remove(cli *c, int argc, char **argv);
int cmd_list(cli *c, int argc, char **argv);
int cmd_show(cli *c, int argc, char **argv);
int cmd_mixture(cli *c, int argc, char **argv);
int cmd_attributes(cli *c, int argc, char **argv);
int cmd_export(cli *c, int argc, char **argv);
int cmd_verify(cli *c, int argc, char **argv);
int cmd_import(cli *c, int argc, char **argv);
int cmd_results(cli *c, int argc, char **argv);
/* The attribute table of a task (shared by `show task` and `attributes`). */
int cli_print_attributes(const upm_task *t, FILE *f);
/* `show` for a mixture, shared with `mixture show`. */
int cli_show_mixture(cli *c, upm_catalog *cat, const char *name);

#endif
