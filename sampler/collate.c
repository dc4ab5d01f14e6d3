/* Batch rows from samples (see collate.h). */
#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "augment_image.h"
#include "augment_video.h"
#include "collate.h"
#include "formulation.h"
#include "text_mask.h"
#include "video.h"

#define MAX_TEXT_IDS 4096

int upm_collate_shape(const upm_task *t, const upm_collate_opts *o, int B, upm_batch_shape *sh, upm_err *err)
{
    memset(sh, 0, sizeof *sh);
    sh->B = B;
    const upm_formulation_desc *fd = upm_formulation_desc_get(t->formulation);
    if (!fd)
        return upm_errf(err, UPM_EINVAL, "task %s: unknown formulation %d", t->name, (int)t->formulation);
    for (int i = 0; i < t->n_inputs; i++) {
        sh->seg[i].field = t->inputs[i].field;
        sh->seg[i].side = UPM_SIDE_INPUT;
        sh->seg[i].modality = t->inputs[i].modality;
        sh->seg[i].T = t->inputs[i].modality == UPM_MOD_VIDEO ? o->frames : 1;
        sh->seg[i].H = sh->seg[i].W = o->image_size;
        sh->seg[i].L = t->max_text_len - 1; /* the model prepends <|spe|> */
    }
    sh->nseg = t->n_inputs;
    if (t->prompt[0]) { /* one prompt segment carries every text input: keep the first, drop the others */
        int w = 0, kept = 0;
        for (int i = 0; i < sh->nseg; i++)
            if (sh->seg[i].modality != UPM_MOD_TEXT || !kept++)
                sh->seg[w++] = sh->seg[i];
        sh->nseg = w;
    }
    if (fd->caption_queries) { /* query segment after the caption text */
        int text = -1;
        for (int i = 0; i < sh->nseg; i++)
            if (sh->seg[i].modality == UPM_MOD_TEXT && strcmp(sh->seg[i].field, t->target_field) == 0)
                text = i;
        if (text < 0)
            return upm_errf(err, UPM_EINVAL, "task %s: caption text field %s is not an input", t->name, t->target_field);
        int q = sh->nseg++;
        sh->seg[q] = sh->seg[text];
        sh->seg[q].query = 1;
    }
    if (fd->target_segment) {
        int s = sh->nseg++;
        sh->seg[s].field = t->target_field;
        sh->seg[s].side = UPM_SIDE_TARGET;
        sh->seg[s].modality = t->target_modality;
        sh->seg[s].T = t->target_modality == UPM_MOD_VIDEO ? o->frames : 1;
        sh->seg[s].H = sh->seg[s].W = o->image_size;
        sh->seg[s].L = t->max_target_len - 1;
    }
    sh->with_labels = fd->label_index;
    sh->with_mlm_targets = fd->mlm_mask;
    for (int i = 0; i < sh->nseg; i++)
        if (sh->seg[i].modality != UPM_MOD_TEXT && (o->image_size < 16 || o->image_size % 16))
            return upm_errf(err, UPM_EUSAGE, "image size %d is not a multiple of the 16-pixel patch", o->image_size);
    return 0;
}

int upm_caption_lines(const char *text, size_t len, upm_text_span *lines, int max)
{
    int n = 0;
    for (size_t i = 0; i < len && n < max;) {
        size_t j = i;
        while (j < len && text[j] != '\n')
            j++;
        size_t e = j;
        while (e > i && (text[e - 1] == '\r' || text[e - 1] == ' ' || text[e - 1] == '\t'))
            e--;
        size_t b = i;
        while (b < e && (text[b] == ' ' || text[b] == '\t'))
            b++;
        if (e > b)
            lines[n++] = (upm_text_span){text + b, e - b};
        i = j + 1;
    }
    return n;
}

