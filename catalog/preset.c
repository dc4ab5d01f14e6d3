/* The built-in preset "uniperceiver-moe": every pretraining dataset of the paper's Table 7 with its
 * task, per-GPU batch size, sampling weight and loss weight; the mixture that holds them; the
 * downstream evaluation sets of section 4.1; and the novel tasks of section 4.5 (MSVD, GLUE).
 * Shard URLs are placeholders (empty) for the user to set; label sets too large to ship (ImageNet,
 * Kinetics, Moments in Time) are registered empty for the user to fill. */
#include <stdio.h>
#include <string.h>

#include "catalog_ops.h"

#define MIXTURE "uniperceiver-moe-pretrain"
#define ZEROSHOT "uniperceiver-moe-zeroshot"
#define NOT_PAPER "batch size not given by the paper; a default"

typedef struct task_row {
    const char *name, *formulation, *inputs[3], *target, *labels, *prompt;
    int max_text, max_target;
    double loss_weight;
    const char *notes;
} task_row;

/* inputs: "FIELD=MODALITY"; target: a field, or "FIELD=MODALITY" for pair tasks. */
static const task_row tasks[] = {
    {"image-classification", "label", {"jpg=image"}, "cls", "imagenet-21k", NULL, 64, 32, 1.0,
     "Image classification (paper Table 7); targets are the class names of the dataset's label set"},
    {"video-classification", "label", {"mp4=video"}, "cls", "kinetics-700", NULL, 64, 32, 0.1,
     "Video classification (paper Table 7); targets are action names"},
    {"mlm", "vocab-mlm", {"txt=text"}, "txt", NULL, NULL, 128, 32, 0.5,
     "Masked language modeling (paper Table 7); whole-word masking, vocabulary targets"},
    {"image-caption", "vocab-caption", {"jpg=image", "txt=text"}, "txt", NULL, NULL, 32, 32, 1.0,
     "Image caption / language modeling with image clues (paper Table 7); causal text, vocabulary targets"},
    {"image-text-retrieval", "pair", {"jpg=image"}, "txt=text", NULL, NULL, 64, 32, 0.5,
     "Image-text retrieval (paper Table 7); in-batch negatives in both directions"},
    {"video-caption", "vocab-caption", {"mp4=video", "txt=text"}, "txt", NULL, NULL, 32, 32, 1.0,
     "Video caption, a novel task (paper section 4.5): not in pretraining"},
    {"video-text-retrieval", "pair", {"mp4=video"}, "txt=text", NULL, NULL, 64, 32, 1.0,
     "Video-text retrieval, a novel task (paper section 4.5): not in pretraining"},
#define GLUE_PAIR(a, b) "{json:" a "} ? <|endoftext|> it is <|spe|> , {json:" b "} <|endoftext|>"
    {"glue-mnli", "label", {"json:premise=text", "json:hypothesis=text"}, "json:label", "mnli-answers",
     GLUE_PAIR("premise", "hypothesis"), 128, 8, 1.0, "GLUE MNLI as a cloze task (paper section 4.5)"},
    {"glue-qnli", "label", {"json:question=text", "json:sentence=text"}, "json:label", "qnli-answers",
     GLUE_PAIR("question", "sentence"), 128, 8, 1.0, "GLUE QNLI as a cloze task (paper section 4.5)"},
    {"glue-qqp", "label", {"json:question1=text", "json:question2=text"}, "json:label", "qqp-answers",
     GLUE_PAIR("question1", "question2"), 128, 8, 1.0, "GLUE QQP as a cloze task (paper section 4.5)"},
    {"glue-rte", "label", {"json:sentence1=text", "json:sentence2=text"}, "json:label", "rte-answers",
     GLUE_PAIR("sentence1", "sentence2"), 128, 8, 1.0, "GLUE RTE as a cloze task (paper section 4.5)"},
    {"glue-mrpc", "label", {"json:sentence1=text", "json:sentence2=text"}, "json:label", "mrpc-answers",
     GLUE_PAIR("sentence1", "sentence2"), 128, 8, 1.0, "GLUE MRPC as a cloze task (paper section 4.5)"},
    {"glue-sst2", "label", {"json:sentence=text"}, "json:label", "sst2-answers",
     "{json:sentence} <|endoftext|> It is <|spe|>. <|endoftext|>", 128, 8, 1.0,
     "GLUE SST-2 as a cloze task (paper section 4.5)"},
    {"glue-cola", "label", {"json:sentence=text"}, "json:label", "cola-answers",
     "{json:sentence} This is <|spe|>. <|endoftext|>", 128, 8, 1.0, "GLUE CoLA as a cloze task (paper section 4.5)"},
};

