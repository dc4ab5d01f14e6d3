/* Caption generation with a key/value cache (decode.h). The prefix pass is an ordinary encoder pass; its
 * per-layer q|k|v rows are gathered into sequence order and kept. Step passes are ordinary passes too
 * (embeddings, gates, MoE linears, head), planned without SPE tokens and with the attention replaced by
 * attention_kv_fwd over the prefix and the cached caption (pass_internal.h: upm_pass.kv); context routing's
 * pools see the same tokens through caches of their own. */
#include "decode.h"

#include <stdlib.h>
#include <string.h>

#include "pass_internal.h"

/* The attentions a step runs over caches (pass_internal.h: UPM_KV_STREAMS): stream 0 is the block's (width
 * D), stream 1 + gi context routing's pool of gate gi (width E) where layer l has that gate. Each has its
 * own region of the prefix ([samples][P][3 width]) and of each cache ([max_len][nmax][2 width]). */
static int stream_width(const upm_model *m, int l, int s)
{
    if (s == 0)
        return m->cfg.dim;
    return upm_moe_context(m->cfg.moe) && m->L.blocks[l].has_gate[s - 1] ? m->cfg.experts : 0;
}

/* The widths of the streams before (l, s), summed: the region's offset in units of its rows. */
static size_t widths_before(const upm_model *m, int l, int s)
{
    size_t w = 0;
    for (int i = 0; i < l * UPM_KV_STREAMS + s; i++)
        w += (size_t)stream_width(m, i / UPM_KV_STREAMS, i % UPM_KV_STREAMS);
    return w;
}

/* Stream s of layer l in pass p: its q | k | v rows. */
static float *stream_qkv(upm_pass *p, int l, int s)
{
    return s == 0 ? p->layers[l].qkv : p->layers[l].gate[s - 1].cqkv;
}

struct upm_decoder {
    upm_model *m;
    upm_decoder_opts o;
    int nmax;              /* sequences at most: samples * beams */
    upm_pass *pre, *step;  /* the prefix pass and the step pass */
    float *prefix;         /* backend: each stream's [samples][P][3 width] */
    size_t prefix_cap;     /* floats */
    int samples, P;        /* of the current prefix */
    float *cache[2];       /* backend: each stream's [max_len][nmax][2 width]; current and spare (beams) */
    int cur, len, nseq, t; /* current cache, cached positions, its sequences, next step */
    int task;              /* the prefix's task id (task routing), which every step continues */
    int32_t *reidx;        /* backend [max_len * nmax]: reordering rows */
    upm_attn_kv_desc *kv;  /* [layers][UPM_KV_STREAMS] */
    int32_t *host;         /* host [6 * nmax + max_len * nmax]: ids, lengths, read-outs, reordering rows */
    uint8_t *attrs;        /* host [2 * nmax] */
};

int upm_decoder_new(upm_model *m, const upm_decoder_opts *o, upm_decoder **out, upm_err *err)
{
    *out = NULL;
    if (o->samples < 1 || o->beams < 1 || o->max_len < 1 || o->max_len > m->cfg.max_text)
        return upm_errf(err, UPM_EINVAL, "generation: %d samples x %d beams, %d tokens (the model has %d text "
                        "positions)", o->samples, o->beams, o->max_len, m->cfg.max_text);
    upm_decoder *d = calloc(1, sizeof *d);
    if (!d)
        return upm_errf(err, UPM_ENOMEM, "generation: no memory");
    upm_backend *be = m->be;
    d->m = m, d->o = *o, d->nmax = o->samples * o->beams;
    size_t cache = widths_before(m, m->cfg.layers, 0) * o->max_len * d->nmax * 2;
    d->pre = upm_pass_new(), d->step = upm_pass_new();
    d->cache[0] = be->alloc(be, sizeof(float) * cache), d->cache[1] = be->alloc(be, sizeof(float) * cache);
    d->reidx = be->alloc(be, sizeof(int32_t) * (size_t)o->max_len * d->nmax);
    d->kv = calloc((size_t)m->cfg.layers * UPM_KV_STREAMS, sizeof *d->kv);
    d->host = malloc(sizeof(int32_t) * ((size_t)6 + o->max_len) * d->nmax);
    d->attrs = malloc((size_t)2 * d->nmax);
    if (!d->pre || !d->step || !d->cache[0] || !d->cache[1] || !d->reidx || !d->kv || !d->host || !d->attrs) {
        upm_decoder_free(d);
        return upm_errf(err, UPM_ENOMEM, "generation: no memory for a cache of %d sequences x %d tokens",
                        o->samples * o->beams, o->max_len);
    }
    memset(d->attrs, o->text_attr, (size_t)2 * d->nmax);
    *out = d;
    return 0;
}