int upm_collate_field_text(const upm_wds_sample *s, const char *field, char **text, size_t *len, int *owned, upm_err *err)
{
    const char *colon = strchr(field, ':');
    char ext[UPM_FIELD_MAX + 1];
    snprintf(ext, sizeof ext, "%.*s", (int)(colon ? (size_t)(colon - field) : strlen(field)), field);
    const upm_wds_field *f = upm_wds_sample_get(s, ext);
    *owned = 0;
    if (!f)
        return upm_errf(err, UPM_EBADDATA, "%s: %s: no .%s member", s->url, s->key, ext);
    if (!colon) {
        *text = (char *)f->data;
        *len = f->size;
        return 0;
    }
    cJSON *doc = cJSON_ParseWithLength((const char *)f->data, f->size);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, colon + 1);
    char buf[64];
    const char *src = cJSON_IsString(v) ? v->valuestring : NULL;
    if (cJSON_IsNumber(v)) {
        snprintf(buf, sizeof buf, "%.17g", v->valuedouble);
        src = buf;
    }
    if (!src) {
        cJSON_Delete(doc);
        return upm_errf(err, UPM_EBADDATA, "%s: %s: .%s has no string or number \"%s\"", s->url, s->key, ext, colon + 1);
    }
    *text = strdup(src);
    *len = *text ? strlen(*text) : 0;
    *owned = 1;
    cJSON_Delete(doc);
    return *text ? 0 : upm_errf(err, UPM_ENOMEM, "out of memory");
}

static int read_label(const upm_task *t, const upm_collate_opts *o, const upm_wds_sample *s, int32_t *label, upm_err *err)
{
    char *text, *end;
    size_t len;
    int owned, rc = upm_collate_field_text(s, t->target_field, &text, &len, &owned, err);
    if (rc)
        return rc;
    char buf[32];
    snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf - 1 ? len : sizeof buf - 1), text);
    if (owned)
        free(text);
    errno = 0;
    long v = strtol(buf, &end, 10);
    while (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t')
        end++;
    if (end == buf || *end || errno || v < 0)
        return upm_errf(err, UPM_EBADDATA, "%s: %s: label '%s' is not a class index", s->url, s->key, buf);
    if (o->n_labels > 0 && v >= o->n_labels) /* the label set lacks classes the data has */
        return upm_errf(err, o->strict_labels ? UPM_EINVAL : UPM_EBADDATA,
                        "%s: %s: label '%s' is not a class index in 0..%d (the label set of task %s has %d classes)",
                        s->url, s->key, buf, o->n_labels - 1, t->name, o->n_labels);
    *label = (int32_t)v;
    return 0;
}

void upm_collate_image_aug(const upm_collate_opts *o, const upm_task *t, upm_side side, upm_aug_image *a)
{
    upm_aug_mode mode = !o->train || o->augment == UPM_AUGMENT_NONE ? UPM_AUG_EVAL
                        : o->augment == UPM_AUGMENT_LIGHT ||
                                  (upm_formulation_desc_get(t->formulation)->classify_augment && side == UPM_SIDE_INPUT)
                            ? UPM_AUG_TRAIN_CLASSIFY
                            : UPM_AUG_TRAIN_PAIR;
    upm_aug_image_init(a, mode, o->image_size);
    if (o->train && o->augment == UPM_AUGMENT_LIGHT) /* keeps at least half the image, never mirrors it */
        a->scale_min = 0.5, a->flip_p = 0;
}

static int fill_image(const upm_collate_opts *o, const upm_task *t, const upm_wds_sample *s, const char *field,
                      upm_side side, float *out, upm_rng *rng, upm_err *err)
{
    const upm_wds_field *f = upm_wds_sample_get(s, field);
    if (!f)
        return upm_errf(err, UPM_EBADDATA, "%s: %s: no .%s member", s->url, s->key, field);
    upm_aug_image a;
    upm_collate_image_aug(o, t, side, &a);
    upm_image_req req = {.name = s->key};
    int rc = upm_aug_image_bytes(&a, f->data, f->size, &req, rng, out, NULL, err);
    if (rc && rc != UPM_ENOMEM) {
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "%s", err->msg);
        rc = upm_errf(err, UPM_EBADDATA, "%s: %s: %s", s->url, s->key, msg);
    }
    return rc;
}

