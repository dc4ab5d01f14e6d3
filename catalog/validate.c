/* Validation of catalog records before they are written: every message names the offending value.
 * The schema enforces the same invariants (docs/catalog.md); these checks exist to say *what* is wrong. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "catalog_ops.h"
#include "text.h"
#include "urlpattern.h"

int upm_name_check(const char *kind, const char *name, upm_err *err)
{
    size_t n = strlen(name);
    if (n == 0)
        return upm_errf(err, UPM_EUSAGE, "%s name is empty", kind);
    if (n > UPM_NAME_MAX)
        return upm_errf(err, UPM_EUSAGE, "%s name '%.64s...' is longer than %d characters", kind, name,
                        UPM_NAME_MAX);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && strchr("._-", c));
        if (!ok)
            return upm_errf(err, UPM_EUSAGE,
                            "%s name '%s' is not allowed: use lower-case letters, digits, '.', '_' and '-', "
                            "starting with a letter or digit", kind, name);
    }
    return 0;
}

/* A field is a WebDataset extension as the webdataset library lower-cases it ("jpg", "txt",
 * "s1.txt"), optionally followed by ":" and a JSON key ("json:label"). */
int upm_field_check(const char *field, upm_err *err)
{
    size_t n = strlen(field);
    const char *colon = strchr(field, ':');
    size_t ext_len = colon ? (size_t)(colon - field) : n;
    int ok = n > 0 && n <= UPM_FIELD_MAX && ext_len > 0 && (!colon || colon[1]);
    for (size_t i = 0; ok && i < ext_len; i++) {
        char c = field[i];
        ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && strchr("._-", c));
    }
    for (const char *p = colon ? colon + 1 : ""; ok && *p; p++)
        ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("._-", *p);
    if (!ok)
        return upm_errf(err, UPM_EUSAGE,
                        "field '%s' is not allowed: a field is a lower-case WebDataset extension (jpg, txt, "
                        "s1.txt), optionally with a JSON key (json:label), at most %d characters",
                        field, UPM_FIELD_MAX);
    return 0;
}

int upm_weight_check(const char *what, double w, upm_err *err)
{
    if (!isfinite(w) || w < 0)
        return upm_errf(err, UPM_EUSAGE, "%s %g is not allowed: weights are finite numbers >= 0", what, w);
    return 0;
}

static int text_check(const char *what, const char *s, size_t max, upm_err *err)
{
    size_t bad = 0, n = strlen(s);
    if (n > max)
        return upm_errf(err, UPM_EUSAGE, "%s is longer than %zu bytes", what, max);
    if (!upm_utf8_valid(s, n, &bad))
        return upm_errf(err, UPM_EUSAGE, "%s is not valid UTF-8 (byte %zu)", what, bad + 1);
    return 0;
}

static const char *const prompt_specials[] = {"<|startoftext|>", "<|endoftext|>", "<|spe|>", "<|mask|>",
                                              "<|gen|>"};

static const upm_task_input *find_input(const upm_task *t, const char *field, size_t len)
{
    for (int i = 0; i < t->n_inputs; i++)
        if (strlen(t->inputs[i].field) == len && strncmp(t->inputs[i].field, field, len) == 0)
            return &t->inputs[i];
    return NULL;
}

/* A prompt template names each text input as {field} exactly where it goes, and may use the special
 * tokens above; "<|spe|>" marks where the answer's feature is read (at most once). */
