/* Batch allocation in one block, and its checksum (see batch.h for the layout). */
#include "batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define XXH_STATIC_LINKING_ONLY /* a state on the stack: no allocation that could fail */
#include <xxhash.h>

#define ALIGN 64

static size_t round_up(size_t n) { return (n + ALIGN - 1) / ALIGN * ALIGN; }

int upm_segment_tokens(const upm_segment *s)
{
    if (s->modality == UPM_MOD_TEXT)
        return s->L;
    return s->T * (s->H / UPM_PATCH) * (s->W / UPM_PATCH);
}

/* Bytes each array of segment s needs; fills the segment's geometry. */
static size_t segment_bytes(upm_segment *s, size_t sizes[4])
{
    size_t n = (size_t)s->n, tokens = (size_t)upm_segment_tokens(s);
    sizes[0] = s->modality == UPM_MOD_TEXT ? 0 : round_up(n * (size_t)s->T * 3 * (size_t)s->H * (size_t)s->W * sizeof(float));
    sizes[1] = s->modality == UPM_MOD_TEXT ? round_up(n * (size_t)s->L * sizeof(int32_t)) : 0;
    sizes[2] = s->modality == UPM_MOD_TEXT ? round_up(n * sizeof(int32_t)) : 0;
    sizes[3] = round_up(n * tokens);
    return sizes[0] + sizes[1] + sizes[2] + sizes[3];
}

static void *mem_alloc(const upm_batch_mem *fn, size_t bytes)
{
    void *p = NULL;
    if (fn->alloc)
        return fn->alloc(fn->ctx, bytes);
    return posix_memalign(&p, ALIGN, bytes) == 0 ? p : NULL;
}

static void mem_free(const upm_batch_mem *fn, void *p)
{
    if (p && fn->alloc)
        fn->free(fn->ctx, p);
    else
        free(p);
}

int upm_batch_alloc(upm_batch *b, const upm_task *t, const upm_batch_shape *sh, upm_err *err)
{
    memset(b, 0, sizeof *b);
    return upm_batch_realloc(b, t, sh, err);
}