void upm_decoder_free(upm_decoder *d)
{
    if (!d)
        return;
    upm_backend *be = d->m->be;
    upm_pass_free(d->m, d->pre);
    upm_pass_free(d->m, d->step);
    if (d->prefix)
        be->free(be, d->prefix);
    for (int i = 0; i < 2; i++)
        if (d->cache[i])
            be->free(be, d->cache[i]);
    if (d->reidx)
        be->free(be, d->reidx);
    free(d->kv);
    free(d->host);
    free(d->attrs);
    free(d);
}

int upm_decoder_start(upm_decoder *d, const upm_seq_input *prefix, upm_err *err)
{
    upm_model *m = d->m;
    upm_backend *be = m->be;
    if (prefix->nseq > d->o.samples)
        return upm_errf(err, UPM_EINVAL, "generation: %d samples, the decoder holds %d", prefix->nseq, d->o.samples);
    for (int s = 0; s < prefix->nseg; s++) { /* a cached prefix must not depend on the caption or on padding */
        const upm_seq_segment *g = &prefix->seg[s];
        int padded = 0;
        for (int b = 0; g->kind == UPM_SEG_TEXT && b < prefix->nseq; b++)
            padded |= g->lengths[b] != g->L;
        if (g->attn != UPM_SEG_FULL || padded)
            return upm_errf(err, UPM_EINVAL, "generation: the input before the caption must be full-attention "
                            "images, video or unpadded text (segment %d)", s);
    }
    int rc = upm_pass_forward(m, d->pre, prefix, NULL, err);
    if (rc)
        return rc;
    d->task = prefix->task; /* the steps continue the prefix's task */
    int L = m->cfg.layers, n = prefix->nseq, P = d->pre->plan.S;
    size_t rows = (size_t)n * P, need = rows * 3 * widths_before(m, L, 0);
    if (need > d->prefix_cap) {
        if (d->prefix)
            be->free(be, d->prefix);
        d->prefix_cap = 0;
        if (!(d->prefix = be->alloc(be, sizeof(float) * need)))
            return upm_errf(err, UPM_ENOMEM, "generation: no memory for the keys and values of %d x %d tokens", n, P);
        d->prefix_cap = need;
    }
    for (int l = 0; l < L; l++) /* (sample, position) order: the row of token j of sample b is b*P + j */
        for (int s = 0; s < UPM_KV_STREAMS; s++)
            if (stream_width(m, l, s))
                be->gather_rows(be, d->prefix + rows * 3 * widths_before(m, l, s), stream_qkv(d->pre, l, s),
                                d->pre->row_of, n * P, 3 * stream_width(m, l, s));
    d->samples = n, d->P = P, d->t = 0, d->len = 0, d->nseq = 0, d->cur = 0;
    return 0;
}

