/* The catalog's records as plain C structs: what a task, a dataset, a label set and a mixture member
 * are, independent of SQLite. The catalog functions read and write them; the sampler and the trainer
 * consume them. Fixed-size strings keep records copyable; the limits are checked on every write. */
#ifndef UPM_RECORDS_H
#define UPM_RECORDS_H

#include <stdint.h>

#define UPM_NAME_MAX 64      /* names of tasks, datasets, label sets, mixtures */
#define UPM_FIELD_MAX 64     /* a WebDataset field: extension, optionally ":" json key */
#define UPM_TEXT_MAX 1024    /* prompts, licences, URL patterns */
#define UPM_NOTES_MAX 4096
#define UPM_MAX_INPUTS 8

typedef enum upm_modality { UPM_MOD_IMAGE = 0, UPM_MOD_VIDEO, UPM_MOD_TEXT } upm_modality;

typedef enum upm_formulation {
    UPM_FORM_LABEL = 0,     /* targets are the texts of a label set */
    UPM_FORM_PAIR,          /* targets are each sample's paired field; in-batch negatives */
    UPM_FORM_VOCAB_MLM,     /* vocabulary targets at masked positions, bidirectional */
    UPM_FORM_VOCAB_CAPTION, /* vocabulary targets, next token, causal */
} upm_formulation;

typedef enum upm_split { UPM_SPLIT_TRAIN = 0, UPM_SPLIT_VAL, UPM_SPLIT_TEST } upm_split;

/* Training image/video augmentation (docs/training.md, "Augmentation"). A dataset's choice overrides the
 * run's; UPM_AUGMENT_INHERIT ("" in the catalog) takes the run's (upmoe-train --augment, default paper). */
typedef enum upm_augment {
    UPM_AUGMENT_INHERIT = 0,
    UPM_AUGMENT_PAPER, /* Uni-Perceiver's: RandomResizedCrop 0.08-1 + flip (classification), resize +
                          random crop + flip (other image tasks) */
    UPM_AUGMENT_LIGHT, /* RandomResizedCrop 0.5-1 (aspect 3/4-4/3), no flip */
    UPM_AUGMENT_NONE,  /* the evaluation transform: resize + centre crop */
} upm_augment;

typedef struct upm_task_input {
    char field[UPM_FIELD_MAX + 1];
    upm_modality modality;
} upm_task_input;

typedef struct upm_task {
    char name[UPM_NAME_MAX + 1];
    upm_formulation formulation;
    int causal; /* text input tokens use a causal attention mask */
    int n_inputs;
    upm_task_input inputs[UPM_MAX_INPUTS];
    char target_field[UPM_FIELD_MAX + 1]; /* "" when the formulation needs none */
    upm_modality target_modality;
    char label_set[UPM_NAME_MAX + 1]; /* "" unless formulation is label */
    char prompt[UPM_TEXT_MAX + 1];    /* "" = no prompt template */
    int max_text_len;                 /* tokens of input text, SPE and end-of-text included */
    int max_target_len;               /* tokens of each target text */
    double loss_weight;
    char notes[UPM_NOTES_MAX + 1];
} upm_task;

typedef struct upm_dataset {
    char name[UPM_NAME_MAX + 1];
    char task[UPM_NAME_MAX + 1];
    upm_split split;
    char url_pattern[UPM_TEXT_MAX + 1]; /* "" = placeholder, the user still has to set it */
    int64_t num_samples;                /* -1 = unknown */
    int64_t num_shards;                 /* -1 = unknown */
    double sampling_weight;
    double loss_weight;               /* < 0 = inherit the task's */
    int batch_size;                   /* per GPU (per rank) */
    char label_set[UPM_NAME_MAX + 1]; /* "" = the task's label set */
    upm_augment augment;              /* UPM_AUGMENT_INHERIT = the run's choice */
    char license[UPM_TEXT_MAX + 1];
    char notes[UPM_NOTES_MAX + 1];
} upm_dataset;

typedef struct upm_mixture_member {
    char dataset[UPM_NAME_MAX + 1];
    double sampling_weight; /* < 0 = inherit the dataset's */
    double loss_weight;     /* < 0 = inherit the dataset's (then the task's) */
} upm_mixture_member;

const char *upm_modality_name(upm_modality m);
int upm_modality_parse(const char *s, upm_modality *out);
const char *upm_formulation_name(upm_formulation f);
int upm_formulation_parse(const char *s, upm_formulation *out);
const char *upm_split_name(upm_split s);
int upm_split_parse(const char *s, upm_split *out);
/* "" (inherit), "paper", "light", "none" */
const char *upm_augment_name(upm_augment a);
int upm_augment_parse(const char *s, upm_augment *out);

#endif
