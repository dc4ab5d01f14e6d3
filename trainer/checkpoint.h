/* Checkpoints: DIR/checkpoints/step-NNNNNNNN/ holding model.safetensors (weights by parameter name),
 * optim.safetensors (AdamW moments "m.NAME" / "v.NAME", metadata "t") and state.json (the trainer's
 * state: step, sampler cursor, seed, configuration). A checkpoint is written into a hidden temporary
 * directory, every file fsynced, then renamed into place, so a directory named step-* is always
 * complete; the newest K are kept. */
#ifndef UPM_CHECKPOINT_H
#define UPM_CHECKPOINT_H

#include <stdint.h>

#include "model.h"
#include "optim.h"

/* Writes checkpoint `step` under dir/checkpoints (created if needed); state_json is stored verbatim.
 * keep > 0 removes all but the newest keep checkpoints afterwards. */
int upm_checkpoint_save(const char *dir, int64_t step, const upm_model *m, const upm_optim *o,
                        const char *state_json, int keep, upm_err *err);
/* The path of the newest checkpoint under dir/checkpoints into path (size n); UPM_ENOTFOUND when none. */
int upm_checkpoint_latest(const char *dir, char *path, size_t n, upm_err *err);
/* Loads weights (and moments when o is non-NULL) from checkpoint directory ckpt into m / o; every
 * parameter of the layout must be present with its shape. *state_json receives state.json (caller
 * frees) when non-NULL. */
int upm_checkpoint_load(const char *ckpt, upm_model *m, upm_optim *o, char **state_json, upm_err *err);
/* The model configuration of a checkpoint: ckpt_arg is a step-* directory or a run's --out directory (then
 * its newest checkpoint); the directory used goes to ckpt (size n), the configuration of its state.json to
 * cfg. For the programs that read a checkpoint without training on it (upmoe-export, upmoe-analyze). */
int upm_checkpoint_config(const char *ckpt_arg, char *ckpt, size_t n, upm_model_config *cfg, upm_err *err);
/* Writes only the weights (a model file for export or inspection), atomically. */
int upm_weights_save(const char *path, const upm_model *m, const char *const *meta, upm_err *err);

#endif
