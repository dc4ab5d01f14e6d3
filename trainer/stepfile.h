/* Step files: one training step written as a safetensors file in the oracle format of docs/model.md
 * ("Oracle file"): the passes' inputs, labels or vocabulary read-outs, gate-noise and drop-path tables,
 * metadata (config, formulation, segments, attribute bytes), and whatever else the writer adds
 * (parameters, gradients, outputs). upmoe-model-oracle writes one for a made-up step;
 * `upmoe-train --dump-batches DIR` writes one per step of a real run, which tests/trainer/
 * long_oracle.py replays in PyTorch. Tensors are copied when added, so the caller keeps its buffers. */
#ifndef UPM_STEPFILE_H
#define UPM_STEPFILE_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "safetensors.h"

typedef struct upm_stepfile upm_stepfile;

upm_stepfile *upm_stepfile_new(void);
void upm_stepfile_free(upm_stepfile *f);
/* Adds a copy of host data. A failed allocation is remembered and reported by upm_stepfile_write. */
void upm_stepfile_put(upm_stepfile *f, const char *name, upm_st_dtype dt, const void *data, int ndim,
                      const int64_t *shape);
/* Adds a copy of backend memory (F32). */
void upm_stepfile_put_backend(upm_stepfile *f, upm_backend *be, const char *name, const float *src, int ndim,
                              const int64_t *shape);
/* Every parameter by name; with grads, also grad.NAME. */
void upm_stepfile_put_params(upm_stepfile *f, const upm_model *m, int grads);
/* The segments of one side as {side}.{i}.pixels | ids + lengths, and {side}.{i}.attrs. */
void upm_stepfile_put_side(upm_stepfile *f, const char *side, const upm_seq_input *in);
/* Gate noise ([256, E] per gate, host [layers][gates][256][E]; token routing: [nseq, S, E] per gate, host
 * [layers][gates][nseq][S][E]) and drop-path keep factors ([nseq] per block branch, host [layers][2][nseq])
 * of one pass of nseq sequences of S positions; either may be NULL. */
void upm_stepfile_put_tables(upm_stepfile *f, const char *pass, const upm_model *m, const float *noise,
                             const float *keep, int nseq, int S);
/* The segments metadata of one side: a JSON list of {kind, attn, T, H, W, L, attr}. */
void upm_stepfile_segments_json(const upm_seq_input *in, char *buf, size_t n);
/* Writes the file (temporary name, fsync, rename); meta is a NULL-terminated key, value list. */
int upm_stepfile_write(upm_stepfile *f, const char *path, const char *const *meta, upm_err *err);
int upm_stepfile_count(const upm_stepfile *f);

#endif
