/* Names of the catalog's enumerations, as stored in the schema and typed on the command line. */
#include <string.h>

#include "records.h"

static const char *const modalities[] = {"image", "video", "text"};
static const char *const formulations[] = {"label", "pair", "vocab-mlm", "vocab-caption"};
static const char *const splits[] = {"train", "val", "test"};
static const char *const augments[] = {"", "paper", "light", "none"};

static int lookup(const char *const *names, int n, const char *s)
{
    for (int i = 0; s && i < n; i++)
        if (strcmp(names[i], s) == 0)
            return i;
    return -1;
}

const char *upm_modality_name(upm_modality m) { return modalities[m]; }
const char *upm_formulation_name(upm_formulation f) { return formulations[f]; }
const char *upm_split_name(upm_split s) { return splits[s]; }
const char *upm_augment_name(upm_augment a) { return augments[a]; }

int upm_modality_parse(const char *s, upm_modality *out)
{
    int i = lookup(modalities, 3, s);
    if (i >= 0)
        *out = (upm_modality)i;
    return i < 0 ? -1 : 0;
}

int upm_formulation_parse(const char *s, upm_formulation *out)
{
    int i = lookup(formulations, 4, s);
    if (i >= 0)
        *out = (upm_formulation)i;
    return i < 0 ? -1 : 0;
}

int upm_split_parse(const char *s, upm_split *out)
{
    int i = lookup(splits, 3, s);
    if (i >= 0)
        *out = (upm_split)i;
    return i < 0 ? -1 : 0;
}

int upm_augment_parse(const char *s, upm_augment *out)
{
    int i = lookup(augments, 4, s);
    if (i >= 0)
        *out = (upm_augment)i;
    return i < 0 ? -1 : 0;
}
