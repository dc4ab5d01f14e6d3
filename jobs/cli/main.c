/* upmoe-jobs: queues pretraining jobs in the catalog, runs them with a local worker, and answers "how
 * is my run doing?" from the catalog (docs/jobs.md). It starts upmoe-train as a child process and meets
 * it only in the catalog; it does not link the trainer. One file per command (cmd_*.c); this one dispatches. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static const char usage[] =
    "usage: " PROG " [--catalog PATH] COMMAND ...\n"
    "Queues pretraining jobs in the catalog and runs them (docs/jobs.md).\n"
    "\n"
    "  submit pretrain [--mixture M] [--model ti|s|b|l] [--moe KIND] [--steps N] [--batch-scale F]\n"
    "                  [--ranks N] [--priority P] [--name NAME] [--backend local|slurm] [--max-attempts N]\n"
    "                  [--out DIR] [--dry-run] [-- extra upmoe-train arguments]\n"
    "                         checks the mixture (every dataset needs a real URL) and options, prints the job id\n"
    "                         (--dry-run: the exact command the worker would run, nothing queued); KIND: the\n"
    "                         routings of upmoe-train --moe (attribute, modality, task, task-specific, token, context, none)\n"
    "         Slurm only: [--partition P] [--time LIMIT] [--signal-lead S] [--cpus-per-rank N] [--gpus-per-rank N] [--sbatch-arg A]...\n"
    "                         sbatch runs the job; S seconds (120) before the time limit it checkpoints and is\n"
    "                         requeued; --gpus-per-rank N asks for N GPUs per rank (--gpus-per-task) and runs\n"
    "                         the ranks on the cuda backend; --sbatch-arg passes one more option to sbatch\n"
    "  submit eval --checkpoint C|JOB (--dataset D ... | --mixture M) [--limit N] [--name NAME]\n"
    "              [--priority P] [--max-attempts N] [--backend local|slurm] [--out DIR]\n"
    "              [Slurm options as above] [-- extra upmoe-eval arguments]\n"
    "                         queues upmoe-eval's full pass (one rank); results land in the catalog\n"
    "  worker [--slots N] [--once] [--lease S]   runs queued jobs (local backend) until stopped\n"
    "  list [--state S] [--json]                 jobs, newest last\n"
    "  status ID [--json]                        state, step / total, latest loss per task, samples/s, ETA,\n"
    "                                            last checkpoint, attempts, the exact command\n"
    "  cancel ID                                 a queued job at once; a running one checkpoints and stops\n"
    "  resume ID | retry ID                      a cancelled or failed job back to the queue (retry: with a\n"
    "                                            fresh attempt budget); it continues from its last checkpoint\n"
    "  metrics ID [--task T] [--since STEP] [--csv|--json]   the run's rows: step, task, loss, accuracy, lr\n"
    "  plot ID -o FILE.png|FILE.svg              per-task loss curves and the learning rate, by gnuplot\n"
    "  logs ID [-f]                              the job's log (-f: follow it until the job ends)\n"
    "  slurm-run ID                              the batch step of a Slurm job (sbatch runs it)\n"
    "\n"
    "  --catalog PATH   the catalog (default: $UPMOE_CATALOG, $UPMOE_HOME/catalog.db, ~/.upmoe/catalog.db)\n"
    "  -h, --help, --version\n";

/* The commands that take an open catalog; worker and slurm-run open their own. */
static const struct {
    const char *name;
    int (*run)(upm_catalog *cat, int argc, char **argv);
    int readonly, follow_slurm;
} commands[] = {
    {"submit", cmd_submit, 0, 0},  {"list", cmd_list, 1, 1},       {"status", cmd_status, 1, 1},
    {"cancel", cmd_cancel, 0, 0},  {"resume", cmd_resume, 0, 0},   {"retry", cmd_retry, 0, 0},
    {"logs", cmd_logs, 1, 0},      {"metrics", cmd_metrics, 1, 0}, {"plot", cmd_plot, 1, 0},
};

int main(int argc, char **argv)
{
    const char *cat_arg = NULL;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(usage, stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--version")) {
            printf(PROG " %s\n", UPMOE_VERSION);
            return 0;
        }
        if (!strcmp(argv[i], "--catalog") && i + 1 < argc)
            cat_arg = argv[++i];
        else
            return usage_error("unknown or incomplete option '%s'", argv[i]);
    }
    if (i >= argc)
        return usage_error("a command is needed%s", "");
    const char *cmd = argv[i];
    argc -= i, argv += i;
    char path[4096];
    upm_err err = {0};
    if (upm_catalog_resolve_path(cat_arg, path, sizeof path, &err))
        return fail(&err);
    if (path[0] != '/') { /* children and batch steps may run in another folder */
        char cwd[2048], rel[4096];
        snprintf(rel, sizeof rel, "%s", path);
        if (!getcwd(cwd, sizeof cwd) || snprintf(path, sizeof path, "%s/%s", cwd, rel) >= (int)sizeof path)
            return usage_error("cannot make the catalog path '%s' absolute", rel);
    }
    if (!strcmp(cmd, "worker"))
        return cmd_worker(path, argc, argv);
    if (!strcmp(cmd, "slurm-run"))
        return cmd_slurm_run(path, argc, argv);
    size_t k = 0, ncmd = sizeof commands / sizeof commands[0];
    while (k < ncmd && strcmp(cmd, commands[k].name))
        k++;
    if (k == ncmd)
        return usage_error("unknown command '%s'", cmd);
    upm_catalog *cat = NULL;
    if (upm_catalog_open(path, commands[k].readonly ? UPM_CAT_READONLY : 0, &cat, &err))
        return fail(&err);
    if (commands[k].follow_slurm)
        slurm_follow(path, cat);
    int rc = commands[k].run(cat, argc, argv);
    upm_catalog_close(cat);
    return rc;
}
