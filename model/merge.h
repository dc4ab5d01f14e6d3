/* Merging an attribute-MoE model's experts for a fixed set of attribute patterns (paper §3.3): the
 * result is a UPM_MOE_MERGED model with one dense weight per pattern in each MoE linear. */
#ifndef UPM_MERGE_H
#define UPM_MERGE_H

#include "model.h"

/* A new model (same backend) serving the given attribute bytes (any order; duplicates ignored). */
int upm_model_merge(const upm_model *m, const uint8_t *patterns, int npatterns, upm_model **out, upm_err *err);

#endif
