/* Planning a pass on the host: sequence positions, rows grouped by attribute pattern, attention
 * masks (docs/model.md, "Sequences"), index arrays for the embedding ops. */
#include "seqplan.h"

#include <stdlib.h>
#include <string.h>

int upm_seq_segment_tokens(const upm_seq_segment *s)
{
    return s->kind == UPM_SEG_TEXT ? s->L : s->T * (s->H / 16) * (s->W / 16);
}

static int check_input(const upm_seq_input *in, int vocab, int max_text, int max_frames, upm_err *err)
{
    if (in->nseq < 1 || in->nseg < 0 || in->nseg > UPM_SEQ_MAX_SEGMENTS)
        return upm_errf(err, UPM_EINVAL, "model input: %d sequences and %d segments", in->nseq, in->nseg);
    for (int s = 0; s < in->nseg; s++) {
        const upm_seq_segment *g = &in->seg[s];
        if (!g->attrs)
            return upm_errf(err, UPM_EINVAL, "model input: segment %d has no attribute bytes", s);
        if (g->kind == UPM_SEG_TEXT) {
            if (g->L < 1 || g->pos0 < 0 || g->pos0 + g->L > max_text || !g->ids || !g->lengths)
                return upm_errf(err, UPM_EINVAL, "model input: text segment %d: positions %d..%d (0..%d) or ids "
                                "missing", s, g->pos0, g->pos0 + g->L - 1, max_text - 1);
            for (int b = 0; b < in->nseq; b++) {
                if (g->lengths[b] < 0 || g->lengths[b] > g->L)
                    return upm_errf(err, UPM_EINVAL, "model input: text segment %d row %d: length %d of %d", s, b,
                                    g->lengths[b], g->L);
                for (int i = 0; i < g->L; i++)
                    if (g->ids[(size_t)b * g->L + i] < 0 || g->ids[(size_t)b * g->L + i] >= vocab)
                        return upm_errf(err, UPM_EINVAL, "model input: text segment %d row %d: id %d outside the "
                                        "vocabulary (%d)", s, b, g->ids[(size_t)b * g->L + i], vocab);
            }
        } else {
            if (g->T < 1 || g->T > max_frames || g->H < 16 || g->W < 16 || g->H % 16 || g->W % 16 || !g->pixels)
                return upm_errf(err, UPM_EINVAL, "model input: pixel segment %d: %d frames (1..%d) of %dx%d (multiples "
                                "of 16)", s, g->T, max_frames, g->W, g->H);
            if (g->kind == UPM_SEG_IMAGE && g->T != 1)
                return upm_errf(err, UPM_EINVAL, "model input: image segment %d has %d frames", s, g->T);
        }
        if (g->attn != UPM_SEG_FULL && g->kind != UPM_SEG_TEXT)
            return upm_errf(err, UPM_EINVAL, "model input: segment %d: only text can be causal", s);
    }
    if (in->no_spe && (in->nread < 1 || in->nseg < 1))
        return upm_errf(err, UPM_EINVAL, "model input: a pass without SPE tokens needs segments and read-outs");
    return 0;
}

/* May token (segment sa, position i) attend to (segment sb, position j)? Segment -1 is the SPE token;
 * valid_* say whether a text position is within its row's length. */
static int allowed(const upm_seq_input *in, int sa, int i, int valid_a, int sb, int j, int valid_b)
{
    if (!valid_a || !valid_b)
        return 0;
    upm_seg_attn qa = sa < 0 ? UPM_SEG_FULL : in->seg[sa].attn, kb = sb < 0 ? UPM_SEG_FULL : in->seg[sb].attn;
    if (kb == UPM_SEG_FULL)
        return 1; /* everybody sees SPE and full segments */
    if (qa == UPM_SEG_FULL)
        return 0; /* full tokens never see causal text or queries */
    if (kb == UPM_SEG_CAUSAL)
        return qa == UPM_SEG_CAUSAL ? (sa == sb && j <= i) : (j < i); /* a query j sees text 0..j-1 */
    return qa == UPM_SEG_QUERY && sa == sb && i == j;                 /* a query sees itself only */
}

int upm_seq_positions(const upm_seq_input *in)
{
    int S = !in->no_spe;
    for (int s = 0; s < in->nseg; s++)
        S += upm_seq_segment_tokens(&in->seg[s]);
    return S;
}