int upm_decoder_step(upm_decoder *d, int group, const int32_t *prev, const float **features, upm_err *err)
{
    upm_model *m = d->m;
    int nseq = d->samples * group, t = d->t, D = m->cfg.dim, n_new = t > 0 ? 2 : 1;
    *features = NULL;
    if (d->samples < 1 || group < 1 || nseq > d->nmax || (d->len > 0 && nseq != d->nseq))
        return upm_errf(err, UPM_EINVAL, "generation: step %d with %d x %d sequences (decoder: %d, cache: %d)", t,
                        d->samples, group, d->nmax, d->nseq);
    if (t >= d->o.max_len)
        return upm_errf(err, UPM_EINVAL, "generation: step %d is past the %d tokens asked for", t, d->o.max_len);
    int32_t *qids = d->host, *one = qids + nseq, *rseq = one + nseq, *rpos = rseq + nseq;
    for (int s = 0; s < nseq; s++)
        qids[s] = d->o.query_id, one[s] = 1, rseq[s] = s, rpos[s] = n_new - 1;
    upm_seq_input in = {.nseq = nseq, .no_spe = 1, .nseg = 0, .nread = nseq, .read_seq = rseq, .read_pos = rpos,
                        .task = d->task};
    if (t > 0)
        in.seg[in.nseg++] = (upm_seq_segment){.kind = UPM_SEG_TEXT, .attn = UPM_SEG_CAUSAL, .L = 1, .pos0 = t - 1,
                                              .ids = prev, .lengths = one, .attrs = d->attrs};
    in.seg[in.nseg++] = (upm_seq_segment){.kind = UPM_SEG_TEXT, .attn = UPM_SEG_QUERY, .L = 1, .pos0 = t, .ids = qids,
                                          .lengths = one, .attrs = d->attrs + d->nmax};
    size_t prefix_rows = (size_t)d->samples * d->P, cache_rows = (size_t)d->o.max_len * d->nmax;
    for (int l = 0; l < m->cfg.layers; l++)
        for (int s = 0; s < UPM_KV_STREAMS; s++) {
            size_t before = widths_before(m, l, s);
            d->kv[l * UPM_KV_STREAMS + s] = (upm_attn_kv_desc){
                .n_append = t > 0, .heads = s ? 1 : m->cfg.heads, .head_dim = s ? m->cfg.experts : D / m->cfg.heads,
                .prefix = d->prefix + prefix_rows * 3 * before, .prefix_len = d->P, .group = group,
                .cache = d->cache[d->cur] + cache_rows * 2 * before, .len = d->len};
        }
    d->step->kv = d->kv;
    int rc = upm_pass_forward(m, d->step, &in, NULL, err);
    if (rc)
        return rc;
    d->len += t > 0, d->nseq = nseq, d->t++;
    *features = upm_pass_features(d->step);
    return 0;
}

int upm_decoder_reorder(upm_decoder *d, const int32_t *parent, int nseq, upm_err *err)
{
    upm_model *m = d->m;
    upm_backend *be = m->be;
    if (nseq < 1 || nseq > d->nmax || (d->len > 0 && nseq != d->nseq))
        return upm_errf(err, UPM_EINVAL, "generation: reordering %d sequences of %d", nseq, d->nseq);
    for (int s = 0; s < nseq; s++)
        if (parent[s] < 0 || parent[s] >= (d->nseq ? d->nseq : d->samples))
            return upm_errf(err, UPM_EINVAL, "generation: sequence %d continues %d of %d", s, parent[s], d->nseq);
    if (d->len == 0) { /* nothing cached yet (after step 0): the prefixes are shared by index */
        d->nseq = nseq;
        return 0;
    }
    int32_t *idx = d->host + 6 * d->nmax;
    for (int j = 0; j < d->len; j++)
        for (int s = 0; s < nseq; s++)
            idx[(size_t)j * nseq + s] = j * nseq + parent[s];
    be->upload(be, d->reidx, idx, sizeof(int32_t) * (size_t)d->len * nseq);
    size_t cache_rows = (size_t)d->o.max_len * d->nmax;
    for (int l = 0; l < m->cfg.layers; l++)
        for (int s = 0; s < UPM_KV_STREAMS; s++) {
            size_t off = cache_rows * 2 * widths_before(m, l, s);
            if (stream_width(m, l, s))
                be->gather_rows(be, d->cache[!d->cur] + off, d->cache[d->cur] + off, d->reidx, d->len * nseq,
                                2 * stream_width(m, l, s));
        }
    d->cur = !d->cur;
    return 0;
}

int upm_decoder_position(const upm_decoder *d) { return d->t; }
