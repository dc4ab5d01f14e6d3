"""CIDEr-D written from its definition (Vedantam et al. 2015, with the COCO caption toolkit's choices), the
oracle the tests hold the C implementation (tasks/caption_metrics.c) to. Checked itself against a published
value: nlg-eval's README example (two hypotheses, two references each) scores CIDEr 1.242192
(Maluuba/nlg-eval, nlgeval/tests/test_nlgeval.py).

For n = 1..4, a sentence is the vector g_n of its n-grams' TF-IDF weights: term count x (log(#samples) -
log(max(1, df))), df = the number of samples whose references contain the n-gram. Per reference:
sum over the hypothesis's n-grams of min(g_hyp, g_ref) * g_ref (the "-D" clipping), divided by both norms
(when neither is 0), times exp(-(l_hyp - l_ref)^2 / (2 * 6^2)). A sample's score is the mean over n of
the sum over its references, divided by the reference count, x10; the corpus's is the samples' mean.
The toolkit's length l is the sentence's bigram count (words - 1 for a non-empty sentence)."""
import math
from collections import Counter


def ngrams(words, n_max=4):
    c = Counter()
    for n in range(1, n_max + 1):
        for i in range(len(words) - n + 1):
            c[tuple(words[i:i + n])] += 1
    return c


def cider_d(hypotheses, references, sigma=6.0):
    """hypotheses: list of word lists; references: list (per sample) of lists of word lists.
    Returns (corpus score, per-sample scores)."""
    refs = [[ngrams(r) for r in rs] for rs in references]
    hyps = [ngrams(h) for h in hypotheses]
    df = Counter()
    for rs in refs:
        df.update(set(g for r in rs for g in r))
    log_n = math.log(len(hyps))

    def vector(counts):
        vec = [{} for _ in range(4)]
        for g, tf in counts.items():
            vec[len(g) - 1][g] = tf * (log_n - math.log(max(1.0, df[g])))
        norms = [math.sqrt(sum(w * w for w in v.values())) for v in vec]
        length = sum(tf for g, tf in counts.items() if len(g) == 2)
        return vec, norms, length

    scores = []
    for h, rs in zip(hyps, refs):
        vh, nh, lh = vector(h)
        total = [0.0] * 4
        for r in rs:
            vr, nr, lr = vector(r)
            penalty = math.exp(-((lh - lr) ** 2) / (2 * sigma ** 2))
            for n in range(4):
                val = sum(min(w, vr[n].get(g, 0.0)) * vr[n].get(g, 0.0) for g, w in vh[n].items())
                if nh[n] != 0 and nr[n] != 0:
                    val /= nh[n] * nr[n]
                total[n] += val * penalty
        scores.append(sum(total) / 4 / len(rs) * 10.0)
    return sum(scores) / len(scores), scores
