/* upmoe-eval: evaluates a checkpoint on a catalog mixture (typically held-out datasets): loss and
 * accuracy per dataset with evaluation transforms, no gate noise, no drop path, nothing written. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "train.h"
#include "vocab.h"

#define PROG "upmoe-eval"

static const char usage[] =
    "usage: " PROG " --mixture NAME --checkpoint DIR [--steps N] [--batch N] [--image-size S]\n"
    "       [--vocab-targets full|sampled:N] [--seed S] [--threads N] [--catalog PATH] [--bpe-vocab PATH] [--json]\n"
    "Evaluates the weights of a checkpoint (a step-* directory, or a run's --out directory for its newest)\n"
    "on N batches (default 10) of the mixture: loss and accuracy (label: top-1 over the label set;\n"
    "pair: R@1 image-to-text and text-to-image with the batch as the gallery, every text equal to a sample's\n"
    "caption counting as its ground truth; vocab: top-1 token) per dataset, each next to chance (a uniform\n"
    "guess among the candidates: the classes, the gallery's ground truths, the scored tokens).\n";

int main(int argc, char **argv)
{
    upm_train_opts o;
    upm_train_opts_default(&o);
    const char *ckpt = NULL;
    long long steps = 10;
    int json = 0;
    enum { O_MIX = 256, O_CKPT, O_STEPS, O_BATCH, O_IMAGE, O_VOCAB, O_SEED, O_THREADS, O_CAT, O_JSON, O_VERSION, O_BPE };
    static const struct option opts[] = {
        {"mixture", 1, 0, O_MIX}, {"checkpoint", 1, 0, O_CKPT}, {"steps", 1, 0, O_STEPS}, {"batch", 1, 0, O_BATCH},
        {"image-size", 1, 0, O_IMAGE}, {"vocab-targets", 1, 0, O_VOCAB}, {"seed", 1, 0, O_SEED},
        {"threads", 1, 0, O_THREADS}, {"catalog", 1, 0, O_CAT}, {"json", 0, 0, O_JSON}, {"bpe-vocab", 1, 0, O_BPE}, {"help", 0, 0, 'h'},
        {"version", 0, 0, O_VERSION}, {0, 0, 0, 0}};
    int c;
    upm_err verr;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end = NULL;
        long long v = optarg ? strtoll(optarg, &end, 10) : 0;
        int bad_int = optarg && (!*optarg || *end || v < 0);
        switch (c) {
        case O_MIX: o.mixture = optarg; break;
        case O_CKPT: ckpt = optarg; break;
        case O_STEPS: steps = v; break;
        case O_BATCH: o.batch = (int)v; break;
        case O_IMAGE: o.image_size = (int)v; break;
        case O_SEED: o.seed = (uint64_t)v; break;
        case O_THREADS: o.threads = (int)v; break;
        case O_CAT: o.catalog = optarg; bad_int = 0; break;
        case O_BPE: o.bpe_vocab = optarg; bad_int = 0; break;
        case O_JSON: json = 1; break;
        case O_VOCAB:
            bad_int = 0;
            if (upm_vocab_targets_parse(optarg, &o.vocab_sampled, &verr)) {
                fprintf(stderr, PROG ": error: %s\n", verr.msg);
                return 2;
            }
            break;
        case 'h': fputs(usage, stdout); return 0;
        case O_VERSION: printf(PROG " %s\n", UPMOE_VERSION); return 0;
        default: fprintf(stderr, PROG ": error: unknown or incomplete option '%s' (see --help)\n", argv[optind - 1]); return 2;
        }
        if (c != O_MIX && c != O_CKPT && c != O_BPE && bad_int) {
            fprintf(stderr, PROG ": error: %s needs a non-negative integer, not '%s'\n", argv[optind - 2], optarg);
            return 2;
        }
    }
    if (!o.mixture || !ckpt || optind < argc || steps < 1) {
        fprintf(stderr, PROG ": error: --mixture and --checkpoint are required, --steps >= 1 (see --help)\n");
        return 2;
    }
    if (!o.bpe_vocab)
        o.bpe_vocab = getenv("UPMOE_BPE_VOCAB");
    upm_err err = {0};
    char path[4096];
    if (upm_checkpoint_latest(ckpt, path, sizeof path, &err) != 0) /* a run directory: its newest */
        snprintf(path, sizeof path, "%s", ckpt);
    upm_eval_row *rows;
    int n;
    if (upm_evaluate(&o, path, steps, &rows, &n, &err)) {
        fprintf(stderr, PROG ": error: %s\n", err.msg);
        return err.code == UPM_EUSAGE ? 2 : 1;
    }
    if (json)
        printf("{\"checkpoint\": \"%s\", \"datasets\": [", path);
    for (int i = 0; i < n; i++) {
        const upm_eval_row *r = &rows[i];
        if (json) {
            printf("%s{\"dataset\": \"%s\", \"task\": \"%s\", \"batches\": %lld, \"samples\": %lld, \"scored\": %lld, "
                   "\"loss\": %.6f, \"accuracy\": ", i ? ", " : "", r->dataset, r->task, (long long)r->batches,
                   (long long)r->samples, (long long)r->scored, r->loss);
            if (r->accuracy >= 0)
                printf("%.6f, \"chance\": %.6f", r->accuracy, r->chance);
            else
                printf("null");
            if (r->accuracy_t2i >= 0)
                printf(", \"accuracy_t2i\": %.6f", r->accuracy_t2i);
            printf("}");
        } else {
            printf("%-24s %-28s %6lld samples  loss %.4f", r->dataset, r->task, (long long)r->samples, r->loss);
            if (r->accuracy_t2i >= 0)
                printf("  R@1 image->text %.4f, text->image %.4f (chance %.3g)", r->accuracy, r->accuracy_t2i,
                       r->chance);
            else if (r->accuracy >= 0)
                printf("  accuracy %.4f (chance %.3g, %.1fx)", r->accuracy, r->chance,
                       r->chance > 0 ? r->accuracy / r->chance : 0.0);
            printf("\n");
        }
    }
    if (json)
        printf("]}\n");
    free(rows);
    return 0;
}