typedef struct labels_row {
    const char *name;
    int synonyms;
    const char *words[4]; /* NULL-terminated; none = an empty set for the user to fill */
    const char *notes;
} labels_row;

#define FILL(n, flags) "fill with: upmoe-catalog add labels " n " FILE --replace" flags
static const labels_row label_sets[] = {
    {"imagenet-21k", 1, {NULL}, "ImageNet-21k classes with WordNet synonyms; " FILL("imagenet-21k", " --synonyms --keys")},
    {"imagenet-1k", 0, {NULL}, "ImageNet-1k class names in class-index order; " FILL("imagenet-1k", " --keys")},
    {"kinetics-700", 0, {NULL}, "Kinetics-700 action names; " FILL("kinetics-700", "")},
    {"kinetics-400", 0, {NULL}, "Kinetics-400 action names; " FILL("kinetics-400", "")},
    {"moments-in-time", 0, {NULL}, "Moments in Time action names; " FILL("moments-in-time", "")},
    /* Answer words in the class order of the GLUE distribution (0 = entailment for MNLI/QNLI/RTE). */
    {"mnli-answers", 0, {"yes", "maybe", "no"}, "MNLI: entailment, neutral, contradiction"},
    {"qnli-answers", 0, {"yes", "no"}, "QNLI: entailment, not_entailment"},
    {"qqp-answers", 0, {"no", "yes"}, "QQP: not_duplicate, duplicate"},
    {"rte-answers", 0, {"yes", "no"}, "RTE: entailment, not_entailment"},
    {"mrpc-answers", 0, {"no", "yes"}, "MRPC: not_equivalent, equivalent"},
    {"sst2-answers", 0, {"bad", "wonderful"}, "SST-2: negative, positive"},
    {"cola-answers", 0, {"incorrect", "correct"}, "CoLA: unacceptable, acceptable"},
};

typedef struct dataset_row {
    const char *name, *task, *split;
    int batch;
    double sampling_weight, loss_weight;
    const char *labels, *license, *notes;
    int pretrain; /* member of the Table 7 mixture */
} dataset_row;

#define FLICKR "images: Flickr terms of use"
#define CAP(base, w, lic, title)                                                                              \
    {base "-caption", "image-caption", "train", 100, w, 1.0, NULL, lic, title " (paper Table 7, image caption)", 1}, \
    {base "-retrieval", "image-text-retrieval", "train", 160, w, 0.5, NULL, lic,                                  \
     title " (paper Table 7, image-text retrieval)", 1}
