/* Task formulations, in one place: what each of the few generic formulations (paper §3.1: label targets,
 * paired targets, vocabulary targets; bidirectional or causal) needs from collation, which passes the
 * trainer runs for it, where its features are read out, its loss and its metric. The sampler and the
 * trainer ask this table instead of branching on the formulation themselves, so a new formulation is a
 * row here plus the code of whatever part is new. */
#ifndef UPM_TASKS_FORMULATION_H
#define UPM_TASKS_FORMULATION_H

#include "records.h"

/* What the scores are computed against. */
typedef enum upm_targets_kind {
    UPM_TARGETS_LABEL_TEXTS, /* the texts of the label set, encoded by a second pass every step */
    UPM_TARGETS_PAIRED,      /* each sample's paired field, a target-side segment; in-batch negatives */
    UPM_TARGETS_VOCABULARY,  /* vocabulary entries, each encoded as [<|spe|>, token] (trainer/vocab.h) */
} upm_targets_kind;

/* Where the input pass's features are read out. */
typedef enum upm_readout_kind {
    UPM_READ_SPE,     /* one per sequence: its <|spe|> token */
    UPM_READ_MASKED,  /* the masked positions of the first input text (MLM) */
    UPM_READ_QUERIES, /* the caption query segment, one <|gen|> per caption token */
} upm_readout_kind;

typedef enum upm_loss_kind {
    UPM_LOSS_TARGET_CE,      /* cross-entropy of each read-out over the target candidates (trainer/loss.h) */
    UPM_LOSS_SYMMETRIC_PAIR, /* both directions over the batch (CLIP-style) */
} upm_loss_kind;

typedef enum upm_metric_kind {
    UPM_METRIC_TOP1,           /* the true class ranked first */
    UPM_METRIC_RETRIEVAL_R1,   /* in evaluation: R@1 both ways, equal captions as ground truth (retrieval.h) */
    UPM_METRIC_TOKEN_ACCURACY, /* the target token ranked first among the candidates */
} upm_metric_kind;

typedef struct upm_formulation_desc {
    upm_formulation id;
    /* collation (sampler/collate.c) */
    int label_index;       /* each row carries a class index read from the task's target field */
    int target_segment;    /* the target field is collated as a target-side segment */
    int mlm_mask;          /* the input text is masked and its targets kept per position */
    int caption_queries;   /* a query segment follows the caption text (docs/pipeline.md) */
    int classify_augment;  /* inputs take the classification transform (paper: RandomResizedCrop 0.08-1 +
                              flip) under --augment paper; other formulations take the pair transform */
    /* passes, loss and metric (trainer/train.c) */
    upm_targets_kind targets;
    upm_readout_kind readout;
    upm_loss_kind loss;
    upm_metric_kind metric;
    const char *metric_name; /* for people: "top-1", "R@1", "token accuracy" */
} upm_formulation_desc;

/* The row of f (every value of upm_formulation has one); NULL for a value outside the enum. */
const upm_formulation_desc *upm_formulation_desc_get(upm_formulation f);

#endif
