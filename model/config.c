/* Model sizes (paper Table 6 and the design notes) and configuration checks. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

int upm_model_config_preset(const char *size, upm_model_config *c, upm_err *err)
{
    static const struct {
        const char *name;
        int dim, heads, layers, every;
        float drop_path;
    } sizes[] = {{"ti", 192, 3, 12, 1, 0.0f}, {"s", 384, 6, 12, 1, 0.1f}, {"b", 768, 12, 12, 2, 0.1f},
                 {"l", 1024, 16, 24, 2, 0.2f}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (size && !strcmp(size, sizes[i].name)) {
            *c = (upm_model_config){.dim = sizes[i].dim, .heads = sizes[i].heads, .layers = sizes[i].layers,
                                    .mlp = 4 * sizes[i].dim, .vocab = UPM_VOCAB, .max_text = 512, .max_frames = 8,
                                    .moe = UPM_MOE_ATTRIBUTE, .experts = 8, .topk = 2, .moe_sa = 1, .moe_ffn = 1,
                                    .moe_every = sizes[i].every, .drop_path = sizes[i].drop_path,
                                    .layerscale_init = 1e-3f, .ln_eps = 1e-5f, .gate_noise = -1.0f,
                                    .gate_renorm = 1, .expert_copies = 1, .capacity = 1.0f,
                                    .eval_capacity = 2.0f, .balance = 1e-2f};
            return 0;
        }
    return upm_errf(err, UPM_EUSAGE, "unknown model size '%s' (%s)", size ? size : "", upm_model_size_names());
}

const char *upm_model_size_names(void)
{
    return "ti, s, b or l";
}

static const struct {
    upm_moe_kind kind;
    const char *name;
    int trainable;
} moe_kinds[] = {{UPM_MOE_ATTRIBUTE, "attribute", 1},
                 {UPM_MOE_MODALITY, "modality", 1},
                 {UPM_MOE_TASK, "task", 1},
                 {UPM_MOE_TASK_SPECIFIC, "task-specific", 1},
                 {UPM_MOE_TOKEN, "token", 1},
                 {UPM_MOE_CONTEXT, "context", 1},
                 {UPM_MOE_NONE, "none", 1},
                 {UPM_MOE_MERGED, "merged", 0}};

const char *upm_moe_kind_name(upm_moe_kind k)
{
    for (size_t i = 0; i < sizeof moe_kinds / sizeof moe_kinds[0]; i++)
        if (moe_kinds[i].kind == k)
            return moe_kinds[i].name;
    return "unknown";
}

const char *upm_moe_kind_names(int trainable)
{
    return trainable ? "attribute, modality, task, task-specific, token, context or none"
                     : "attribute, modality, task, task-specific, token, context, none or merged";
}

int upm_moe_kind_parse(const char *name, int trainable, upm_moe_kind *k, upm_err *err)
{
    for (size_t i = 0; name && i < sizeof moe_kinds / sizeof moe_kinds[0]; i++)
        if (!strcmp(moe_kinds[i].name, name) && (moe_kinds[i].trainable || !trainable)) {
            *k = moe_kinds[i].kind;
            return 0;
        }
    return upm_errf(err, UPM_EUSAGE, "--moe must be %s, not '%s'", upm_moe_kind_names(trainable), name ? name : "");
}

int upm_model_config_check(const upm_model_config *c, upm_err *err)
{
    if (c->dim < 4 || c->dim % 4 || c->heads < 1 || c->dim % c->heads)
        return upm_errf(err, UPM_EINVAL, "model: dim %d must be a multiple of 4 and of heads (%d)", c->dim, c->heads);
    if (c->layers < 1 || c->mlp < 1 || c->vocab < 1 || c->max_text < 1 || c->max_frames < 1)
        return upm_errf(err, UPM_EINVAL, "model: layers, mlp, vocab, max_text and max_frames must be positive");
    if (c->moe != UPM_MOE_NONE && !upm_moe_has_experts(c->moe) && c->moe != UPM_MOE_MERGED)
        return upm_errf(err, UPM_EINVAL, "model: unknown MoE kind %d", (int)c->moe);
    if (c->moe == UPM_MOE_MERGED) {
        if (c->npatterns < 1 || c->npatterns > 256 || c->experts != c->npatterns)
            return upm_errf(err, UPM_EINVAL, "model: a merged model needs 1..256 patterns, one weight each");
        for (int i = 1; i < c->npatterns; i++)
            if (c->patterns[i] <= c->patterns[i - 1])
                return upm_errf(err, UPM_EINVAL, "model: merged patterns must be ascending and distinct");
    }
    if (upm_moe_needs_task(c->moe)) {
        if (c->task_slots < 1 || c->task_slots > UPM_MAX_TASK_SLOTS || c->ntasks < 0 || c->ntasks > c->task_slots)
            return upm_errf(err, UPM_EINVAL, "model: the task table needs 1..%d slots (%d), at most one per task (%d)",
                            UPM_MAX_TASK_SLOTS, c->task_slots, c->ntasks);
        if (c->moe == UPM_MOE_TASK_SPECIFIC && (c->experts != c->task_slots || c->topk != 1))
            return upm_errf(err, UPM_EINVAL, "model: task-specific weights need one expert per task slot (%d, %d) "
                            "and top-1 (%d)", c->experts, c->task_slots, c->topk);
    }
    if (upm_moe_token_routed(c->moe) &&
        (!(c->capacity > 0) || !(c->eval_capacity > 0) || !(c->balance >= 0) || c->capacity > 1e6f ||
         c->eval_capacity > 1e6f))
        return upm_errf(err, UPM_EINVAL, "model: token and context routing need capacity factors > 0 (%g in training, %g in "
                        "evaluation) and a balance-loss weight >= 0 (%g)", (double)c->capacity,
                        (double)c->eval_capacity, (double)c->balance);
    if (upm_moe_has_experts(c->moe) &&
        (c->experts < 1 || c->topk < 1 || c->topk > c->experts || c->moe_every < 1 || (!c->moe_sa && !c->moe_ffn)))
        return upm_errf(err, UPM_EINVAL,
                        "model: a routed MoE needs 1 <= topk (%d) <= experts (%d), every >= 1 (%d) and MoE on "
                        "attention and/or FFN linears",
                        c->topk, c->experts, c->moe_every);
    if (!(c->drop_path >= 0 && c->drop_path < 1) || !(c->ln_eps > 0))
        return upm_errf(err, UPM_EINVAL, "model: drop_path %g must be in [0, 1) and ln_eps %g > 0",
                        (double)c->drop_path, (double)c->ln_eps);
    return 0;
}

int upm_layer_moe_sa(const upm_model_config *c, int l)
{
    return c->moe != UPM_MOE_NONE && c->moe_sa && (l + 1) % c->moe_every == 0;
}

int upm_layer_moe_ffn(const upm_model_config *c, int l)
{
    return c->moe != UPM_MOE_NONE && c->moe_ffn && (l + 1) % c->moe_every == 0;
}

int upm_model_task_id(const upm_model_config *c, const char *name)
{
    for (int i = 0; name && i < c->ntasks; i++)
        if (!strcmp(c->task_names[i], name))
            return i + 1;
    return 0;
}

int upm_model_task_assign(upm_model_config *c, const char *name, int *id, upm_err *err)
{
    if ((*id = upm_model_task_id(c, name)))
        return 0;
    if (strlen(name) > UPM_TASK_NAME_MAX)
        return upm_errf(err, UPM_EINVAL, "task name '%.40s...' is longer than %d bytes", name, UPM_TASK_NAME_MAX);
    if (c->ntasks >= c->task_slots)
        return upm_errf(err, UPM_EINVAL,
                        "task '%s' has no id: this model's task table has %d slot%s, all taken (the first: '%s'); "
                        "start a run with a larger --task-slots",
                        name, c->task_slots, c->task_slots == 1 ? "" : "s", c->ntasks ? c->task_names[0] : "");
    memcpy(c->task_names[c->ntasks], name, strlen(name) + 1);
    *id = ++c->ntasks;
    return 0;
}

const char *upm_model_task_list(const upm_model_config *c, char *buf, size_t n)
{
    size_t at = 0;
    buf[0] = 0;
    for (int i = 0; i < c->ntasks && at + 1 < n; i++) {
        int w = snprintf(buf + at, n - at, "%s%s", i ? ", " : "", c->task_names[i]);
        at += w > 0 ? (size_t)w : 0;
    }
    if (at >= n && n > 4)
        memcpy(buf + n - 4, "...", 4);
    return c->ntasks ? buf : "none";
}

int upm_token_capacity(const upm_model_config *c, int tokens, int train)
{
    double f = train ? c->capacity : c->eval_capacity;
    return (int)ceil(f * c->topk * (double)tokens / c->experts);
}

float upm_gate_noise_std(const upm_model_config *c)
{
    return c->gate_noise < 0 ? 1.0f / (float)c->experts : c->gate_noise;
}
