/* The table of task formulations (see formulation.h). */
#include "formulation.h"

#include <stddef.h>

static const upm_formulation_desc table[] = {
    [UPM_FORM_LABEL] = {.id = UPM_FORM_LABEL, .label_index = 1, .classify_augment = 1,
                        .targets = UPM_TARGETS_LABEL_TEXTS, .readout = UPM_READ_SPE, .loss = UPM_LOSS_TARGET_CE,
                        .metric = UPM_METRIC_TOP1, .metric_name = "top-1"},
    [UPM_FORM_PAIR] = {.id = UPM_FORM_PAIR, .target_segment = 1, .targets = UPM_TARGETS_PAIRED,
                       .readout = UPM_READ_SPE, .loss = UPM_LOSS_SYMMETRIC_PAIR, .metric = UPM_METRIC_RETRIEVAL_R1,
                       .metric_name = "R@1"},
    [UPM_FORM_VOCAB_MLM] = {.id = UPM_FORM_VOCAB_MLM, .mlm_mask = 1, .targets = UPM_TARGETS_VOCABULARY,
                            .readout = UPM_READ_MASKED, .loss = UPM_LOSS_TARGET_CE,
                            .metric = UPM_METRIC_TOKEN_ACCURACY, .metric_name = "token accuracy"},
    [UPM_FORM_VOCAB_CAPTION] = {.id = UPM_FORM_VOCAB_CAPTION, .caption_queries = 1, .targets = UPM_TARGETS_VOCABULARY,
                                .readout = UPM_READ_QUERIES, .loss = UPM_LOSS_TARGET_CE,
                                .metric = UPM_METRIC_TOKEN_ACCURACY, .metric_name = "token accuracy"},
};

_Static_assert(sizeof table / sizeof table[0] == UPM_FORM_VOCAB_CAPTION + 1,
               "every formulation of catalog/records.h needs a row here");

const upm_formulation_desc *upm_formulation_desc_get(upm_formulation f)
{
    unsigned i = (unsigned)f;
    return i < sizeof table / sizeof table[0] ? &table[i] : NULL;
}