static int prompt_check(const upm_task *t, upm_err *err)
{
    const char *p = t->prompt;
    int spe = 0, used[UPM_MAX_INPUTS] = {0};
    int rc = text_check("prompt", p, UPM_TEXT_MAX, err);
    if (rc)
        return rc;
    for (size_t i = 0; p[i];) {
        if (p[i] == '{') {
            const char *close = strchr(p + i, '}');
            const char *open2 = close ? memchr(p + i + 1, '{', (size_t)(close - p - i - 1)) : NULL;
            if (!close || open2)
                return upm_errf(err, UPM_EUSAGE, "prompt '%s': unbalanced '{' at character %zu", p, i + 1);
            size_t len = (size_t)(close - p - i - 1);
            const upm_task_input *in = find_input(t, p + i + 1, len);
            if (!in || in->modality != UPM_MOD_TEXT)
                return upm_errf(err, UPM_EUSAGE, "prompt '%s': {%.*s} is not a text input field of task '%s'",
                                p, (int)len, p + i + 1, t->name);
            used[in - t->inputs] = 1;
            i += len + 2;
        } else if (p[i] == '}') {
            return upm_errf(err, UPM_EUSAGE, "prompt '%s': stray '}' at character %zu", p, i + 1);
        } else if (strncmp(p + i, "<|", 2) == 0) {
            size_t k, n = sizeof prompt_specials / sizeof prompt_specials[0];
            for (k = 0; k < n && strncmp(p + i, prompt_specials[k], strlen(prompt_specials[k])) != 0; k++)
                ;
            if (k == n)
                return upm_errf(err, UPM_EUSAGE, "prompt '%s': unknown special token at character %zu (known: "
                                "<|startoftext|> <|endoftext|> <|spe|> <|mask|> <|gen|>)", p, i + 1);
            spe += k == 2;
            i += strlen(prompt_specials[k]);
        } else {
            i++;
        }
    }
    if (spe > 1)
        return upm_errf(err, UPM_EUSAGE, "prompt '%s' has %d <|spe|> tokens; at most one marks the answer", p, spe);
    for (int i = 0; i < t->n_inputs; i++)
        if (t->inputs[i].modality == UPM_MOD_TEXT && !used[i])
            return upm_errf(err, UPM_EUSAGE, "prompt '%s' does not use text input {%s}", p, t->inputs[i].field);
    return 0;
}

static int task_shape_check(const upm_task *t, int n_text, upm_err *err)
{
    const char *f = upm_formulation_name(t->formulation);
    int is_label = t->formulation == UPM_FORM_LABEL;
    if (is_label && !t->label_set[0])
        return upm_errf(err, UPM_EUSAGE, "task '%s': formulation label needs a label set (--labels NAME)", t->name);
    if (!is_label && t->label_set[0])
        return upm_errf(err, UPM_EUSAGE, "task '%s': a label set is only for formulation label, not %s", t->name, f);
    if (t->formulation != UPM_FORM_PAIR && t->target_modality != UPM_MOD_TEXT)
        return upm_errf(err, UPM_EUSAGE, "task '%s': formulation %s has text targets, not %s", t->name, f,
                        upm_modality_name(t->target_modality));
    if ((is_label || t->formulation == UPM_FORM_PAIR) && !t->target_field[0])
        return upm_errf(err, UPM_EUSAGE, "task '%s': formulation %s needs a target field (--target FIELD)", t->name, f);
    if (t->formulation == UPM_FORM_VOCAB_CAPTION && !t->causal)
        return upm_errf(err, UPM_EUSAGE, "task '%s': vocab-caption is causal", t->name);
    if (t->formulation == UPM_FORM_VOCAB_MLM && t->causal)
        return upm_errf(err, UPM_EUSAGE, "task '%s': vocab-mlm is bidirectional, it cannot be causal", t->name);
    if ((t->formulation == UPM_FORM_VOCAB_MLM || t->formulation == UPM_FORM_VOCAB_CAPTION || t->causal) && !n_text)
        return upm_errf(err, UPM_EUSAGE, "task '%s': %s needs a text input", t->name,
                        t->causal ? "a causal task" : f);
    if (t->target_field[0] && t->formulation == UPM_FORM_PAIR && find_input(t, t->target_field, strlen(t->target_field)))
        return upm_errf(err, UPM_EUSAGE, "task '%s': target field '%s' is also an input", t->name, t->target_field);
    if (t->target_field[0] && (t->formulation == UPM_FORM_VOCAB_MLM || t->formulation == UPM_FORM_VOCAB_CAPTION)) {
        const upm_task_input *in = find_input(t, t->target_field, strlen(t->target_field));
        if (!in || in->modality != UPM_MOD_TEXT)
            return upm_errf(err, UPM_EUSAGE, "task '%s': the vocabulary targets come from a text input, and "
                            "'%s' is not one", t->name, t->target_field);
    }
    return 0;
}

