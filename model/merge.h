/* Merging an attribute-MoE model's experts for a fixed set of attribute patterns (paper §3.3): the
 * result is a UPM_MOE_MERGED model with one dense weight per pattern in each MoE linear. */
#ifndef UPM_MERGE_H
#define UPM_MERGE_H

#include "model.h"

/* A new model (same backend) serving the given attribute bytes (any order; duplicates ignored). */
int upm_model_merge(const upm_model *m, const uint8_t *patterns, int npatterns, upm_model **out, upm_err *err);

/* The gate values of every pattern for gate gi (UPM_GATE_*) of block l of a routed model (attribute or
 * modality; the training forward's gate without noise): host G[npatterns][experts], 0 where an expert is not
 * kept. video: the patterns' visual tokens are video (modality routing). The gate maps of upmoe-analyze
 * (paper Fig. 3) read these. UPM_EINVAL when the block has no such gate. */
int upm_model_gate_map(const upm_model *m, int l, int gi, const uint8_t *patterns, int npatterns, int video,
                       float *G, upm_err *err);

#endif
