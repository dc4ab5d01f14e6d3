/* Derivation of the paper's 8-bit token attributes (Table 2) from a task declaration (see
 * attributes.h). The reference code orders bits 6 and 7 differently; docs/catalog.md has the mapping. */
#include "attributes.h"

#include <stdio.h>
#include <string.h>

#include "formulation.h"

static int is_visual(upm_modality m) { return m == UPM_MOD_IMAGE || m == UPM_MOD_VIDEO; }

uint8_t upm_attr_byte(const upm_task *t, upm_side side, upm_modality mod)
{
    int in_visual = 0, in_text = 0;
    for (int i = 0; i < t->n_inputs; i++) {
        in_visual |= is_visual(t->inputs[i].modality);
        in_text |= t->inputs[i].modality == UPM_MOD_TEXT;
    }
    int causal = t->causal && side == UPM_SIDE_INPUT && mod == UPM_MOD_TEXT;
    return (uint8_t)(in_visual << 0 | in_text << 1 | is_visual(t->target_modality) << 2 |
                     (t->target_modality == UPM_MOD_TEXT) << 3 | is_visual(mod) << 4 |
                     (mod == UPM_MOD_TEXT) << 5 | causal << 6 | (side == UPM_SIDE_INPUT) << 7);
}

static const char *unit(upm_modality m)
{
    return m == UPM_MOD_IMAGE ? "patches" : m == UPM_MOD_VIDEO ? "frame patches" : "tokens";
}

static int push(upm_token_kind *out, int n, int cap, const upm_task *t, upm_side side, upm_modality mod,
                const char *what)
{
    if (n < cap) {
        out[n].side = side;
        out[n].modality = mod;
        out[n].attr = upm_attr_byte(t, side, mod);
        snprintf(out[n].what, sizeof out[n].what, "%s", what);
    }
    return n + 1;
}

int upm_task_token_kinds(const upm_task *t, upm_token_kind *out, int cap)
{
    char what[96];
    int n = 0;
    if (t->n_inputs < 1)
        return 0;
    n = push(out, n, cap, t, UPM_SIDE_INPUT, t->inputs[0].modality, "<|spe|>");
    for (int i = 0; i < t->n_inputs; i++) {
        snprintf(what, sizeof what, "%s %s", t->inputs[i].field, unit(t->inputs[i].modality));
        n = push(out, n, cap, t, UPM_SIDE_INPUT, t->inputs[i].modality, what);
    }
    n = push(out, n, cap, t, UPM_SIDE_TARGET, t->target_modality, "<|spe|>");
    const upm_formulation_desc *fd = upm_formulation_desc_get(t->formulation);
    if (fd && fd->targets == UPM_TARGETS_LABEL_TEXTS)
        snprintf(what, sizeof what, "label texts (%s)", t->label_set);
    else if (fd && fd->targets == UPM_TARGETS_PAIRED)
        snprintf(what, sizeof what, "%s %s", t->target_field, unit(t->target_modality));
    else
        snprintf(what, sizeof what, "vocabulary words");
    return push(out, n, cap, t, UPM_SIDE_TARGET, t->target_modality, what);
}

void upm_attr_format_list(uint8_t attr, char *buf, size_t n)
{
    snprintf(buf, n, "[%d, %d, %d, %d, %d, %d, %d, %d]", attr & 1, attr >> 1 & 1, attr >> 2 & 1, attr >> 3 & 1,
             attr >> 4 & 1, attr >> 5 & 1, attr >> 6 & 1, attr >> 7 & 1);
}

void upm_attr_format_bits(uint8_t attr, char *buf, size_t n)
{
    char bits[9];
    for (int i = 0; i < 8; i++)
        bits[i] = (char)('0' + (attr >> i & 1));
    bits[8] = '\0';
    snprintf(buf, n, "%s", bits);
}