int upm_task_validate(const upm_task *t, upm_err *err)
{
    int rc = upm_name_check("task", t->name, err);
    if (rc)
        return rc;
    if (t->n_inputs < 1 || t->n_inputs > UPM_MAX_INPUTS)
        return upm_errf(err, UPM_EUSAGE, "task '%s' needs 1 to %d inputs (--input FIELD=MODALITY), not %d",
                        t->name, UPM_MAX_INPUTS, t->n_inputs);
    int n_text = 0;
    for (int i = 0; i < t->n_inputs; i++) {
        if ((rc = upm_field_check(t->inputs[i].field, err)))
            return rc;
        for (int j = 0; j < i; j++)
            if (strcmp(t->inputs[i].field, t->inputs[j].field) == 0)
                return upm_errf(err, UPM_EUSAGE, "task '%s': input field '%s' is given twice", t->name,
                                t->inputs[i].field);
        n_text += t->inputs[i].modality == UPM_MOD_TEXT;
    }
    if (t->target_field[0] && (rc = upm_field_check(t->target_field, err)))
        return rc;
    if (t->label_set[0] && (rc = upm_name_check("label set", t->label_set, err)))
        return rc;
    if ((rc = task_shape_check(t, n_text, err)))
        return rc;
    if (t->prompt[0] && !n_text)
        return upm_errf(err, UPM_EUSAGE, "task '%s': a prompt needs a text input", t->name);
    if (t->prompt[0] && (rc = prompt_check(t, err)))
        return rc;
    if (t->max_text_len < 2 || t->max_text_len > 4096 || t->max_target_len < 2 || t->max_target_len > 4096)
        return upm_errf(err, UPM_EUSAGE, "task '%s': text length limits must be 2..4096 tokens (got %d and %d)",
                        t->name, t->max_text_len, t->max_target_len);
    if ((rc = upm_weight_check("loss weight", t->loss_weight, err)))
        return rc;
    return text_check("notes", t->notes, UPM_NOTES_MAX, err);
}

int upm_dataset_validate(upm_dataset *d, upm_err *err)
{
    int rc = upm_name_check("dataset", d->name, err);
    if (!rc)
        rc = upm_name_check("task", d->task, err);
    if (!rc && d->label_set[0])
        rc = upm_name_check("label set", d->label_set, err);
    if (!rc)
        rc = upm_weight_check("sampling weight", d->sampling_weight, err);
    if (!rc && d->loss_weight >= 0)
        rc = upm_weight_check("loss weight", d->loss_weight, err);
    if (rc)
        return rc;
    if (d->batch_size < 1 || d->batch_size > 1000000)
        return upm_errf(err, UPM_EUSAGE, "dataset '%s': batch size %d is not allowed: it must be 1..1000000",
                        d->name, d->batch_size);
    if ((unsigned)d->augment > UPM_AUGMENT_NONE)
        return upm_errf(err, UPM_EUSAGE, "dataset '%s': augmentation %d is not inherit, paper, light or none",
                        d->name, (int)d->augment);
    if (d->num_samples < -1 || d->num_shards < -1 || d->num_shards == 0)
        return upm_errf(err, UPM_EUSAGE, "dataset '%s': sample count must be >= 0 and shard count >= 1",
                        d->name);
    if ((rc = text_check("licence", d->license, UPM_TEXT_MAX, err)) ||
        (rc = text_check("notes", d->notes, UPM_NOTES_MAX, err)))
        return rc;
    if (!d->url_pattern[0])
        return 0;
    upm_urlpat *pat = NULL;
    if ((rc = upm_urlpat_parse(d->url_pattern, &pat, err)))
        return rc;
    int64_t count = (int64_t)upm_urlpat_count(pat);
    upm_urlpat_free(pat);
    if (d->num_shards < 0)
        d->num_shards = count;
    else if (d->num_shards != count)
        return upm_errf(err, UPM_EUSAGE, "dataset '%s': shard count %lld does not match the URL pattern, which "
                        "expands to %lld shards", d->name, (long long)d->num_shards, (long long)count);
    return 0;
}

void upm_task_init(upm_task *t)
{
    memset(t, 0, sizeof *t);
    t->target_modality = UPM_MOD_TEXT;
    t->max_text_len = 64;
    t->max_target_len = 32;
    t->loss_weight = 1.0;
}

void upm_dataset_init(upm_dataset *d)
{
    memset(d, 0, sizeof *d);
    d->split = UPM_SPLIT_TRAIN;
    d->augment = UPM_AUGMENT_INHERIT;
    d->num_samples = -1;
    d->num_shards = -1;
    d->sampling_weight = 1.0;
    d->loss_weight = -1;
    d->batch_size = 1;
}
