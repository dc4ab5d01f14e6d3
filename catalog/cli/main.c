/* upmoe-catalog: the command line of the catalog. Global options (--catalog, --json, --help) may
 * stand anywhere; the subcommand comes first among the rest. Exit codes: 0 ok, 1 runtime error,
 * 2 usage error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *const usage_main =
    "usage: " PROG " [--catalog PATH] COMMAND [ARGS] [--json]\n"
    "\n"
    "The upmoe catalog: tasks, datasets, label sets and mixtures in one SQLite file.\n"
    "\n"
    "commands:\n"
    "  init [--preset uniperceiver-moe]      create the catalog (the preset registers paper Table 7 and more)\n"
    "  add task NAME --formulation F --input FIELD=MODALITY ... [options]\n"
    "  add dataset NAME --task TASK --batch N [--url PATTERN] [options]\n"
    "  add labels NAME FILE [--synonyms] [--keys] [--replace]\n"
    "  set DATASET KEY=VALUE ...              change a dataset (url, weight, batch, ...)\n"
    "  remove task|dataset|labels|mixture NAME [--cascade]\n"
    "  list tasks|datasets|mixtures|labels\n"
    "  show [KIND] NAME                       one task, dataset, label set or mixture\n"
    "  mixture create|add|remove|show ...     the dataset mixtures pretraining jobs train on\n"
    "  attributes TASK                        the 8-bit token attributes of a task (paper Table 2)\n"
    "  verify DATASET [--decode] [--store]    stream every shard once; count samples, find bad ones\n"
    "  export [-o FILE]                       the whole catalog as JSON\n"
    "  import FILE                            add an export's records (FILE '-' = standard input)\n"
    "  results [--dataset D] [--run N] [--csv]   evaluation results stored by upmoe-eval\n"
    "\n"
    "options:\n"
    "  --catalog PATH   the catalog file (default: $UPMOE_CATALOG, else $UPMOE_HOME/catalog.db,\n"
    "                   else ~/.upmoe/catalog.db)\n"
    "  --json           machine-readable output (list, show, mixture show, attributes, export, results)\n"
    "  --help           help; '" PROG " COMMAND --help' for a command\n"
    "  --version        print the version\n"
    "\n"
    "exit status: 0 ok, 1 error, 2 usage error. Nothing is changed when a command fails.\n";

static const struct {
    const char *name;
    int (*fn)(cli *, int, char **);
    int json; /* has machine-readable output */
    const char *help;
} commands[] = {
    {"init", cmd_init, 0,
     "usage: " PROG " init [--preset NAME]\n\n"
     "Creates the catalog file (and its directory). With --preset uniperceiver-moe it registers every\n"
     "dataset of the paper's Table 7 with its task, batch size, sampling weight and loss weight, the mixture\n"
     "uniperceiver-moe-pretrain, the downstream evaluation sets and the novel tasks (MSVD, GLUE).\n"
     "A preset can also be applied to an existing catalog that lacks its records.\n"},
    {"add", cmd_add, 0,
     "usage: " PROG " add task NAME --formulation label|pair|vocab-mlm|vocab-caption\n"
     "           --input FIELD=MODALITY [--input ...] [--target FIELD[=MODALITY]] [--labels SET]\n"
     "           [--causal] [--prompt TEMPLATE] [--max-text-len N] [--max-target-len N]\n"
     "           [--loss-weight W] [--notes TEXT]\n"
     "       " PROG " add dataset NAME --task TASK --batch N [--url PATTERN] [--split train|val|test]\n"
     "           [--samples N] [--shards N] [--weight W] [--loss-weight W] [--labels SET]\n"
     "           [--augment paper|light|none] [--license TEXT] [--notes TEXT]\n"
     "       " PROG " add labels NAME FILE [--synonyms] [--keys] [--replace] [--notes TEXT]\n\n"
     "FIELD is a WebDataset extension (jpg, mp4, txt, cls, s1.txt) or a JSON key (json:label); MODALITY is\n"
     "image, video or text. --target names the field holding the class (label), the paired field with its\n"
     "modality (pair, e.g. txt=text), or the text input whose tokens are predicted (vocab-*).\n"
     "vocab-caption is causal; --causal makes the text inputs of another task causal.\n"
     "A prompt names text inputs as {FIELD} and may use <|endoftext|>, <|spe|> (where the answer is read),\n"
     "<|startoftext|>, <|mask|>, <|gen|>.\n"
     "URL patterns: /path, file:///path, http(s)://host/path, with {000..099} ranges and {a,b} lists;\n"
     "a relative path is stored as an absolute one. A dataset's loss weight defaults to its task's.\n"
     "--augment: the training augmentation of the dataset's images and videos: paper (Uni-Perceiver's),\n"
     "light (milder crops, no flip) or none (the evaluation transform); without it, the run's --augment.\n"
     "Label files: one label per line (UTF-8). --synonyms: a line is 'name, synonym, ...';\n"
     "--keys: a line is 'KEY<TAB>label' (e.g. a WordNet id); --replace: give an existing set new labels.\n"},
    {"set", cmd_set, 0,
     "usage: " PROG " set DATASET KEY=VALUE ...\n\n"
     "keys: url, task, split, augment (paper, light, none; 'inherit' = the run's --augment), samples,\n"
     "shards, weight (sampling), loss_weight ('inherit' = the task's), batch, labels ('inherit' = the\n"
     "task's), license, notes. All changes apply together or not at all.\n"
     "A new url recomputes the shard count from its pattern unless shards= is given too.\n"},
    {"remove", cmd_remove, 0,
     "usage: " PROG " remove task|dataset|labels|mixture NAME [--cascade]\n\n"
     "Refuses to remove a record that others depend on (a task with datasets, a dataset in a mixture,\n"
     "a label set in use) and lists them; --cascade removes them too.\n"},
    {"list", cmd_list, 1,
     "usage: " PROG " list tasks|datasets|mixtures|labels [--json]\n\n"
     "'list datasets' marks the datasets whose shard URL is still a placeholder.\n"},
    {"show", cmd_show, 1,
     "usage: " PROG " show [task|dataset|labels|mixture] NAME [--json]\n"},
    {"mixture", cmd_mixture, 1,
     "usage: " PROG " mixture create NAME [--notes TEXT]\n"
     "       " PROG " mixture add MIXTURE DATASET ... [--weight W] [--loss-weight W]\n"
     "       " PROG " mixture remove MIXTURE DATASET ...\n"
     "       " PROG " mixture show MIXTURE [--json]\n\n"
     "A member without --weight uses its dataset's sampling weight (and loss weight), so 'set' changes\n"
     "carry through. 'show' prints each member's probability: its weight over the sum of weights.\n"},
    {"attributes", cmd_attributes, 1,
     "usage: " PROG " attributes TASK [--json]\n\n"
     "Prints the 8-bit attribute of every kind of token of TASK, derived from its declaration, as bits\n"
     "(index 0 first) and as the paper writes them. Index: 0 visual in inputs, 1 text in inputs,\n"
     "2 visual in targets, 3 text in targets, 4 token is visual, 5 token is text, 6 causal mask,\n"
     "7 token comes from the inputs.\n"},
    {"verify", cmd_verify, 1,
     "usage: " PROG " verify DATASET [--decode [--threads N] [--bpe-vocab PATH]] [--store] [--max-bad-shards N]\n"
     "       [--json]\n\n"
     "Streams every shard of DATASET once, with the reader training uses (HTTP with retries and resume,\n"
     "WebDataset grouping), and reports samples, bytes, bad samples and bad shards; each bad item is named\n"
     "with its URL and key on stderr, with a progress line on a terminal.\n"
     "--decode also decodes every sample with the training decoders (images, videos, labels, text through\n"
     "the task's fields; evaluation's transforms) on N threads (default: every core), and reports the\n"
     "samples whose content does not decode (\"undecodable\") apart from the structural errors above.\n"
     "--store writes the sample count into the dataset and keeps the verification (all counts; 'show\n"
     "DATASET' prints the newest). Exit status 1 when anything was bad.\n"},
    {"export", cmd_export, 1,
     "usage: " PROG " export [--json] [-o FILE]\n\n"
     "Writes the whole catalog as JSON (the only format; --json is accepted) to standard output, or to\n"
     "FILE atomically (temporary file, fsync, rename).\n"},
    {"import", cmd_import, 0,
     "usage: " PROG " import FILE\n\n"
     "Adds every record of an export (FILE '-' reads standard input) in one transaction: if any record is\n"
     "invalid or already exists, nothing is added.\n"},
    {"results", cmd_results, 1,
     "usage: " PROG " results [--dataset NAME] [--run ID] [--csv | --json]\n\n"
     "The evaluation results upmoe-eval stored, oldest first: run and checkpoint step, dataset, metric,\n"
     "value, chance (a uniform guess's value), samples scored, when. Filter by dataset and/or run.\n"},
};
#define NCOMMANDS (int)(sizeof commands / sizeof commands[0])

