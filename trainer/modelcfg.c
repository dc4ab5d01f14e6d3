/* The model configuration as JSON: the runs table's config column and checkpoints' state.json. */
#include "modelcfg.h"

#include <string.h>

cJSON *upm_model_config_json(const upm_model_config *c)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "dim", c->dim);
    cJSON_AddNumberToObject(j, "heads", c->heads);
    cJSON_AddNumberToObject(j, "layers", c->layers);
    cJSON_AddNumberToObject(j, "mlp", c->mlp);
    cJSON_AddNumberToObject(j, "vocab", c->vocab);
    cJSON_AddNumberToObject(j, "max_text", c->max_text);
    cJSON_AddNumberToObject(j, "max_frames", c->max_frames);
    cJSON_AddStringToObject(j, "moe", upm_moe_kind_name(c->moe));
    cJSON_AddNumberToObject(j, "experts", c->experts);
    cJSON_AddNumberToObject(j, "topk", c->topk);
    cJSON_AddNumberToObject(j, "moe_sa", c->moe_sa);
    cJSON_AddNumberToObject(j, "moe_ffn", c->moe_ffn);
    cJSON_AddNumberToObject(j, "moe_every", c->moe_every);
    cJSON_AddNumberToObject(j, "drop_path", c->drop_path);
    cJSON_AddNumberToObject(j, "layerscale_init", c->layerscale_init);
    cJSON_AddNumberToObject(j, "ln_eps", c->ln_eps);
    cJSON_AddNumberToObject(j, "gate_noise", c->gate_noise);
    cJSON_AddNumberToObject(j, "gate_renorm", c->gate_renorm);
    cJSON_AddNumberToObject(j, "expert_copies", c->expert_copies);
    if (c->moe == UPM_MOE_MERGED) {
        cJSON *p = cJSON_AddArrayToObject(j, "patterns");
        for (int i = 0; i < c->npatterns; i++)
            cJSON_AddItemToArray(p, cJSON_CreateNumber(c->patterns[i]));
    }
    if (upm_moe_token_routed(c->moe)) {
        cJSON_AddNumberToObject(j, "capacity", c->capacity);
        cJSON_AddNumberToObject(j, "eval_capacity", c->eval_capacity);
        cJSON_AddNumberToObject(j, "balance", c->balance);
    }
    if (upm_moe_needs_task(c->moe)) { /* the task table: slot i + 1 is tasks[i] */
        cJSON_AddNumberToObject(j, "task_slots", c->task_slots);
        cJSON *t = cJSON_AddArrayToObject(j, "tasks");
        for (int i = 0; i < c->ntasks; i++)
            cJSON_AddItemToArray(t, cJSON_CreateString(c->task_names[i]));
    }
    return j;
}

int upm_model_config_from_json(const cJSON *j, upm_model_config *c, upm_err *err)
{
    static const char *ints[] = {"dim", "heads", "layers", "mlp", "vocab", "max_text", "max_frames", "experts",
                                 "topk", "moe_sa", "moe_ffn", "moe_every"};
    int *dst[] = {&c->dim, &c->heads, &c->layers, &c->mlp, &c->vocab, &c->max_text, &c->max_frames, &c->experts,
                  &c->topk, &c->moe_sa, &c->moe_ffn, &c->moe_every};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, ints[i]);
        if (!cJSON_IsNumber(v))
            return upm_errf(err, UPM_EBADDATA, "state.json: model.%s missing", ints[i]);
        *dst[i] = v->valueint;
    }
    const cJSON *moe = cJSON_GetObjectItemCaseSensitive(j, "moe"), *dp = cJSON_GetObjectItemCaseSensitive(j, "drop_path");
    const cJSON *ls = cJSON_GetObjectItemCaseSensitive(j, "layerscale_init"), *eps = cJSON_GetObjectItemCaseSensitive(j, "ln_eps");
    const cJSON *gn = cJSON_GetObjectItemCaseSensitive(j, "gate_noise");
    if (!cJSON_IsString(moe) || !cJSON_IsNumber(dp) || !cJSON_IsNumber(ls) || !cJSON_IsNumber(eps) || !cJSON_IsNumber(gn))
        return upm_errf(err, UPM_EBADDATA, "state.json: model configuration incomplete");
    if (upm_moe_kind_parse(moe->valuestring, 0, &c->moe, NULL))
        return upm_errf(err, UPM_EBADDATA, "state.json: unknown MoE kind '%s' (%s)", moe->valuestring,
                        upm_moe_kind_names(0));
    c->npatterns = 0;
    const cJSON *pats = cJSON_GetObjectItemCaseSensitive(j, "patterns"), *v;
    cJSON_ArrayForEach(v, pats) {
        if (!cJSON_IsNumber(v) || v->valueint < 0 || v->valueint > 255 || c->npatterns == 256)
            return upm_errf(err, UPM_EBADDATA, "state.json: model.patterns must be attribute bytes");
        c->patterns[c->npatterns++] = (uint8_t)v->valueint;
    }
    const cJSON *cap = cJSON_GetObjectItemCaseSensitive(j, "capacity"), *ecap = cJSON_GetObjectItemCaseSensitive(j, "eval_capacity");
    const cJSON *bal = cJSON_GetObjectItemCaseSensitive(j, "balance");
    c->capacity = cJSON_IsNumber(cap) ? (float)cap->valuedouble : 1.0f;
    c->eval_capacity = cJSON_IsNumber(ecap) ? (float)ecap->valuedouble : 2.0f;
    c->balance = cJSON_IsNumber(bal) ? (float)bal->valuedouble : 1e-2f;
    c->task_slots = c->ntasks = 0;
    memset(c->task_names, 0, sizeof c->task_names);
    if (upm_moe_needs_task(c->moe)) {
        const cJSON *ts = cJSON_GetObjectItemCaseSensitive(j, "task_slots"), *tasks = cJSON_GetObjectItemCaseSensitive(j, "tasks");
        if (!cJSON_IsNumber(ts) || !cJSON_IsArray(tasks))
            return upm_errf(err, UPM_EBADDATA, "state.json: a %s model needs task_slots and tasks", moe->valuestring);
        c->task_slots = ts->valueint;
        cJSON_ArrayForEach(v, tasks) {
            if (!cJSON_IsString(v) || !v->valuestring[0] || strlen(v->valuestring) > UPM_TASK_NAME_MAX ||
                c->ntasks == UPM_MAX_TASK_SLOTS || upm_model_task_id(c, v->valuestring))
                return upm_errf(err, UPM_EBADDATA, "state.json: model.tasks must be up to %d distinct task names",
                                UPM_MAX_TASK_SLOTS);
            memcpy(c->task_names[c->ntasks++], v->valuestring, strlen(v->valuestring) + 1);
        }
    }
    c->drop_path = (float)dp->valuedouble, c->layerscale_init = (float)ls->valuedouble;
    c->ln_eps = (float)eps->valuedouble, c->gate_noise = (float)gn->valuedouble;
    /* written since the renormalised gate became the default; older checkpoints were trained without it */
    const cJSON *rn = cJSON_GetObjectItemCaseSensitive(j, "gate_renorm");
    c->gate_renorm = cJSON_IsNumber(rn) ? rn->valueint != 0 : 0;
    const cJSON *ec = cJSON_GetObjectItemCaseSensitive(j, "expert_copies"); /* initialisation only */
    c->expert_copies = cJSON_IsNumber(ec) ? ec->valueint != 0 : 0;
    return upm_model_config_check(c, err);
}
