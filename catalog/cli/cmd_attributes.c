/* upmoe-catalog attributes TASK: the derived 8-bit token attributes of every kind of token of a task. */
#include "attributes.h"
#include "cli.h"

int cli_print_attributes(const upm_task *t, FILE *f)
{
    upm_token_kind kinds[UPM_MAX_INPUTS + 4];
    int n = upm_task_token_kinds(t, kinds, (int)(sizeof kinds / sizeof kinds[0]));
    static const char *const h[] = {"SIDE", "TOKENS", "MODALITY", "BITS", "ATTRIBUTES"};
    cli_table *tab = cli_table_new(5, h, "00000");
    for (int i = 0; i < n; i++) {
        char bits[16], list[32];
        upm_attr_format_bits(kinds[i].attr, bits, sizeof bits);
        upm_attr_format_list(kinds[i].attr, list, sizeof list);
        const char *cells[] = {kinds[i].side == UPM_SIDE_INPUT ? "input" : "target", kinds[i].what,
                               upm_modality_name(kinds[i].modality), bits, list};
        cli_table_add(tab, cells);
    }
    cli_table_print(tab, f);
    return 0;
}

static cJSON *attributes_json(const upm_task *t)
{
    upm_token_kind kinds[UPM_MAX_INPUTS + 4];
    int n = upm_task_token_kinds(t, kinds, (int)(sizeof kinds / sizeof kinds[0]));
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "task", t->name);
    cJSON_AddStringToObject(o, "formulation", upm_formulation_name(t->formulation));
    cJSON *arr = cJSON_AddArrayToObject(o, "tokens");
    for (int i = 0; i < n; i++) {
        cJSON *k = cJSON_CreateObject();
        char bits[16];
        int list[8];
        upm_attr_format_bits(kinds[i].attr, bits, sizeof bits);
        for (int b = 0; b < 8; b++)
            list[b] = kinds[i].attr >> b & 1;
        cJSON_AddStringToObject(k, "side", kinds[i].side == UPM_SIDE_INPUT ? "input" : "target");
        cJSON_AddStringToObject(k, "tokens", kinds[i].what);
        cJSON_AddStringToObject(k, "modality", upm_modality_name(kinds[i].modality));
        cJSON_AddStringToObject(k, "bits", bits);
        cJSON_AddItemToObject(k, "attributes", cJSON_CreateIntArray(list, 8));
        cJSON_AddNumberToObject(k, "byte", kinds[i].attr);
        cJSON_AddItemToArray(arr, k);
    }
    return o;
}

int cmd_attributes(cli *c, int argc, char **argv)
{
    const char *pos[1];
    int npos;
    int rc = cli_parse(argc - 1, argv + 1, NULL, pos, 1, &npos, "attributes");
    if (rc)
        return rc;
    if (npos != 1)
        return cli_usage_error("attributes", "attributes needs a TASK");
    upm_catalog *cat;
    if ((rc = cli_open(c, UPM_CAT_READONLY, &cat)))
        return rc;
    upm_task t;
    rc = upm_task_get(cat, pos[0], &t, &c->err);
    upm_catalog_close(cat);
    if (rc)
        return cli_fail(&c->err);
    if (c->json) {
        cli_print_json(attributes_json(&t));
        return 0;
    }
    printf("task %s (%s): bits are indices 0..7 of paper Table 2, left to right\n", t.name,
           upm_formulation_name(t.formulation));
    return cli_print_attributes(&t, stdout);
}