static int fill_video(const upm_collate_opts *o, const upm_wds_sample *s, const char *field, float *out, upm_rng *rng,
                      upm_err *err)
{
    const upm_wds_field *f = upm_wds_sample_get(s, field);
    if (!f)
        return upm_errf(err, UPM_EBADDATA, "%s: %s: no .%s member", s->url, s->key, field);
    int crops = o->video_crops > 1 ? o->video_crops : 1, clips = o->video_clips > 1 ? o->video_clips : 1;
    if ((crops != 1 && crops != 3) || o->view < 0 || o->view >= crops * clips)
        return upm_errf(err, UPM_EUSAGE, "video view %d of %d crops x %d clips", o->view, crops, clips);
    /* one crop: the centre; three: view 0 the centre, 1 and 2 the two ends (augment_video.h) */
    upm_video_aug aug = {.size = o->image_size, .eval_crop = o->view % crops};
    int jitter = o->train && o->augment != UPM_AUGMENT_NONE; /* none: the evaluation view */
    if (o->augment == UPM_AUGMENT_LIGHT) /* shorter side 1-8/7 x the crop (paper: 8/7-10/7), no flip */
        aug.scale_min = 1.0, aug.scale_max = 256.0 / 224.0, aug.no_flip = 1;
    upm_video_opts vo = {.max_short_side = upm_video_aug_decode_side(&aug)};
    upm_video *v = NULL;
    upm_video_frames frames = {0};
    int64_t idx[64];
    int rc = o->frames > 64 ? upm_errf(err, UPM_EUSAGE, "at most 64 frames") : upm_video_open(f->data, f->size, &vo, &v, err);
    if (!rc) {
        const upm_video_info *info = upm_video_get_info(v);
        rc = o->train ? upm_video_sample_indices(info->num_frames, info->fps, o->frames, o->video_interval, 1, rng, idx, err)
                      : upm_video_eval_indices(info->num_frames, o->frames, o->view / crops, clips, idx, err);
    }
    if (!rc)
        rc = upm_video_decode(v, idx, o->frames, &frames, err);
    if (!rc)
        rc = upm_video_augment(&frames, jitter, &aug, rng, out, NULL, err);
    upm_video_frames_free(&frames);
    upm_video_close(v);
    if (rc && rc != UPM_ENOMEM && rc != UPM_EUSAGE) {
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "%s", err->msg);
        rc = upm_errf(err, UPM_EBADDATA, "%s: %s: %s", s->url, s->key, msg);
    }
    return rc;
}

/* Encodes the prompt with each {field} replaced by that field's tokens; fields are trimmed (longest
 * first, from their end) so that the whole fits in L ids, keeping the prompt's own tokens. */
static int encode_prompt(const upm_task *t, const upm_collate_opts *o, const upm_wds_sample *s, int32_t *ids, int L,
                         int *n_out, upm_err *err)
{
    enum { MAXP = 2 * UPM_MAX_INPUTS + 2 };
    int32_t *piece[MAXP] = {0};
    int len[MAXP] = {0}, is_field[MAXP] = {0}, np = 0, rc = 0;
    for (const char *p = t->prompt; *p && !rc && np < MAXP;) {
        const char *open = strchr(p, '{');
        size_t lit = open ? (size_t)(open - p) : strlen(p);
        char *text = NULL;
        size_t tlen = lit;
        int owned = 0, field = 0;
        if (lit) {
            text = (char *)p;
            p += lit;
        } else {
            const char *close = strchr(open, '}');
            char name[UPM_FIELD_MAX + 1];
            snprintf(name, sizeof name, "%.*s", (int)(close - open - 1), open + 1);
            rc = upm_collate_field_text(s, name, &text, &tlen, &owned, err);
            field = 1;
            p = close + 1;
        }
        if (!rc && !(piece[np] = malloc(MAX_TEXT_IDS * sizeof(int32_t))))
            rc = upm_errf(err, UPM_ENOMEM, "out of memory");
        if (!rc && (len[np] = upm_bpe_encode(o->bpe, text, tlen, piece[np], MAX_TEXT_IDS, UPM_BPE_TRUNCATE, err)) < 0)
            rc = len[np];
        is_field[np++] = field;
        if (owned)
            free(text);
    }
    int total = 0;
    for (int i = 0; i < np; i++)
        total += len[i];
    while (!rc && total > L) { /* trim the longest field */
        int longest = -1;
        for (int i = 0; i < np; i++)
            if (is_field[i] && len[i] > 0 && (longest < 0 || len[i] > len[longest]))
                longest = i;
        if (longest < 0)
            rc = upm_errf(err, UPM_EINVAL, "task %s: the prompt alone needs more than %d tokens", t->name, L);
        else
            len[longest]--, total--;
    }
    *n_out = 0;
    for (int i = 0; i < np; i++) {
        if (!rc) {
            memcpy(ids + *n_out, piece[i], (size_t)len[i] * sizeof *ids);
            *n_out += len[i];
        }
        free(piece[i]);
    }
    return rc;
}

