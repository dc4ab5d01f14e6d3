/* upmoe-analyze gates for token routing (token_gates.c): shares of tokens per expert, measured on batches. */
#ifndef UPM_ANALYZE_TOKEN_GATES_H
#define UPM_ANALYZE_TOKEN_GATES_H

#include "train.h"

/* Prints (text, or JSON with json) the share of tokens per expert of every token gate, per task of
 * o->mixture and side, over `batches` evaluation batches per task of the checkpoint ckpt. */
int upm_analyze_token_gates(const upm_train_opts *o, const char *ckpt, int batches, int json, upm_err *err);

#endif
