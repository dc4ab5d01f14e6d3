/* The caption metrics of the paper's tables over a corpus of generated captions, each with its reference
 * captions (docs/evaluation.md, "Captions"):
 *   BLEU-4 as nltk.translate.bleu_score.corpus_bleu (weights 1/4, no smoothing): clipped n-gram counts
 *     summed over the corpus, brevity penalty from the closest reference length (ties: the shorter);
 *   CIDEr-D as the COCO caption toolkit's CiderScorer: TF-IDF n-gram vectors (n = 1..4, document
 *     frequencies over the references of the corpus), hypothesis weights clipped by the reference's,
 *     Gaussian length penalty sigma 6, mean over n, mean over references, x10, mean over samples.
 * Both run on the same tokens (upm_caption_tokenize). */
#ifndef UPM_CAPTION_METRICS_H
#define UPM_CAPTION_METRICS_H

#include <stddef.h>

/* Splits text into words: ASCII letters lowercased; every ASCII byte that is not a letter or a digit
 * separates words (punctuation is dropped, as the COCO toolkit's tokenizer does); bytes >= 0x80 (UTF-8)
 * belong to words. Calls word(ctx, start, length) for each word in order; returns the word count, or a
 * negative value when word() did. */
int upm_caption_tokenize(const char *s, size_t n, int (*word)(void *ctx, const char *w, size_t len), void *ctx);

typedef struct upm_caption_corpus upm_caption_corpus;

upm_caption_corpus *upm_caption_corpus_new(void);
void upm_caption_corpus_free(upm_caption_corpus *c);
/* Adds one sample: its hypothesis and nrefs >= 1 references (texts, tokenized here). 0, or UPM_ENOMEM /
 * UPM_EINVAL (no reference). */
int upm_caption_corpus_add(upm_caption_corpus *c, const char *hyp, size_t hyp_len, const char *const *refs,
                           const size_t *ref_lens, int nrefs);
size_t upm_caption_corpus_size(const upm_caption_corpus *c);
/* Corpus BLEU-4 in [0, 1] (0 when some order has no match: nltk's unsmoothed value is below 1e-76). */
double upm_caption_bleu4(const upm_caption_corpus *c);
/* Corpus CIDEr-D (the mean of the samples'); per_sample (NULL or [size]) receives each sample's. Negative
 * when out of memory. */
double upm_caption_cider_d(const upm_caption_corpus *c, double *per_sample);

#endif
