/* Unit test for tasks/attributes.c: the paper's Table 2 bits derived from task declarations, for each
 * formulation and modality mix, and the two printed forms. */
#include <string.h>

#include "attributes.h"
#include "check.h"

static upm_task make(upm_formulation f, int causal, const char *spec, upm_modality target)
{
    upm_task t;
    memset(&t, 0, sizeof t);
    t.formulation = f;
    t.causal = causal;
    t.target_modality = target;
    /* spec: one letter per input, i = image, v = video, t = text */
    for (const char *p = spec; *p; p++) {
        upm_task_input *in = &t.inputs[t.n_inputs++];
        snprintf(in->field, sizeof in->field, "f%d", t.n_inputs);
        in->modality = *p == 'i' ? UPM_MOD_IMAGE : *p == 'v' ? UPM_MOD_VIDEO : UPM_MOD_TEXT;
    }
    return t;
}

/* Bits as the paper lists them, index 0 first. */
static uint8_t bits(const char *s)
{
    uint8_t b = 0;
    for (int i = 0; i < 8; i++)
        b |= (uint8_t)((s[i] == '1') << i);
    return b;
}

int main(void)
{
    upm_task cls = make(UPM_FORM_LABEL, 0, "i", UPM_MOD_TEXT);
    CHECK(upm_attr_byte(&cls, UPM_SIDE_INPUT, UPM_MOD_IMAGE) == bits("10011001")); /* the paper's example */
    CHECK(upm_attr_byte(&cls, UPM_SIDE_TARGET, UPM_MOD_TEXT) == bits("10010100"));

    upm_task vcls = make(UPM_FORM_LABEL, 0, "v", UPM_MOD_TEXT);
    CHECK(upm_attr_byte(&vcls, UPM_SIDE_INPUT, UPM_MOD_VIDEO) == bits("10011001"));

    upm_task mlm = make(UPM_FORM_VOCAB_MLM, 0, "t", UPM_MOD_TEXT);
    CHECK(upm_attr_byte(&mlm, UPM_SIDE_INPUT, UPM_MOD_TEXT) == bits("01010101"));
    CHECK(upm_attr_byte(&mlm, UPM_SIDE_TARGET, UPM_MOD_TEXT) == bits("01010100"));

    upm_task cap = make(UPM_FORM_VOCAB_CAPTION, 1, "it", UPM_MOD_TEXT);
    CHECK(upm_attr_byte(&cap, UPM_SIDE_INPUT, UPM_MOD_IMAGE) == bits("11011001")); /* visual never causal */
    CHECK(upm_attr_byte(&cap, UPM_SIDE_INPUT, UPM_MOD_TEXT) == bits("11010111"));
    CHECK(upm_attr_byte(&cap, UPM_SIDE_TARGET, UPM_MOD_TEXT) == bits("11010100")); /* targets bidirectional */

    upm_task t2i = make(UPM_FORM_PAIR, 0, "t", UPM_MOD_IMAGE); /* text -> image retrieval */
    CHECK(upm_attr_byte(&t2i, UPM_SIDE_INPUT, UPM_MOD_TEXT) == bits("01100101"));
    CHECK(upm_attr_byte(&t2i, UPM_SIDE_TARGET, UPM_MOD_IMAGE) == bits("01101000"));

    /* Token kinds: SPE takes its sequence's first field; one kind per input; SPE + targets. */
    upm_token_kind k[16];
    int n = upm_task_token_kinds(&cap, k, 16);
    CHECK(n == 5);
    CHECK(strcmp(k[0].what, "<|spe|>") == 0 && k[0].side == UPM_SIDE_INPUT && k[0].attr == bits("11011001"));
    CHECK(k[2].modality == UPM_MOD_TEXT && k[2].attr == bits("11010111"));
    CHECK(k[3].side == UPM_SIDE_TARGET && strcmp(k[4].what, "vocabulary words") == 0);
    CHECK(upm_task_token_kinds(&cap, k, 2) == 5); /* reports the full count even when cap is small */

    char buf[32];
    upm_attr_format_list(bits("10011001"), buf, sizeof buf);
    CHECK(strcmp(buf, "[1, 0, 0, 1, 1, 0, 0, 1]") == 0);
    upm_attr_format_bits(bits("11010111"), buf, sizeof buf);
    CHECK(strcmp(buf, "11010111") == 0);
    return CHECK_RESULT("test_attributes");
}
