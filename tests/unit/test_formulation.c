/* Unit test for tasks/formulation.c, the one table of what each formulation needs and runs, against the
 * paper (§3.1: classification scores the input against the label texts, retrieval pairs inputs with
 * their paired texts over the batch, MLM and captioning score positions against the vocabulary; §4.1:
 * classification trains with RandomResizedCrop) and against what the sampler does with it: the batch
 * shape collate builds for a task of each formulation follows the table (labels, target segment,
 * caption queries, MLM targets, the training transform). A value outside the enum is refused. */
#include <string.h>

#include "check.h"
#include "collate.h"
#include "formulation.h"

static upm_task task(upm_formulation f)
{
    upm_task t;
    memset(&t, 0, sizeof t);
    snprintf(t.name, sizeof t.name, "t%d", (int)f);
    t.formulation = f;
    t.max_text_len = 17, t.max_target_len = 9;
    t.inputs[t.n_inputs++] = (upm_task_input){.field = "jpg", .modality = UPM_MOD_IMAGE};
    if (f == UPM_FORM_VOCAB_MLM) /* text only */
        t.inputs[0] = (upm_task_input){.field = "txt", .modality = UPM_MOD_TEXT};
    if (f == UPM_FORM_VOCAB_CAPTION) /* the caption is an input, read causally */
        t.inputs[t.n_inputs++] = (upm_task_input){.field = "txt", .modality = UPM_MOD_TEXT}, t.causal = 1;
    snprintf(t.target_field, sizeof t.target_field, "%s", f == UPM_FORM_LABEL ? "cls" : "txt");
    t.target_modality = UPM_MOD_TEXT;
    return t;
}

int main(void)
{
    const upm_formulation forms[] = {UPM_FORM_LABEL, UPM_FORM_PAIR, UPM_FORM_VOCAB_MLM, UPM_FORM_VOCAB_CAPTION};
    const upm_formulation_desc *d[4];
    for (int i = 0; i < 4; i++) {
        d[i] = upm_formulation_desc_get(forms[i]);
        CHECK(d[i] && d[i]->id == forms[i] && d[i]->metric_name && d[i]->metric_name[0]);
    }
    /* the paper's formulations */
    CHECK(d[0]->targets == UPM_TARGETS_LABEL_TEXTS && d[0]->readout == UPM_READ_SPE && d[0]->loss == UPM_LOSS_TARGET_CE &&
          d[0]->metric == UPM_METRIC_TOP1 && d[0]->label_index && d[0]->classify_augment);
    CHECK(d[1]->targets == UPM_TARGETS_PAIRED && d[1]->readout == UPM_READ_SPE && d[1]->loss == UPM_LOSS_SYMMETRIC_PAIR &&
          d[1]->metric == UPM_METRIC_RETRIEVAL_R1 && d[1]->target_segment && !d[1]->label_index);
    CHECK(d[2]->targets == UPM_TARGETS_VOCABULARY && d[2]->readout == UPM_READ_MASKED && d[2]->mlm_mask &&
          d[2]->metric == UPM_METRIC_TOKEN_ACCURACY && !d[2]->caption_queries);
    CHECK(d[3]->targets == UPM_TARGETS_VOCABULARY && d[3]->readout == UPM_READ_QUERIES && d[3]->caption_queries &&
          d[3]->metric == UPM_METRIC_TOKEN_ACCURACY && !d[3]->mlm_mask);
    CHECK(upm_formulation_desc_get((upm_formulation)4) == NULL && upm_formulation_desc_get((upm_formulation)-1) == NULL);

    /* collation follows the table */
    upm_collate_opts o = {.train = 1, .augment = UPM_AUGMENT_PAPER, .image_size = 32, .frames = 2};
    for (int i = 0; i < 4; i++) {
        upm_task t = task(forms[i]);
        upm_batch_shape sh;
        upm_err err = {0};
        CHECK(upm_collate_shape(&t, &o, 2, &sh, &err) == 0);
        int targets = 0, queries = 0;
        for (int s = 0; s < sh.nseg; s++)
            targets += sh.seg[s].side == UPM_SIDE_TARGET, queries += sh.seg[s].query;
        CHECK(sh.with_labels == d[i]->label_index);
        CHECK(sh.with_mlm_targets == d[i]->mlm_mask);
        CHECK(targets == d[i]->target_segment);
        CHECK(queries == d[i]->caption_queries);
        upm_aug_image a;
        upm_collate_image_aug(&o, &t, UPM_SIDE_INPUT, &a);
        CHECK((a.mode == UPM_AUG_TRAIN_CLASSIFY) == d[i]->classify_augment);
    }
    upm_task bad = task(UPM_FORM_LABEL);
    bad.formulation = (upm_formulation)9;
    upm_batch_shape sh;
    upm_err err = {0};
    CHECK(upm_collate_shape(&bad, &o, 2, &sh, &err) == UPM_EINVAL && strstr(err.msg, "unknown formulation"));
    return CHECK_RESULT("test_formulation");
}
