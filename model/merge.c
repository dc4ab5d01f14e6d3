/* Deployment of an attribute-MoE model for a fixed set of attribute patterns (paper §3.3, "1.0×"):
 * every gate is evaluated once per pattern (no noise), each MoE linear's experts are merged into one
 * dense weight per pattern with the same matmul the training forward uses, and everything else is
 * copied. The merged model computes what the MoE model computes on tokens of those patterns. */
#include "merge.h"

#include <stdlib.h>
#include <string.h>

static int cmp_u8(const void *a, const void *b) { return (int)*(const uint8_t *)a - (int)*(const uint8_t *)b; }

/* G [P, E] of one gate for the patterns (the training forward's gate without noise). */
static int gate_values(const upm_model *m, const upm_gate_idx *k, const float *bits, int P, float *G, upm_err *err)
{
    upm_backend *be = m->be;
    int D = m->cfg.dim, E = m->cfg.experts;
    float *buf = be->alloc(be, sizeof(float) * ((size_t)P * (2 * D + 2 * E + 2)));
    if (!buf)
        return upm_errf(err, UPM_ENOMEM, "merge: no memory");
    float *Hg = buf, *Rn = Hg + (size_t)P * D, *Z = Rn + (size_t)P * D, *probs = Z + (size_t)P * E;
    float *mean = probs + (size_t)P * E, *rstd = mean + P;
    int gin = upm_gate_inputs(m->cfg.moe);
    be->gemm(be, 0, 1, P, D, gin, 1.0f, bits, gin, upm_model_w(m, k->attr_w), gin, 0.0f, Hg, D);
    be->add_bias(be, Hg, upm_model_w(m, k->attr_b), P, D);
    be->layernorm_fwd(be, Rn, mean, rstd, Hg, upm_model_w(m, k->norm_w), upm_model_w(m, k->norm_b), P, D,
                      m->cfg.ln_eps);
    be->gemm(be, 0, 1, P, E, D, 1.0f, Rn, D, upm_model_w(m, k->proj_w), D, 0.0f, Z, E);
    be->topk_softmax_fwd(be, G, probs, Z, NULL, P, E, m->cfg.topk, m->cfg.gate_renorm);
    be->free(be, buf);
    return 0;
}

int upm_model_merge(const upm_model *m, const uint8_t *patterns, int npatterns, upm_model **out, upm_err *err)
{
    *out = NULL;
    if (m->cfg.moe != UPM_MOE_ATTRIBUTE)
        return upm_errf(err, UPM_EINVAL, "merge: the model has no attribute-routed experts to merge");
    upm_model_config c = m->cfg;
    c.moe = UPM_MOE_MERGED;
    c.npatterns = 0;
    uint8_t sorted[256];
    memcpy(sorted, patterns, (size_t)npatterns);
    qsort(sorted, (size_t)npatterns, 1, cmp_u8);
    for (int i = 0; i < npatterns; i++)
        if (!c.npatterns || c.patterns[c.npatterns - 1] != sorted[i])
            c.patterns[c.npatterns++] = sorted[i];
    c.experts = c.npatterns;
    upm_model *d;
    int rc = upm_model_new(&c, m->be, 0, &d, err);
    if (rc)
        return rc;
    upm_backend *be = m->be;
    int P = c.npatterns, E = m->cfg.experts;
    float bits_h[256 * UPM_GATE_BITS], *bits = be->alloc(be, sizeof bits_h), *G = be->alloc(be, sizeof(float) * (size_t)P * E);
    if (!bits || !G)
        rc = upm_errf(err, UPM_ENOMEM, "merge: no memory");
    for (int q = 0; q < P; q++)
        for (int i = 0; i < UPM_GATE_BITS; i++)
            bits_h[q * UPM_GATE_BITS + i] = (float)((c.patterns[q] >> i) & 1);
    if (!rc)
        be->upload(be, bits, bits_h, sizeof(float) * (size_t)P * UPM_GATE_BITS);
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
        if (gi < 0 || !k || !k->has_gate[gi]) {
            if (m->L.p[j].numel != t->numel) {
                rc = upm_errf(err, UPM_EINVAL, "merge: %s differs in size", t->name);
                break;
            }
            be->copy(be, upm_model_w(d, i), upm_model_w(m, j), sizeof(float) * t->numel);
            continue;
        }
        if ((rc = gate_values(m, &k->gate[gi], bits, P, G, err)))
            break;
        size_t wn = m->L.p[j].numel / (size_t)E; /* one expert */
        be->gemm(be, 0, 0, P, (int)wn, E, 1.0f, G, E, upm_model_w(m, j), (int)wn, 0.0f, upm_model_w(d, i), (int)wn);
    }
    if (bits)
        be->free(be, bits);
    if (G)
        be->free(be, G);
    if (rc) {
        upm_model_free(d);
        return rc;
    }
    *out = d;
    return 0;
}

int upm_model_gate_map(const upm_model *m, int l, int gi, const uint8_t *patterns, int npatterns, int video,
                       float *G, upm_err *err)
{
    if (!upm_moe_gated(m->cfg.moe))
        return upm_errf(err, UPM_EINVAL, "gate maps need a routed model (this one is %s)",
                        upm_moe_kind_name(m->cfg.moe));
    if (l < 0 || l >= m->L.nblocks || gi < 0 || gi >= UPM_NGATES || !m->L.blocks[l].has_gate[gi])
        return upm_errf(err, UPM_EINVAL, "block %d has no gate %d", l, gi);
    if (npatterns < 1 || npatterns > 256)
        return upm_errf(err, UPM_EINVAL, "gate maps: %d patterns (1..256)", npatterns);
    upm_backend *be = m->be;
    int P = npatterns, E = m->cfg.experts, gin = upm_gate_inputs(m->cfg.moe);
    float bits_h[256 * UPM_GATE_BITS];
    for (int q = 0; q < P; q++)
        for (int i = 0; i < gin; i++)
            bits_h[q * gin + i] = m->cfg.moe == UPM_MOE_MODALITY ? (float)(i == upm_modality_id(patterns[q], video))
                                                                : (float)((patterns[q] >> i) & 1);
    float *bits = be->alloc(be, sizeof(float) * (size_t)P * gin), *Gd = be->alloc(be, sizeof(float) * (size_t)P * E);
    int rc = bits && Gd ? 0 : upm_errf(err, UPM_ENOMEM, "gate maps: no memory");
    if (!rc) {
        be->upload(be, bits, bits_h, sizeof(float) * (size_t)P * gin);
        rc = gate_values(m, &m->L.blocks[l].gate[gi], bits, P, Gd, err);
    }
    if (!rc)
        be->download(be, G, Gd, sizeof(float) * (size_t)P * E);
    if (!rc)
        rc = be->status(be, err);
    if (bits)
        be->free(be, bits);
    if (Gd)
        be->free(be, Gd);
    return rc;
}