static const dataset_row datasets[] = {
    {"imagenet-21k", "image-classification", "train", 220, 0.2486, 1.0, NULL, "ImageNet terms of use",
     "ImageNet-21k (paper Table 7)", 1},
    {"kinetics-700", "video-classification", "train", 6, 0.01, 0.1, NULL, "CC BY 4.0 (Google Inc.)",
     "Kinetics-700 (paper Table 7); videos overlapping the Kinetics-400 validation set removed (appendix 6.1)", 1},
    {"moments-in-time", "video-classification", "train", 24, 0.02, 0.1, "moments-in-time",
     "see the dataset's terms (not listed in the paper)", "Moments in Time (paper Table 7)", 1},
    {"books-wiki", "mlm", "train", 256, 0.275, 0.5, NULL,
     "BookCorpus: GPL-3.0 (replicated Toronto BookCorpus); Wikipedia: CC BY-SA 3.0 and GFDL",
     "BookCorpus & English Wikipedia (paper Table 7)", 1},
    CAP("yfcc", 0.0584, "Creative Commons (per photo)", "YFCC"),
    CAP("cc12m", 0.05057, "Conceptual 12M terms of use", "CC12M"),
    CAP("cc3m", 0.026295, "Conceptual Captions terms of use", "CC3M"),
    CAP("visual-genome", 0.01766, "CC BY 4.0", "Visual Genome"),
    CAP("coco", 0.01144, FLICKR, "COCO Caption"),
    CAP("sbu", 0.01383, FLICKR, "SBU Captions"),
    /* Downstream evaluation (section 4.1). */
    {"imagenet-1k", "image-classification", "val", 256, 1.0, 1.0, "imagenet-1k", "ImageNet terms of use",
     "ImageNet-1k validation, downstream evaluation (section 4.1); " NOT_PAPER, 0},
    {"kinetics-400", "video-classification", "val", 8, 1.0, 1.0, "kinetics-400", "CC BY 4.0 (Google Inc.)",
     "Kinetics-400 validation, downstream evaluation (section 4.1); " NOT_PAPER, 0},
    {"coco-caption-test", "image-caption", "test", 100, 1.0, 1.0, NULL, FLICKR,
     "COCO Caption Karpathy test split, downstream evaluation (section 4.1)", 0},
    {"coco-retrieval-test", "image-text-retrieval", "test", 160, 1.0, 1.0, NULL, FLICKR,
     "COCO 5k test images, downstream retrieval evaluation (section 4.1)", 0},
    {"flickr30k-caption-test", "image-caption", "test", 100, 1.0, 1.0, NULL, FLICKR,
     "Flickr30K test split, downstream caption evaluation (section 4.1)", 0},
    {"flickr30k-retrieval-test", "image-text-retrieval", "test", 160, 1.0, 1.0, NULL, FLICKR,
     "Flickr30K 1k test images, downstream retrieval evaluation (section 4.1)", 0},
    /* Novel tasks (section 4.5). */
    {"msvd-caption", "video-caption", "test", 8, 1.0, 1.0, NULL, "see the dataset's terms",
     "MSVD video caption, novel task (section 4.5); " NOT_PAPER, 0},
    {"msvd-retrieval", "video-text-retrieval", "test", 8, 1.0, 1.0, NULL, "see the dataset's terms",
     "MSVD video-text retrieval, novel task (section 4.5); " NOT_PAPER, 0},
#define GLUE(n, t, title) {n, t, "val", 32, 1.0, 1.0, NULL, "see the GLUE task's terms", title " dev set (section 4.5); " NOT_PAPER, 0}
    GLUE("mnli", "glue-mnli", "GLUE MNLI matched"),
    GLUE("qnli", "glue-qnli", "GLUE QNLI"),
    GLUE("qqp", "glue-qqp", "GLUE QQP"),
    GLUE("rte", "glue-rte", "GLUE RTE"),
    GLUE("mrpc", "glue-mrpc", "GLUE MRPC"),
    GLUE("sst2", "glue-sst2", "GLUE SST-2"),
    GLUE("cola", "glue-cola", "GLUE CoLA"),
};

/* "FIELD=MODALITY" -> input; the field may contain ':' (json:label) but never '='. */
static void split_input(const char *spec, char *field, size_t n, upm_modality *mod)
{
    const char *eq = strchr(spec, '=');
    snprintf(field, n, "%.*s", (int)(eq - spec), spec);
    upm_modality_parse(eq + 1, mod);
}

static int add_task(upm_catalog *cat, const task_row *r, upm_err *err)
{
    upm_task t;
    upm_task_init(&t);
    snprintf(t.name, sizeof t.name, "%s", r->name);
    upm_formulation_parse(r->formulation, &t.formulation);
    t.causal = t.formulation == UPM_FORM_VOCAB_CAPTION;
    for (int i = 0; i < 3 && r->inputs[i]; i++, t.n_inputs++)
        split_input(r->inputs[i], t.inputs[i].field, sizeof t.inputs[i].field, &t.inputs[i].modality);
    if (strchr(r->target, '='))
        split_input(r->target, t.target_field, sizeof t.target_field, &t.target_modality);
    else
        snprintf(t.target_field, sizeof t.target_field, "%s", r->target);
    snprintf(t.label_set, sizeof t.label_set, "%s", r->labels ? r->labels : "");
    snprintf(t.prompt, sizeof t.prompt, "%s", r->prompt ? r->prompt : "");
    t.max_text_len = r->max_text;
    t.max_target_len = r->max_target;
    t.loss_weight = r->loss_weight;
    snprintf(t.notes, sizeof t.notes, "%s", r->notes);
    return upm_task_add(cat, &t, err);
}

