/* upmoe-caption-score: BLEU-4 and CIDEr-D of generated captions against references, with the metrics
 * upmoe-eval stores (tasks/caption_metrics.h), for captions from any system. Files as nlg-eval's: one
 * caption per line; line i of every reference file is a reference of hypothesis line i. Exit codes: 0 ok,
 * 1 error, 2 usage error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caption_metrics.h"
#include "fileio.h"

#define PROG "upmoe-caption-score"

static const char usage[] =
    "usage: " PROG " [--json] [--per-sample] HYPOTHESES REFERENCES [REFERENCES...]\n"
    "\n"
    "Scores generated captions as upmoe-eval does: corpus BLEU-4 (as nltk's corpus_bleu) and CIDEr-D (as the\n"
    "COCO caption toolkit), on words lowercased with punctuation dropped. Every file holds one caption per\n"
    "line; line i of each REFERENCES file is a reference caption of line i of HYPOTHESES (give one file per\n"
    "reference, e.g. five for COCO).\n"
    "\n"
    "options:\n"
    "  --json         one JSON object: samples, bleu4, cider_d (and per_sample_cider_d with --per-sample)\n"
    "  --per-sample   also each hypothesis's CIDEr-D, one per line (text) or as a list (JSON)\n"
    "  --help         this help\n"
    "  --version      print the version\n"
    "\n"
    "exit status: 0 ok, 1 error (unreadable file, line counts differ), 2 usage error.\n";

typedef struct lines {
    char *data;
    char **line;
    size_t *len;
    size_t n;
} lines;

/* Splits a file into lines (a last line without '\n' counts; a trailing '\n' ends the last line). */
static int read_lines(const char *path, lines *l, upm_err *err)
{
    memset(l, 0, sizeof *l);
    size_t size;
    int rc = upm_read_file(path, &l->data, &size, err);
    if (rc)
        return rc;
    size_t cap = 1;
    for (size_t i = 0; i < size; i++)
        cap += l->data[i] == '\n';
    l->line = malloc(sizeof *l->line * cap), l->len = malloc(sizeof *l->len * cap);
    if (!l->line || !l->len)
        return upm_errf(err, UPM_ENOMEM, "no memory for %s", path);
    size_t start = 0;
    for (size_t i = 0; i <= size; i++)
        if (i == size || l->data[i] == '\n') {
            if (i == size && start == size)
                break;
            size_t e = i > start && l->data[i - 1] == '\r' ? i - 1 : i;
            l->line[l->n] = l->data + start, l->len[l->n++] = e - start;
            start = i + 1;
        }
    return 0;
}

static void free_lines(lines *l) { free(l->data), free(l->line), free(l->len); }

int main(int argc, char **argv)
{
    int json = 0, per = 0, nfiles = 0;
    const char **files = calloc((size_t)argc, sizeof *files);
    if (!files)
        return 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            free(files);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf(PROG " " UPMOE_VERSION "\n");
            free(files);
            return 0;
        }
        if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else if (strcmp(argv[i], "--per-sample") == 0)
            per = 1;
        else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, PROG ": error: unknown option '%s' (see " PROG " --help)\n", argv[i]);
            free(files);
            return 2;
        } else
            files[nfiles++] = argv[i];
    }
    if (nfiles < 2) {
        fprintf(stderr, PROG ": error: give the hypotheses file and at least one references file (see " PROG " --help)\n");
        free(files);
        return 2;
    }
    upm_err err = {0};
    lines *f = calloc((size_t)nfiles, sizeof *f);
    int rc = f ? 0 : upm_errf(&err, UPM_ENOMEM, "no memory");
    for (int i = 0; !rc && i < nfiles; i++)
        if (!(rc = read_lines(files[i], &f[i], &err)) && f[i].n != f[0].n)
            rc = upm_errf(&err, UPM_EINVAL, "%s has %zu lines, %s has %zu: line i of every file belongs to sample i",
                          files[i], f[i].n, files[0], f[0].n);
    upm_caption_corpus *c = rc ? NULL : upm_caption_corpus_new();
    const char **refs = calloc((size_t)nfiles, sizeof *refs);
    size_t *rl = calloc((size_t)nfiles, sizeof *rl);
    if (!rc && (!c || !refs || !rl))
        rc = upm_errf(&err, UPM_ENOMEM, "no memory");
    for (size_t s = 0; !rc && s < f[0].n; s++) {
        for (int r = 1; r < nfiles; r++)
            refs[r - 1] = f[r].line[s], rl[r - 1] = f[r].len[s];
        if (upm_caption_corpus_add(c, f[0].line[s], f[0].len[s], refs, rl, nfiles - 1))
            rc = upm_errf(&err, UPM_ENOMEM, "no memory for %zu captions", f[0].n);
    }
    size_t n = rc ? 0 : upm_caption_corpus_size(c);
    double *ps = n ? malloc(sizeof *ps * n) : NULL;
    double bleu = 0, cider = 0;
    if (!rc && n && !ps)
        rc = upm_errf(&err, UPM_ENOMEM, "no memory");
    if (!rc) {
        bleu = upm_caption_bleu4(c);
        cider = n ? upm_caption_cider_d(c, ps) : 0.0;
        if (cider < 0)
            rc = upm_errf(&err, UPM_ENOMEM, "no memory for CIDEr-D");
    }
    if (!rc && json) {
        printf("{\"samples\": %zu, \"bleu4\": %.17g, \"cider_d\": %.17g", n, bleu, cider);
        if (per) {
            printf(", \"per_sample_cider_d\": [");
            for (size_t i = 0; i < n; i++)
                printf("%s%.17g", i ? ", " : "", ps[i]);
            printf("]");
        }
        printf("}\n");
    } else if (!rc) {
        printf("samples  %zu\nbleu4    %.6f\ncider_d  %.6f\n", n, bleu, cider);
        for (size_t i = 0; per && i < n; i++)
            printf("%.6f\n", ps[i]);
    }
    if (rc)
        fprintf(stderr, PROG ": error: %s\n", err.msg);
    for (int i = 0; f && i < nfiles; i++)
        free_lines(&f[i]);
    free(f), free(files), free(refs), free(rl), free(ps);
    upm_caption_corpus_free(c);
    return rc ? 1 : 0;
}
