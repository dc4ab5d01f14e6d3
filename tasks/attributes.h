/* Token attributes (paper Table 2): the 8 bits every token carries, derived from a task's
 * declaration, never stored. Bit i of the byte is the paper's index i:
 *   0 visual modality in the task's inputs     4 this token is visual
 *   1 text modality in the task's inputs       5 this token is text
 *   2 visual modality in the task's targets    6 this token's attention mask is causal
 *   3 text modality in the task's targets      7 this token comes from the inputs, not the targets */
#ifndef UPM_ATTRIBUTES_H
#define UPM_ATTRIBUTES_H

#include <stddef.h>
#include <stdint.h>

#include "records.h"

typedef enum upm_side { UPM_SIDE_INPUT = 0, UPM_SIDE_TARGET } upm_side;

/* The attribute byte of a token of modality mod on the given side of task t. Only text input tokens
 * of a causal task are causal: visual tokens attend bidirectionally, and target sequences are encoded
 * on their own (bidirectionally). */
uint8_t upm_attr_byte(const upm_task *t, upm_side side, upm_modality mod);

/* One kind of token of a task, for `upmoe-catalog attributes` and the pipeline's tagging. */
typedef struct upm_token_kind {
    upm_side side;
    char what[96];        /* e.g. "<|spe|>", "jpg patches", "txt tokens", "label texts (imagenet-21k)" */
    upm_modality modality;
    uint8_t attr;
} upm_token_kind;

/* Lists every token kind of t (at most cap) and returns how many there are. The SPE token that starts
 * each sequence takes the attributes of the first field of its sequence. */
int upm_task_token_kinds(const upm_task *t, upm_token_kind *out, int cap);

/* "[1, 0, 0, 1, 1, 0, 0, 1]" as the paper writes it (index 0 first); buf needs 25 bytes. */
void upm_attr_format_list(uint8_t attr, char *buf, size_t n);
/* "10011001": the same, index 0 first; buf needs 9 bytes. */
void upm_attr_format_bits(uint8_t attr, char *buf, size_t n);

#endif
