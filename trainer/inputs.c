/* Batch sides and label texts as model inputs (see inputs.h). */
#include "inputs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attributes.h"
#include "catalog_ops.h"
#include "rng.h"

/* The pipeline's attention kinds are handed to the model by value (below): one numbering for both. */
_Static_assert(UPM_ATTN_FULL == (int)UPM_SEG_FULL && UPM_ATTN_CAUSAL == (int)UPM_SEG_CAUSAL &&
                   UPM_ATTN_CAPTION_QUERY == (int)UPM_SEG_QUERY,
               "pipeline/batch.h attention kinds must equal model/seqplan.h segment kinds");

int upm_batch_side_input(const upm_batch *b, upm_side side, upm_seq_input *in, upm_err *err)
{
    memset(in, 0, sizeof *in);
    in->nseq = b->B;
    in->spe_attr = b->spe_attr[side];
    for (int i = 0; i < b->nseg; i++) {
        const upm_segment *s = &b->seg[i];
        if (s->side != side)
            continue;
        if (in->nseg == UPM_SEQ_MAX_SEGMENTS)
            return upm_errf(err, UPM_EINVAL, "batch of task %s: more than %d segments", b->task, UPM_SEQ_MAX_SEGMENTS);
        upm_seq_segment *g = &in->seg[in->nseg++];
        *g = (upm_seq_segment){.attn = (upm_seg_attn)s->attn, .T = s->T, .H = s->H, .W = s->W, .L = s->L,
                               .pixels = s->pixels, .ids = s->ids, .lengths = s->lengths, .attrs = s->attrs};
        g->kind = s->modality == UPM_MOD_TEXT ? UPM_SEG_TEXT : s->modality == UPM_MOD_VIDEO ? UPM_SEG_VIDEO : UPM_SEG_IMAGE;
    }
    if (in->nseg == 0)
        return upm_errf(err, UPM_EINVAL, "batch of task %s has no %s segment", b->task,
                        side == UPM_SIDE_INPUT ? "input" : "target");
    return 0;
}

int upm_prompt_readouts(upm_seq_input *in, int32_t *seq, int32_t *pos)
{
    int found = 0;
    for (int r = 0; r < in->nseq; r++) {
        seq[r] = r, pos[r] = 0;
        int off = 1; /* position 0 is the sequence's leading <|spe|> */
        for (int g = 0; g < in->nseg && !pos[r]; g++) {
            const upm_seq_segment *sg = &in->seg[g];
            if (sg->kind == UPM_SEG_TEXT && sg->attn != UPM_SEG_QUERY)
                for (int j = 0; j < sg->lengths[r] && !pos[r]; j++)
                    if (sg->ids[(size_t)r * sg->L + j] == UPM_BPE_SPE)
                        pos[r] = off + j, found = 1;
            off += upm_seq_segment_tokens(sg);
        }
    }
    if (found)
        in->nread = in->nseq, in->read_seq = seq, in->read_pos = pos;
    return found;
}

int upm_label_texts_load(upm_catalog *cat, const upm_task *t, const char *set, upm_bpe *bpe, upm_label_texts *out,
                         upm_err *err)
{
    memset(out, 0, sizeof *out);
    upm_labelset ls = {0};
    int rc = upm_labelset_get(cat, set, &ls, err);
    if (rc)
        return rc;
    int L = t->max_target_len - 1, V = 0;
    if (ls.n == 0 || L < 1) {
        upm_labelset_free(&ls);
        return upm_errf(err, UPM_EINVAL, "label set %s: %zu labels, text length %d", set, ls.n, L);
    }
    for (size_t c = 0; c < ls.n; c++)
        V += ls.labels[c].n_names;
    snprintf(out->set, sizeof out->set, "%s", set);
    out->C = (int)ls.n, out->L = L, out->nvariants = V;
    out->ids = calloc((size_t)out->C * L, sizeof *out->ids);
    out->lengths = calloc((size_t)out->C, sizeof *out->lengths);
    out->attrs = malloc((size_t)out->C * L);
    out->var_ids = calloc((size_t)V * L, sizeof *out->var_ids);
    out->var_len = calloc((size_t)V, sizeof *out->var_len);
    out->first = calloc((size_t)out->C, sizeof *out->first);
    out->count = calloc((size_t)out->C, sizeof *out->count);
    if (!out->ids || !out->lengths || !out->attrs || !out->var_ids || !out->var_len || !out->first || !out->count)
        rc = upm_errf(err, UPM_ENOMEM, "label set %s: no memory", set);
    for (int c = 0, v = 0; !rc && c < out->C; c++) {
        out->first[c] = v, out->count[c] = ls.labels[c].n_names;
        for (int k = 0; !rc && k < ls.labels[c].n_names; k++, v++) {
            const char *name = ls.labels[c].names[k];
            int n = upm_bpe_encode(bpe, name, strlen(name), out->var_ids + (size_t)v * L, L,
                                   UPM_BPE_ADD_EOT | UPM_BPE_TRUNCATE, err);
            if (n < 0)
                rc = n;
            else
                out->var_len[v] = n;
        }
    }
    upm_labelset_free(&ls);
    if (rc) {
        upm_label_texts_free(out);
        return rc;
    }
    /* The pass is as wide as the longest name, not the task's text budget: each text attends to its own
     * length only, so the padding was pure cost (one-word labels: 2 tokens a text instead of 31). */
    int width = 1;
    for (int v = 0; v < V; v++)
        width = out->var_len[v] > width ? out->var_len[v] : width;
    for (int v = 1; width < L && v < V; v++) /* rows move to lower addresses: in order is safe */
        memmove(out->var_ids + (size_t)v * width, out->var_ids + (size_t)v * L, sizeof(int32_t) * (size_t)width);
    out->L = L = width;
    memset(out->attrs, upm_attr_byte(t, UPM_SIDE_TARGET, UPM_MOD_TEXT), (size_t)out->C * L);
    out->spe_attr = upm_attr_byte(t, UPM_SIDE_TARGET, t->target_modality);
    upm_label_texts_pick(out, 0, -1);
    return 0;
}

void upm_label_texts_pick(upm_label_texts *lt, uint64_t seed, int64_t step)
{
    for (int c = 0; c < lt->C; c++) {
        int k = 0;
        if (step >= 0 && lt->count[c] > 1) {
            upm_rng r = upm_rng_stream(seed, UPM_RNG_LABEL, (uint64_t)step, (uint64_t)c, 0);
            k = (int)upm_rng_below(&r, (uint64_t)lt->count[c]);
        }
        int v = lt->first[c] + k;
        memcpy(lt->ids + (size_t)c * lt->L, lt->var_ids + (size_t)v * lt->L, sizeof(int32_t) * (size_t)lt->L);
        lt->lengths[c] = lt->var_len[v];
    }
}

void upm_label_texts_free(upm_label_texts *lt)
{
    free(lt->ids);
    free(lt->lengths);
    free(lt->attrs);
    free(lt->var_ids);
    free(lt->var_len);
    free(lt->first);
    free(lt->count);
    memset(lt, 0, sizeof *lt);
}

void upm_label_texts_input(const upm_label_texts *lt, upm_seq_input *in)
{
    memset(in, 0, sizeof *in);
    in->nseq = lt->C;
    in->spe_attr = lt->spe_attr;
    in->nseg = 1;
    in->seg[0] = (upm_seq_segment){.kind = UPM_SEG_TEXT, .attn = UPM_SEG_FULL, .L = lt->L, .ids = lt->ids,
                                   .lengths = lt->lengths, .attrs = lt->attrs};
}
