/* From raw WebDataset samples to batch rows, per task formulation: which segments a batch of a task
 * has (images [T=1], videos [T frames], text token ids), and how one sample fills one row (decode,
 * augment, tokenise, mask, label). Pure per row: a row depends only on its sample and its rng stream,
 * so rows can be filled on any thread in any order. */
#ifndef UPM_COLLATE_H
#define UPM_COLLATE_H

#include "augment_image.h"
#include "batch.h"
#include "bpe.h"
#include "rng.h"
#include "wds.h"

typedef struct upm_collate_opts {
    int train;            /* training augmentation (else evaluation transforms) */
    upm_augment augment;  /* which training augmentation (paper, light, none; INHERIT = paper) */
    int image_size;       /* pixels per side: 160 in stage 1, 224 in stage 2 */
    int frames;           /* T of video segments */
    double video_interval;/* frames at 30 fps between sampled frames (training) */
    int video_crops;      /* evaluation views of a video: 1 (centre) or 3 spatial crops (left/top, centre, */
    int video_clips;      /* right/bottom) x clips temporal clips (upm_video_eval_indices); 0 = 1 */
    int view;             /* the view a row gets: crop view % crops of clip view / crops */
    upm_bpe *bpe;         /* needed by tasks with text */
    int n_labels;         /* label tasks: classes in the label set (0 = don't check) */
    int strict_labels;    /* a class index outside the label set is an error (UPM_EINVAL: evaluation, whose
                             metrics would silently lose those samples), not a bad sample (UPM_EBADDATA) */
} upm_collate_opts;

/* The image transform of one side of task t (docs/training.md, "Augmentation"): evaluation's resize +
 * centre crop when not training or with augment none; paper: RandomResizedCrop 0.08-1 + flip for a label
 * task's input, resize + random crop + flip otherwise; light: RandomResizedCrop 0.5-1, no flip. */
void upm_collate_image_aug(const upm_collate_opts *o, const upm_task *t, upm_side side, upm_aug_image *a);
/* Several captions per sample (COCO and Flickr30K have five): a pair task's target text field may hold one
 * caption per line. Its non-empty lines (a trailing '\r' dropped) into lines[0..max); returns how many (a
 * field without a newline is one caption). Training takes one at random each time a sample is drawn,
 * evaluation's collation the first, and the evaluation pass scores all (docs/evaluation.md). */
typedef struct upm_text_span {
    const char *s;
    size_t n;
} upm_text_span;
int upm_caption_lines(const char *text, size_t len, upm_text_span *lines, int max);
/* The bytes of a sample's field: "txt" is the member with that extension, "json:key" the string (or number)
 * at key of its .json member (*owned: the text was allocated and must be freed). */
int upm_collate_field_text(const upm_wds_sample *s, const char *field, char **text, size_t *len, int *owned,
                           upm_err *err);
/* Evaluation views per sample for task t: video_crops x video_clips for a label task whose input is a
 * video (its scores are averaged over them, the paper's multi-view protocol), else 1. */
int upm_collate_views(const upm_task *t, const upm_collate_opts *o);
/* The batch shape of task t with B rows. */
int upm_collate_shape(const upm_task *t, const upm_collate_opts *o, int B, upm_batch_shape *sh, upm_err *err);
/* Fills row `row` of b from sample s. UPM_EBADDATA when the sample is unusable (missing field,
 * undecodable image or video, bad label, text that is not UTF-8): the caller takes another sample. */
int upm_collate_row(const upm_task *t, const upm_collate_opts *o, const upm_wds_sample *s, upm_batch *b, int row,
                    upm_rng *rng, upm_err *err);

#endif