int upm_seq_plan_build(const upm_seq_input *in, int vocab, int max_text, int max_frames, upm_seq_plan *p, upm_err *err)
{
    memset(p, 0, sizeof *p);
    int rc = check_input(in, vocab, max_text, max_frames, err);
    if (rc)
        return rc;
    int n = in->nseq, spe = !in->no_spe, S = spe, off[UPM_SEQ_MAX_SEGMENTS];
    for (int s = 0; s < in->nseg; s++)
        off[s] = S, S += upm_seq_segment_tokens(&in->seg[s]);
    int N = n * S, nread = in->nread > 0 ? in->nread : n;
    size_t idx = (size_t)2 * N + (size_t)n * S + nread + n + in->nseg;
    for (int s = 0; s < in->nseg; s++)
        idx += (size_t)2 * n * upm_seq_segment_tokens(&in->seg[s]);
    p->mem = malloc(idx * sizeof(int32_t) + (size_t)n * S * S + (size_t)N);
    if (!p->mem)
        return upm_errf(err, UPM_ENOMEM, "model: no memory to plan %d sequences of %d tokens", n, S);
    int32_t *q = p->mem;
    p->perm = q, q += N;
    p->row_of = q, q += (size_t)n * S;
    p->seq_of = q, q += N;
    p->read_rows = q, q += nread;
    p->spe_idx = q, q += n;
    p->seg_e0 = q, q += in->nseg;
    for (int s = 0; s < in->nseg; s++) {
        int tok = upm_seq_segment_tokens(&in->seg[s]);
        p->pos_idx[s] = q, q += (size_t)n * tok;
        p->frame_idx[s] = q, q += (size_t)n * tok;
    }
    uint8_t *attr_of = (uint8_t *)q; /* [N] by E row */
    p->mask = attr_of + N;
    p->nseq = n, p->S = S, p->N = N, p->nread = nread;

    /* E order and its per-row attribute byte, sequence and position */
    int32_t *erow_seq = malloc((size_t)N * 2 * sizeof(int32_t));
    if (!erow_seq) {
        upm_seq_plan_free(p);
        return upm_errf(err, UPM_ENOMEM, "model: no memory to plan %d sequences of %d tokens", n, S);
    }
    int32_t *erow_pos = erow_seq + N;
    int e = 0;
    for (int b = 0; b < n; b++) {
        p->spe_idx[b] = 0;
        if (spe)
            attr_of[e] = in->spe_attr, erow_seq[e] = b, erow_pos[e] = 0, e++;
    }
    for (int s = 0; s < in->nseg; s++) {
        const upm_seq_segment *g = &in->seg[s];
        int tok = upm_seq_segment_tokens(g), gw = g->W / 16, per_frame = g->kind == UPM_SEG_TEXT ? 1 : (g->H / 16) * gw;
        p->seg_e0[s] = e;
        for (int b = 0; b < n; b++)
            for (int i = 0; i < tok; i++, e++) {
                attr_of[e] = g->attrs[(size_t)b * tok + i], erow_seq[e] = b, erow_pos[e] = off[s] + i;
                size_t k = (size_t)b * tok + i;
                p->pos_idx[s][k] = g->kind == UPM_SEG_TEXT ? g->pos0 + i : i % per_frame;
                p->frame_idx[s][k] = g->kind == UPM_SEG_TEXT ? 0 : i / per_frame;
            }
    }
    /* Patterns ascending; X rows = E rows stably sorted by pattern */
    int count[256] = {0};
    for (int r = 0; r < N; r++)
        count[attr_of[r]]++;
    int start[256], x = 0;
    for (int a = 0; a < 256; a++)
        if (count[a]) {
            p->pat[p->npat] = (uint8_t)a;
            p->pat_start[p->npat++] = x;
            start[a] = x, x += count[a];
        }
    p->pat_start[p->npat] = x;
    for (int r = 0; r < N; r++) {
        int xr = start[attr_of[r]]++;
        p->perm[xr] = r;
        p->seq_of[xr] = erow_seq[r];
        p->row_of[(size_t)erow_seq[r] * S + erow_pos[r]] = xr;
    }
    /* Masks by position: segment and validity of each position */
    int8_t *seg_at = malloc((size_t)S * 2);
    int ok = seg_at != NULL;
    for (int b = 0; ok && b < n; b++) {
        int8_t *valid = seg_at + S;
        if (spe)
            seg_at[0] = -1, valid[0] = 1;
        for (int s = 0; s < in->nseg; s++) {
            const upm_seq_segment *g = &in->seg[s];
            for (int i = 0; i < upm_seq_segment_tokens(g); i++) {
                seg_at[off[s] + i] = (int8_t)s;
                valid[off[s] + i] = g->kind != UPM_SEG_TEXT || i < g->lengths[b];
            }
        }
        uint8_t *m = p->mask + (size_t)b * S * S;
        for (int i = 0; i < S; i++)
            for (int j = 0; j < S; j++) {
                int sa = seg_at[i], sb = seg_at[j];
                m[(size_t)i * S + j] = (uint8_t)allowed(in, sa, sa < 0 ? 0 : i - off[sa], valid[i], sb,
                                                        sb < 0 ? 0 : j - off[sb], valid[j]);
            }
    }
    free(seg_at);
    free(erow_seq);
    if (!ok) {
        upm_seq_plan_free(p);
        return upm_errf(err, UPM_ENOMEM, "model: no memory for attention masks");
    }
    for (int r = 0; r < nread; r++) {
        int b = in->nread > 0 ? in->read_seq[r] : r, pos = in->nread > 0 ? in->read_pos[r] : 0;
        if (b < 0 || b >= n || pos < 0 || pos >= S) {
            upm_seq_plan_free(p);
            return upm_errf(err, UPM_EINVAL, "model input: read-out %d at sequence %d position %d is outside %dx%d",
                            r, b, pos, n, S);
        }
        p->read_rows[r] = p->row_of[(size_t)b * S + pos];
    }
    return 0;
}

void upm_seq_plan_free(upm_seq_plan *p)
{
    free(p->mem);
    memset(p, 0, sizeof *p);
}
