/* Deployment of a data-independent routed model for a fixed set of attribute patterns of one task (paper
 * §3.3, "1.0×"): every gate is evaluated once per pattern (no noise), each MoE linear's experts are merged
 * into one dense weight per pattern with the op the training forward uses (expert_mix, whose rows do not
 * depend on the other rows), and everything else is copied. The merged model computes the very bits the
 * routed model computes on tokens of those patterns. */
#include "merge.h"

#include <stdlib.h>
#include <string.h>

#include "pass_internal.h"

static int cmp_u8(const void *a, const void *b) { return (int)*(const uint8_t *)a - (int)*(const uint8_t *)b; }

/* Checks the routing context of a merge or gate map. */
static int check_route(const upm_model *m, int task, const char *what, upm_err *err)
{
    if (upm_moe_token_routed(m->cfg.moe))
        return upm_errf(err, UPM_EINVAL, "cannot %s: %s routing's gates read each token's representation, so its "
                        "experts depend on the data and do not reduce to one weight per token kind", what,
                        upm_moe_kind_name(m->cfg.moe));
    if (!upm_moe_routed(m->cfg.moe))
        return upm_errf(err, UPM_EINVAL, "cannot %s: that needs a model with data-independent routing (attribute, "
                        "modality, task or task-specific), and this one is %s", what, upm_moe_kind_name(m->cfg.moe));
    if (upm_moe_needs_task(m->cfg.moe) && (task < 1 || task > m->cfg.ntasks))
        return upm_errf(err, UPM_EINVAL, "cannot %s: task id %d is outside this model's trained task table (%d "
                        "tasks)", what, task, m->cfg.ntasks);
    return 0;
}

/* G [P, E] of gate k for the patterns (the training forward's gate without noise), backend memory; with
 * k NULL (task-specific weights) the task's one-hot. */
static int gate_values(const upm_model *m, const upm_gate_idx *k, const uint8_t *patterns, int P, int video,
                       int task, float *G, upm_err *err)
{
    upm_backend *be = m->be;
    int D = m->cfg.dim, E = m->cfg.experts, gin = upm_gate_inputs(&m->cfg);
    int w = gin > E ? gin : E;
    float *host = malloc(sizeof(float) * (size_t)P * (size_t)w);
    float *buf = be->alloc(be, sizeof(float) * ((size_t)P * (2 * (size_t)D + 2 * (size_t)E + 2 + (size_t)gin)));
    if (!host || !buf) {
        free(host);
        if (buf)
            be->free(be, buf);
        return upm_errf(err, UPM_ENOMEM, "merge: no memory");
    }
    if (!k) {
        for (int q = 0; q < P; q++)
            for (int e = 0; e < E; e++)
                host[(size_t)q * E + e] = (float)(e == task - 1);
        be->upload(be, G, host, sizeof(float) * (size_t)P * E);
    } else {
        float *Hg = buf, *Rn = Hg + (size_t)P * D, *Z = Rn + (size_t)P * D, *probs = Z + (size_t)P * E;
        float *mean = probs + (size_t)P * E, *rstd = mean + P, *bits = rstd + P;
        for (int q = 0; q < P; q++)
            upm_gate_input_row(&m->cfg, patterns[q], video, task, host + (size_t)q * gin);
        be->upload(be, bits, host, sizeof(float) * (size_t)P * gin);
        upm_gate_eval(m, k, bits, P, Hg, mean, rstd, Rn, Z, probs, G, NULL);
    }
    be->free(be, buf);
    free(host);
    return 0;
}

