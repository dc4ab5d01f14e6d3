/* Retrieval metrics of the pair formulation over a gallery: R@1 image-to-text and text-to-image from a
 * score matrix. A sample may share its caption with others (class captions such as "a handwritten digit
 * seven"): every text equal to an image's own caption, token for token, is a ground truth of that image,
 * and the best-ranked ground truth counts, so duplicate captions are not scored as misses. */
#ifndef UPM_TASKS_RETRIEVAL_H
#define UPM_TASKS_RETRIEVAL_H

#include <stdint.h>

typedef struct upm_retrieval_r1 {
    int hits_i2t, hits_t2i; /* queries whose top-ranked candidate is a ground truth */
    int n;                  /* queries each way (= the gallery size) */
    double chance;          /* expected R@1 of a uniform guess: mean over queries of (ground truths / n) */
} upm_retrieval_r1;

/* scores: host [n][n], row i = image i against every text, column j = text j against every image;
 * texts: host [n][L] token ids, lengths [n]. Ties go to the lower index. */
upm_retrieval_r1 upm_retrieval_r1_score(const float *scores, int n, const int32_t *texts, int L, const int32_t *lengths);

/* Recall at K = 1, 5, 10 both ways over a whole gallery (the paper's retrieval protocol), with the same
 * ground truth (caption identity) and tie rule (lower index first): a query scores a hit at K when its
 * best-ranked ground truth is among its first K candidates. Captions are grouped by identity once
 * (sorting), so a gallery of n costs O(n^2) score reads, not O(n^2 L). */
#define UPM_RECALL_KS 3
extern const int upm_recall_k[UPM_RECALL_KS]; /* 1, 5, 10 */
typedef struct upm_retrieval_recall {
    int n;
    int64_t i2t[UPM_RECALL_KS], t2i[UPM_RECALL_KS]; /* hits at each K */
    double chance[UPM_RECALL_KS]; /* expected recall of a uniform ranking at each K (mean over queries) */
} upm_retrieval_recall;

/* As upm_retrieval_r1_score: scores host [n][n] (image rows, text columns), texts [n][L], lengths [n].
 * Returns 0, or -1 when out of memory. */
int upm_retrieval_recall_score(const float *scores, int n, const int32_t *texts, int L, const int32_t *lengths,
                               upm_retrieval_recall *out);

/* The general gallery: n_img images, n_txt captions, caption j belonging to image owner[j] (a sample may
 * carry several: COCO and Flickr30K have five). Image i's ground truths are the captions equal to any of
 * its own; caption j's are the images owning a caption equal to it. scores host [n_img][n_txt]. Image-to-
 * text recall is over the n_img images (out->n), text-to-image over the n_txt captions (out->n_txt);
 * chance_t2i is the text queries' chance. Returns 0, or -1 when out of memory. */
typedef struct upm_retrieval_recall_multi {
    int n, n_txt;
    int64_t i2t[UPM_RECALL_KS], t2i[UPM_RECALL_KS];
    double chance[UPM_RECALL_KS], chance_t2i[UPM_RECALL_KS];
} upm_retrieval_recall_multi;
int upm_retrieval_recall_multi_score(const float *scores, int n_img, int n_txt, const int32_t *texts, int L,
                                     const int32_t *lengths, const int32_t *owner, upm_retrieval_recall_multi *out);

#endif