int main(int argc, char **argv)
{
    cli c = {0};
    int help = 0, nrest = 0;
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    if (!rest)
        return 1;
    /* Pull the global options out of argv wherever they are. */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            while (i < argc)
                rest[nrest++] = argv[i++];
            break;
        } else if (strcmp(a, "--catalog") == 0) {
            if (i + 1 >= argc) {
                free(rest);
                return cli_usage_error(NULL, "option --catalog needs a value");
            }
            c.catalog_opt = argv[++i];
        } else if (strncmp(a, "--catalog=", 10) == 0) {
            c.catalog_opt = a + 10;
        } else if (strcmp(a, "--json") == 0) {
            c.json = 1;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            help = 1;
        } else if (strcmp(a, "--version") == 0) {
            printf(PROG " " UPMOE_VERSION " (catalog schema %d)\n", UPM_CATALOG_SCHEMA_VERSION);
            free(rest);
            return 0;
        } else {
            rest[nrest++] = argv[i];
        }
    }
    if (c.catalog_opt && !*c.catalog_opt) {
        free(rest);
        return cli_usage_error(NULL, "option --catalog needs a non-empty path");
    }
    if (nrest == 0 || strcmp(rest[0], "help") == 0) {
        const char *topic = nrest > 1 ? rest[1] : NULL;
        for (int i = 0; topic && i < NCOMMANDS; i++)
            if (strcmp(topic, commands[i].name) == 0) {
                fputs(commands[i].help, stdout);
                free(rest);
                return 0;
            }
        fputs(usage_main, (nrest == 0 && !help) ? stderr : stdout);
        free(rest);
        return (nrest == 0 && !help) ? EXIT_USAGE : 0;
    }
    int rc = -1;
    for (int i = 0; i < NCOMMANDS; i++) {
        if (strcmp(rest[0], commands[i].name) != 0)
            continue;
        if (help) {
            fputs(commands[i].help, stdout);
            rc = 0;
        } else if (c.json && !commands[i].json) {
            rc = cli_usage_error(commands[i].name, "--json is not available for '%s'", commands[i].name);
        } else {
            rc = commands[i].fn(&c, nrest, rest);
        }
        break;
    }
    if (rc < 0)
        rc = cli_usage_error(NULL, "unknown command '%s'", rest[0]);
    free(rest);
    return rc;
}