int upm_batch_realloc(upm_batch *b, const upm_task *t, const upm_batch_shape *sh, upm_err *err)
{
    void *old = b->mem;
    size_t old_bytes = b->mem_bytes;
    upm_batch_mem fn = b->memfn;
    memset(b, 0, sizeof *b);
    b->memfn = fn;
    if (sh->B < 1 || sh->nseg < 1 || sh->nseg > UPM_MAX_SEGMENTS) {
        mem_free(&fn, old);
        return upm_errf(err, UPM_EUSAGE, "batch of task %s: bad shape (B %d, %d segments)", t->name, sh->B, sh->nseg);
    }
    snprintf(b->task, sizeof b->task, "%s", t->name);
    b->formulation = t->formulation;
    b->B = sh->B;
    b->nseg = sh->nseg;
    b->spe_attr[UPM_SIDE_INPUT] = upm_attr_byte(t, UPM_SIDE_INPUT, t->inputs[0].modality);
    b->spe_attr[UPM_SIDE_TARGET] = upm_attr_byte(t, UPM_SIDE_TARGET, t->target_modality);
    size_t total = 0, sizes[UPM_MAX_SEGMENTS][4];
    int first_text_L = 0;
    for (int i = 0; i < sh->nseg; i++) {
        upm_segment *s = &b->seg[i];
        snprintf(s->field, sizeof s->field, "%s", sh->seg[i].field);
        s->side = sh->seg[i].side;
        s->modality = sh->seg[i].modality;
        s->attn = sh->seg[i].query ? UPM_ATTN_CAPTION_QUERY
                  : (t->causal && s->side == UPM_SIDE_INPUT && s->modality == UPM_MOD_TEXT) ? UPM_ATTN_CAUSAL
                                                                                             : UPM_ATTN_FULL;
        s->attr = upm_attr_byte(t, s->side, s->modality);
        s->n = sh->B;
        s->T = sh->seg[i].T, s->H = sh->seg[i].H, s->W = sh->seg[i].W, s->L = sh->seg[i].L;
        if ((s->modality == UPM_MOD_TEXT && s->L < 1) ||
            (s->modality != UPM_MOD_TEXT && (s->T < 1 || s->H < UPM_PATCH || s->W < UPM_PATCH))) {
            mem_free(&fn, old);
            return upm_errf(err, UPM_EUSAGE, "batch of task %s: segment %s has no size", t->name, s->field);
        }
        if (s->modality == UPM_MOD_TEXT && !first_text_L && s->side == UPM_SIDE_INPUT)
            first_text_L = s->L;
        total += segment_bytes(s, sizes[i]);
    }
    size_t labels = sh->with_labels ? round_up((size_t)sh->B * sizeof(int32_t)) : 0;
    size_t mlm = sh->with_mlm_targets ? round_up((size_t)sh->B * (size_t)first_text_L * sizeof(int32_t)) : 0;
    total += labels + mlm;
    if (old && old_bytes >= total) {
        b->mem = old;
        b->mem_bytes = old_bytes;
    } else {
        mem_free(&fn, old);
        if (!(b->mem = mem_alloc(&fn, total ? total : ALIGN)))
            return upm_errf(err, UPM_ENOMEM, "batch of task %s: cannot allocate %zu bytes", t->name, total);
        b->mem_bytes = total;
    }
    b->used_bytes = total;
    char *p = b->mem;
    for (int i = 0; i < sh->nseg; i++) {
        upm_segment *s = &b->seg[i];
        s->pixels = sizes[i][0] ? (float *)p : NULL, p += sizes[i][0];
        s->ids = sizes[i][1] ? (int32_t *)p : NULL, p += sizes[i][1];
        s->lengths = sizes[i][2] ? (int32_t *)p : NULL, p += sizes[i][2];
        s->attrs = (uint8_t *)p, p += sizes[i][3];
        /* Zero everything but pixels, which every row overwrites whole: on a 256 x 160 px image batch
         * that is 78 MB the loader no longer clears per step. */
        size_t px = sizes[i][0] ? (size_t)s->n * (size_t)s->T * 3 * (size_t)s->H * (size_t)s->W * sizeof(float) : 0;
        memset((char *)s->attrs - sizes[i][1] - sizes[i][2] - (sizes[i][0] - px), 0,
               sizes[i][0] - px + sizes[i][1] + sizes[i][2] + sizes[i][3]); /* padding included */
        memset(s->attrs, s->attr, (size_t)s->n * (size_t)upm_segment_tokens(s));
    }
    memset(p, 0, labels + mlm);
    if (labels) {
        b->labels = (int32_t *)p, p += labels;
        for (int i = 0; i < sh->B; i++)
            b->labels[i] = -1;
    }
    if (mlm) {
        b->mlm_targets = (int32_t *)p;
        for (size_t i = 0; i < (size_t)sh->B * (size_t)first_text_L; i++)
            b->mlm_targets[i] = -1;
    }
    return 0;
}

void upm_batch_free(upm_batch *b)
{
    mem_free(&b->memfn, b->mem);
    memset(b, 0, sizeof *b);
}

/* XXH3 over the batch's identity and its whole block: tens of MB per batch, so the hash must run at
 * memory speed (a byte-wise FNV took longer than decoding the batch). */
uint64_t upm_batch_checksum(const upm_batch *b)
{
    XXH3_state_t st;
    XXH3_INITSTATE(&st);
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, b->task, strlen(b->task));
    XXH3_64bits_update(&st, b->dataset, strlen(b->dataset));
    XXH3_64bits_update(&st, &b->B, sizeof b->B);
    XXH3_64bits_update(&st, b->spe_attr, sizeof b->spe_attr);
    XXH3_64bits_update(&st, b->mem, b->used_bytes);
    return XXH3_64bits_digest(&st);
}
