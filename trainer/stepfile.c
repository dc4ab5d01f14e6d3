/* Step files in the oracle format (see stepfile.h). */
#include "stepfile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct upm_stepfile {
    upm_st_tensor *t;
    int n, cap;
    int failed;
};

upm_stepfile *upm_stepfile_new(void) { return calloc(1, sizeof(upm_stepfile)); }

void upm_stepfile_free(upm_stepfile *f)
{
    if (!f)
        return;
    for (int i = 0; i < f->n; i++) {
        free((void *)f->t[i].name);
        free((void *)f->t[i].data);
    }
    free(f->t);
    free(f);
}

int upm_stepfile_count(const upm_stepfile *f) { return f->n; }

/* Adds a tensor that takes ownership of data (malloc'd). */
static void take(upm_stepfile *f, const char *name, upm_st_dtype dt, void *data, int ndim, const int64_t *shape)
{
    if (f->n == f->cap) {
        int cap = f->cap ? 2 * f->cap : 256;
        upm_st_tensor *t = realloc(f->t, sizeof *t * (size_t)cap);
        if (!t) {
            f->failed = 1;
            free(data);
            return;
        }
        f->t = t, f->cap = cap;
    }
    char *nm = strdup(name);
    if (!nm || !data) {
        f->failed = 1;
        free(nm);
        free(data);
        return;
    }
    upm_st_tensor *t = &f->t[f->n++];
    memset(t, 0, sizeof *t);
    t->name = nm, t->dtype = dt, t->ndim = ndim, t->data = data;
    size_t count = 1;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = shape[i], count *= (size_t)shape[i];
    t->nbytes = count * upm_st_dtype_size(dt);
}

static size_t count_of(int ndim, const int64_t *shape)
{
    size_t count = 1;
    for (int i = 0; i < ndim; i++)
        count *= (size_t)shape[i];
    return count;
}

void upm_stepfile_put(upm_stepfile *f, const char *name, upm_st_dtype dt, const void *data, int ndim,
                      const int64_t *shape)
{
    size_t n = count_of(ndim, shape) * upm_st_dtype_size(dt);
    void *q = malloc(n ? n : 1);
    if (q && n)
        memcpy(q, data, n);
    take(f, name, dt, q, ndim, shape);
}

void upm_stepfile_put_backend(upm_stepfile *f, upm_backend *be, const char *name, const float *src, int ndim,
                              const int64_t *shape)
{
    size_t count = count_of(ndim, shape);
    float *h = malloc(sizeof(float) * (count ? count : 1));
    if (h && count)
        be->download(be, h, src, sizeof(float) * count);
    take(f, name, UPM_ST_F32, h, ndim, shape);
}

void upm_stepfile_put_params(upm_stepfile *f, const upm_model *m, int grads)
{
    char nm[160];
    for (int i = 0; i < m->L.n; i++) {
        const upm_param *p = &m->L.p[i];
        upm_stepfile_put_backend(f, m->be, p->name, upm_model_w(m, i), p->ndim, p->shape);
        if (grads) {
            snprintf(nm, sizeof nm, "grad.%s", p->name);
            upm_stepfile_put_backend(f, m->be, nm, upm_model_g(m, i), p->ndim, p->shape);
        }
    }
}

void upm_stepfile_put_side(upm_stepfile *f, const char *side, const upm_seq_input *in)
{
    char nm[128];
    for (int i = 0; i < in->nseg; i++) {
        const upm_seq_segment *g = &in->seg[i];
        int64_t n = in->nseq, tok = upm_seq_segment_tokens(g);
        if (g->kind == UPM_SEG_TEXT) {
            snprintf(nm, sizeof nm, "%s.%d.ids", side, i);
            upm_stepfile_put(f, nm, UPM_ST_I32, g->ids, 2, (int64_t[]){n, g->L});
            snprintf(nm, sizeof nm, "%s.%d.lengths", side, i);
            upm_stepfile_put(f, nm, UPM_ST_I32, g->lengths, 1, (int64_t[]){n});
        } else {
            snprintf(nm, sizeof nm, "%s.%d.pixels", side, i);
            upm_stepfile_put(f, nm, UPM_ST_F32, g->pixels, 5, (int64_t[]){n, g->T, 3, g->H, g->W});
        }
        snprintf(nm, sizeof nm, "%s.%d.attrs", side, i);
        upm_stepfile_put(f, nm, UPM_ST_U8, g->attrs, 2, (int64_t[]){n, tok});
    }
}

void upm_stepfile_put_tables(upm_stepfile *f, const char *pass, const upm_model *m, const float *noise,
                             const float *keep, int nseq, int S)
{
    char nm[128];
    static const char *gates[UPM_NGATES] = {"attn.gate", "mlp.gate1", "mlp.gate2"};
    int E = m->cfg.experts, token = upm_moe_token_routed(m->cfg.moe);
    size_t per = token ? (size_t)nseq * S * E : (size_t)256 * E;
    for (int l = 0; l < m->cfg.layers; l++) {
        for (int gi = 0; noise && gi < UPM_NGATES; gi++)
            if (m->L.blocks[l].has_gate[gi]) {
                snprintf(nm, sizeof nm, "noise.%s.blocks.%d.%s", pass, l, gates[gi]);
                const float *tab = noise + ((size_t)l * UPM_NGATES + gi) * per;
                if (token)
                    upm_stepfile_put(f, nm, UPM_ST_F32, tab, 3, (int64_t[]){nseq, S, E});
                else
                    upm_stepfile_put(f, nm, UPM_ST_F32, tab, 2, (int64_t[]){256, E});
            }
        for (int br = 0; keep && br < 2; br++) {
            snprintf(nm, sizeof nm, "keep.%s.blocks.%d.%s", pass, l, br ? "mlp" : "attn");
            upm_stepfile_put(f, nm, UPM_ST_F32, keep + ((size_t)l * 2 + br) * nseq, 1, (int64_t[]){nseq});
        }
    }
}

void upm_stepfile_segments_json(const upm_seq_input *in, char *buf, size_t n)
{
    static const char *kinds[] = {"text", "image", "video"}, *attn[] = {"full", "causal", "query"};
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < in->nseg && k < n; i++) {
        const upm_seq_segment *g = &in->seg[i];
        k += (size_t)snprintf(buf + k, n - k,
                              "%s{\"kind\": \"%s\", \"attn\": \"%s\", \"T\": %d, \"H\": %d, \"W\": %d, \"L\": %d, "
                              "\"attr\": %d}",
                              i ? ", " : "", kinds[g->kind], attn[g->attn], g->T, g->H, g->W, g->L, g->attrs[0]);
    }
    if (k < n)
        snprintf(buf + k, n - k, "]");
}

int upm_stepfile_write(upm_stepfile *f, const char *path, const char *const *meta, upm_err *err)
{
    if (f->failed)
        return upm_errf(err, UPM_ENOMEM, "%s: no memory for the step file's tensors", path);
    return upm_st_write(path, f->t, f->n, meta, err);
}