int upm_model_merge(const upm_model *m, const uint8_t *patterns, int npatterns, int video, int task,
                    upm_model **out, upm_err *err)
{
    *out = NULL;
    int rc = check_route(m, task, "merge experts", err);
    if (rc)
        return rc;
    if (npatterns < 1 || npatterns > 256)
        return upm_errf(err, UPM_EINVAL, "merge: %d attribute patterns (1..256)", npatterns);
    upm_model_config c = m->cfg;
    c.moe = UPM_MOE_MERGED;
    c.npatterns = 0;
    c.task_slots = c.ntasks = 0;
    memset(c.task_names, 0, sizeof c.task_names);
    uint8_t sorted[256];
    memcpy(sorted, patterns, (size_t)npatterns);
    qsort(sorted, (size_t)npatterns, 1, cmp_u8);
    for (int i = 0; i < npatterns; i++)
        if (!c.npatterns || c.patterns[c.npatterns - 1] != sorted[i])
            c.patterns[c.npatterns++] = sorted[i];
    c.experts = c.npatterns;
    upm_model *d;
    if ((rc = upm_model_new(&c, m->be, 0, &d, err)))
        return rc;
    upm_backend *be = m->be;
    int P = c.npatterns, E = m->cfg.experts;
    float *G = be->alloc(be, sizeof(float) * (size_t)P * E);
    if (!G)
        rc = upm_errf(err, UPM_ENOMEM, "merge: no memory");
    /* every tensor of the merged layout: copied by name, or merged for the MoE linears */
    for (int i = 0; !rc && i < d->L.n; i++) {
        const upm_param *t = &d->L.p[i];
        int j = upm_layout_find(&m->L, t->name);
        if (j < 0) {
            rc = upm_errf(err, UPM_EINVAL, "merge: %s has no source tensor", t->name);
            break;
        }
        /* blocks.L.(attn.qkv|attn.proj|mlp.fc1|mlp.fc2).(weight|bias) of a MoE layer: merged by its gate */
        int l = -1, gi = -1;
        if (!strncmp(t->name, "blocks.", 7)) {
            l = atoi(t->name + 7);
            const char *rest = strchr(t->name + 7, '.');
            if (rest && (!strncmp(rest, ".attn.qkv.", 10) || !strncmp(rest, ".attn.proj.", 11)))
                gi = UPM_GATE_ATTN;
            else if (rest && !strncmp(rest, ".mlp.fc1.", 9))
                gi = UPM_GATE_FC1;
            else if (rest && !strncmp(rest, ".mlp.fc2.", 9))
                gi = UPM_GATE_FC2;
        }
        const upm_block_idx *k = l >= 0 && l < m->L.nblocks ? &m->L.blocks[l] : NULL;
        int routed = k && gi >= 0 && (gi == UPM_GATE_ATTN ? k->qkv.gate : k->fc1.gate) >= 0;
        if (!routed) {
            if (m->L.p[j].numel != t->numel) {
                rc = upm_errf(err, UPM_EINVAL, "merge: %s differs in size", t->name);
                break;
            }
            be->copy(be, upm_model_w(d, i), upm_model_w(m, j), sizeof(float) * t->numel);
            continue;
        }
        if ((rc = gate_values(m, k->has_gate[gi] ? &k->gate[gi] : NULL, c.patterns, P, video, task, G, err)))
            break;
        size_t wn = m->L.p[j].numel / (size_t)E; /* one expert */
        be->expert_mix(be, upm_model_w(d, i), G, upm_model_w(m, j), P, E, wn);
    }
    if (G)
        be->free(be, G);
    if (!rc)
        rc = be->status(be, err);
    if (rc) {
        upm_model_free(d);
        return rc;
    }
    *out = d;
    return 0;
}

int upm_model_gate_map(const upm_model *m, int l, int gi, const uint8_t *patterns, int npatterns, int video,
                       int task, float *G, upm_err *err)
{
    int rc = check_route(m, task, "draw gate maps", err);
    if (rc)
        return rc;
    const upm_block_idx *k = l >= 0 && l < m->L.nblocks ? &m->L.blocks[l] : NULL;
    if (!k || gi < 0 || gi >= UPM_NGATES || !upm_block_routes(k, gi))
        return upm_errf(err, UPM_EINVAL, "block %d has no gate %d", l, gi);
    if (npatterns < 1 || npatterns > 256)
        return upm_errf(err, UPM_EINVAL, "gate maps: %d patterns (1..256)", npatterns);
    upm_backend *be = m->be;
    int P = npatterns, E = m->cfg.experts;
    float *Gd = be->alloc(be, sizeof(float) * (size_t)P * E);
    rc = Gd ? 0 : upm_errf(err, UPM_ENOMEM, "gate maps: no memory");
    if (!rc)
        rc = gate_values(m, k->has_gate[gi] ? &k->gate[gi] : NULL, patterns, P, video, task, Gd, err);
    if (!rc)
        be->download(be, G, Gd, sizeof(float) * (size_t)P * E);
    if (!rc)
        rc = be->status(be, err);
    if (Gd)
        be->free(be, Gd);
    return rc;
}