static int fill_text(const upm_task *t, const upm_collate_opts *o, const upm_wds_sample *s, upm_segment *seg,
                     upm_batch *b, int row, upm_rng *rng, upm_err *err)
{
    int32_t *ids = seg->ids + (size_t)row * (size_t)seg->L;
    int n, rc = 0;
    if (!o->bpe)
        return upm_errf(err, UPM_EUSAGE, "task %s has text but no BPE vocabulary was given", t->name);
    if (t->prompt[0] && seg->side == UPM_SIDE_INPUT) {
        rc = encode_prompt(t, o, s, ids, seg->L, &n, err);
    } else {
        char *text;
        size_t len;
        int owned;
        if ((rc = upm_collate_field_text(s, seg->field, &text, &len, &owned, err)))
            return rc;
        const char *pick = text;
        size_t plen = len;
        upm_text_span lines[64];
        /* the caption field (a pair task's target, a caption task's causal input) may hold several */
        int captions = seg->side == UPM_SIDE_TARGET || (upm_formulation_desc_get(t->formulation)->caption_queries &&
                                                         strcmp(seg->field, t->target_field) == 0);
        int nl = captions && memchr(text, '\n', len) ? upm_caption_lines(text, len, lines, 64) : 0;
        if (nl > 1) { /* several captions: one at random in training, the first in evaluation */
            int k = o->train ? (int)(upm_rng_uniform(rng) * nl) : 0;
            k = k < nl ? k : nl - 1;
            pick = lines[k].s, plen = lines[k].n;
        }
        n = upm_bpe_encode(o->bpe, pick, plen, ids, seg->L, UPM_BPE_ADD_EOT | UPM_BPE_TRUNCATE | UPM_BPE_STRICT_UTF8, err);
        if (owned)
            free(text);
        rc = n < 0 ? n : 0;
    }
    if (rc)
        return rc == UPM_ENOMEM ? rc : upm_errf(err, UPM_EBADDATA, "%s: %s: %s", s->url, s->key, err->msg);
    seg->lengths[row] = n;
    if (upm_formulation_desc_get(t->formulation)->mlm_mask && seg->side == UPM_SIDE_INPUT)
        return upm_text_mask(o->bpe, ids, n, rng, b->mlm_targets + (size_t)row * (size_t)seg->L, err);
    return 0;
}

int upm_collate_views(const upm_task *t, const upm_collate_opts *o)
{
    const upm_formulation_desc *fd = upm_formulation_desc_get(t->formulation);
    int video = 0;
    for (int i = 0; i < t->n_inputs; i++)
        video |= t->inputs[i].modality == UPM_MOD_VIDEO;
    if (o->train || !fd || fd->targets != UPM_TARGETS_LABEL_TEXTS || !video)
        return 1;
    return (o->video_crops > 1 ? o->video_crops : 1) * (o->video_clips > 1 ? o->video_clips : 1);
}

int upm_collate_row(const upm_task *t, const upm_collate_opts *o, const upm_wds_sample *s, upm_batch *b, int row,
                    upm_rng *rng, upm_err *err)
{
    int rc = 0;
    for (int i = 0; i < b->nseg && !rc; i++) {
        upm_segment *seg = &b->seg[i];
        if (seg->attn == UPM_ATTN_CAPTION_QUERY) { /* one <|gen|> per token of the preceding caption text */
            const upm_segment *text = &b->seg[i - 1];
            int n = text->lengths[row];
            for (int j = 0; j < n; j++)
                seg->ids[(size_t)row * (size_t)seg->L + (size_t)j] = UPM_BPE_GEN;
            seg->lengths[row] = n;
            continue;
        }
        size_t px = (size_t)seg->T * 3 * (size_t)seg->H * (size_t)seg->W;
        if (seg->modality == UPM_MOD_IMAGE)
            rc = fill_image(o, t, s, seg->field, seg->side, seg->pixels + (size_t)row * px, rng, err);
        else if (seg->modality == UPM_MOD_VIDEO)
            rc = fill_video(o, s, seg->field, seg->pixels + (size_t)row * px, rng, err);
        else
            rc = fill_text(t, o, s, seg, b, row, rng, err);
    }
    if (!rc && b->labels)
        rc = read_label(t, o, s, &b->labels[row], err);
    return rc;
}