static int add_dataset(upm_catalog *cat, const dataset_row *r, upm_err *err)
{
    upm_dataset d;
    upm_dataset_init(&d);
    snprintf(d.name, sizeof d.name, "%s", r->name);
    snprintf(d.task, sizeof d.task, "%s", r->task);
    upm_split_parse(r->split, &d.split);
    d.batch_size = r->batch;
    d.sampling_weight = r->sampling_weight;
    d.loss_weight = r->loss_weight;
    snprintf(d.label_set, sizeof d.label_set, "%s", r->labels ? r->labels : "");
    snprintf(d.license, sizeof d.license, "%s", r->license);
    snprintf(d.notes, sizeof d.notes, "%s", r->notes);
    return upm_dataset_add(cat, &d, err);
}

static int add_labels(upm_catalog *cat, const labels_row *r, upm_err *err)
{
    upm_labelset ls;
    memset(&ls, 0, sizeof ls);
    snprintf(ls.name, sizeof ls.name, "%s", r->name);
    snprintf(ls.notes, sizeof ls.notes, "%s", r->notes);
    ls.synonyms = r->synonyms;
    int rc = 0;
    for (int i = 0; !rc && r->words[i]; i++)
        rc = upm_labelset_push(&ls, NULL, &r->words[i], 1, err);
    if (!rc)
        rc = upm_labelset_add(cat, &ls, 0, err);
    upm_labelset_free(&ls);
    return rc;
}

static int apply_uniperceiver_moe(upm_catalog *cat, upm_err *err)
{
    int rc = 0;
    for (size_t i = 0; !rc && i < sizeof label_sets / sizeof label_sets[0]; i++)
        rc = add_labels(cat, &label_sets[i], err);
    for (size_t i = 0; !rc && i < sizeof tasks / sizeof tasks[0]; i++)
        rc = add_task(cat, &tasks[i], err);
    for (size_t i = 0; !rc && i < sizeof datasets / sizeof datasets[0]; i++)
        rc = add_dataset(cat, &datasets[i], err);
    if (!rc)
        rc = upm_mixture_create(cat, MIXTURE,
                                "The pretraining mixture of Uni-Perceiver-MoE (paper Table 7); sampling weights "
                                "are the datasets' own, proportional to the square root of dataset size",
                                err);
    for (size_t i = 0; !rc && i < sizeof datasets / sizeof datasets[0]; i++) {
        if (!datasets[i].pretrain)
            continue;
        upm_mixture_member m = {.sampling_weight = -1, .loss_weight = -1};
        snprintf(m.dataset, sizeof m.dataset, "%s", datasets[i].name);
        rc = upm_mixture_add(cat, MIXTURE, &m, err);
    }
    /* the downstream and novel-task evaluation sets, for `upmoe-eval --mixture` (docs/evaluation.md) */
    if (!rc)
        rc = upm_mixture_create(cat, ZEROSHOT,
                                "The evaluation sets of the paper's zero-shot tables (sections 4.1 and 4.5): "
                                "upmoe-eval --checkpoint C --mixture " ZEROSHOT " once their URLs are set",
                                err);
    for (size_t i = 0; !rc && i < sizeof datasets / sizeof datasets[0]; i++) {
        if (datasets[i].pretrain)
            continue;
        upm_mixture_member m = {.sampling_weight = -1, .loss_weight = -1};
        snprintf(m.dataset, sizeof m.dataset, "%s", datasets[i].name);
        rc = upm_mixture_add(cat, ZEROSHOT, &m, err);
    }
    return rc;
}

static const char *const preset_names[] = {"uniperceiver-moe", NULL};

const char *const *upm_preset_names(void) { return preset_names; }

int upm_preset_apply(upm_catalog *cat, const char *preset, upm_err *err)
{
    if (strcmp(preset, "uniperceiver-moe") == 0)
        return apply_uniperceiver_moe(cat, err);
    return upm_errf(err, UPM_EUSAGE, "unknown preset '%s' (known: uniperceiver-moe)", preset);
}
