"""Held-out learning checks of issue 13 on the digits (tests/trainer/digits_fixture.py): image classification
image-text retrieval (R@1 both ways over galleries of 80) and image captioning by a small attribute-MoE model,
each against a bound from outside the code (3x chance; the best image-blind caption predictor)."""
import json
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import digits_fixture  # noqa: E402
from train_fixture import BUILD, CAT, TRAIN, add_book, run, sanitized  # noqa: E402


# MLM learns the context more slowly than the image tasks learn their images: measured on this set (held-out
# masked-token accuracy; the context-blind predictor gets 0.050): 600 x 16 at lr 2e-3 0.050, 800 x 32 at 3e-3
# 0.063 and at 6e-3 0.064, 1,200 x 32 at 3e-3 0.072, 1,500 x 32 at 3e-3 0.092. An independent implementation of
# the recipe (peer_mlm.py, the same sizes and settings) is no faster: 0.085 and 0.077 after 1,500 x 32 (seeds 0, 1;
# docs/training.md), so these steps are the recipe's need, not upmoe's.
MLM_STEPS = 1500
MLM_EXTRA = ["--batch", 32, "--lr", 3e-3, "--warmup", 50, "--vocab-targets", "sampled:1024"]


class HeldOutTest(unittest.TestCase):
    """Held-out checks on the digits (tests/trainer/digits_fixture.py): 1,500 training images, 400 held out,
    a small attribute-MoE model (D = 64, 2 layers) at 32 px with the default optimizer settings except the
    learning rate (2e-3, as the quickstart's), `--augment none`."""

    MODEL = ["--dim", 64, "--layers", 2, "--heads", 4, "--experts", 4, "--image-size", 32, "--batch", 16,
             "--augment", "none", "--lr", 2e-3, "--warmup", 20, "--checkpoint-every", 0, "--log-every", 100]

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="upmoe-heldout-")
        cls.env = digits_fixture.build(cls.tmp.name)
        digits_fixture.add_captions(cls.tmp.name, cls.env)
        digits_fixture.add_videos(cls.tmp.name, cls.env)
        cls.book = add_book(cls.tmp.name, cls.env)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def train_eval(self, name, steps, *extra, batches=5):
        out = os.path.join(self.tmp.name, name)
        run(TRAIN, "--mixture", name, "--out", out, *self.MODEL, "--steps", steps, "--vocab-targets", "sampled:256",
            *extra, env=self.env, timeout=1400)
        # the 400 held-out samples in 5 batches of 80: the whole vocabulary is encoded once per batch
        p = run(os.path.join(BUILD, "upmoe-eval"), "--mixture", name + "-heldout", "--checkpoint", out, "--steps",
                batches, "--image-size", 32, "--batch", 80, "--vocab-targets", "full", "--json", env=self.env,
                timeout=1400)
        return json.loads(p.stdout)["datasets"][0]

    def label_learns(self, name, steps):
        """A label dataset of the ten digits: held-out top-1 over all 400 held-out samples >= 3x chance."""
        res = self.train_eval(name, steps)
        print(f"{name}: held-out top-1 {res['accuracy']:.3f} (chance {res['chance']:.3f}), loss {res['loss']:.3f}",
              file=sys.stderr)
        self.assertEqual(res["samples"], 400)
        self.assertAlmostEqual(res["chance"], 0.1)
        self.assertGreaterEqual(res["accuracy"], 3 * res["chance"])
        # the paper's protocol (upmoe-eval's full pass): every held-out sample once, the same bound
        p = run(os.path.join(BUILD, "upmoe-eval"), "--dataset", name + "-heldout", "--checkpoint",
                os.path.join(self.tmp.name, name), "--image-size", 32, "--batch", 80, "--json", env=self.env)
        full = json.loads(p.stdout)["datasets"][0]
        print(f"{name}: full pass top-1 {full['metrics']['top1']:.3f}, top-5 {full['metrics']['top5']:.3f}",
              file=sys.stderr)
        self.assertEqual((full["samples"], full["skipped"]), (400, 0))
        self.assertAlmostEqual(full["chance"]["top1"], 0.1)
        self.assertGreaterEqual(full["metrics"]["top1"], 3 * full["chance"]["top1"])
        self.assertGreaterEqual(full["metrics"]["top5"], full["metrics"]["top1"])

    def test_image_classification(self):
        """Held-out top-1 at least 3x chance (the issue's bound; 400 images, chance 10 %)."""
        self.label_learns("digits", 600)

    def test_image_text_retrieval(self):
        """Held-out R@1 in both directions at least 3x chance (the issue's bound) with galleries of 80 images
        and their 80 captions. Captions name the digit, so about 8 texts of a gallery are each image's ground
        truth (every equal caption counts); chance is computed per gallery by upmoe-eval (about 0.1)."""
        res = self.train_eval("digit-retrieval", 600)
        print(f"digit retrieval: held-out R@1 image->text {res['accuracy']:.3f}, text->image "
              f"{res['accuracy_t2i']:.3f} (chance {res['chance']:.3f}), loss {res['loss']:.3f}", file=sys.stderr)
        self.assertEqual(res["samples"], 400)
        self.assertGreater(res["chance"], 0.05)
        self.assertGreaterEqual(res["accuracy"], 3 * res["chance"])
        self.assertGreaterEqual(res["accuracy_t2i"], 3 * res["chance"])
        self.zero_shot_classification("digit-retrieval")

    def zero_shot_classification(self, trained):
        """A task the model never trained on, registered purely as catalog rows: classify the held-out digits
        (their class-folder shards) against a new label set whose names are the retrieval captions. Learnable
        from retrieval training alone, so the full pass reaches top-1 >= 3x chance (the issue's bound)."""
        data = os.path.join(self.tmp.name, "data")
        with open(os.path.join(data, "digits.txt"), encoding="utf-8") as f:
            words = [w.strip() for w in f if w.strip()]
        names = os.path.join(self.tmp.name, "caption-classes.txt")
        with open(names, "w", encoding="utf-8") as f:
            f.writelines(digits_fixture.caption(w) + "\n" for w in words)  # the class order of digits.txt
        url = json.loads(run(CAT, "show", "dataset", "digits-heldout", "--json", env=self.env).stdout)["url"]
        c = lambda *a: run(CAT, *a, env=self.env)  # noqa: E731
        c("add", "labels", "caption-classes", names)
        c("add", "task", "zero-shot-digits", "--formulation", "label", "--input", "jpg=image", "--target", "cls",
          "--labels", "caption-classes")
        c("add", "dataset", "zero-shot-digits", "--task", "zero-shot-digits", "--split", "val", "--batch", 80,
          "--url", url)
        p = run(os.path.join(BUILD, "upmoe-eval"), "--dataset", "zero-shot-digits", "--checkpoint",
                os.path.join(self.tmp.name, trained), "--image-size", 32, "--json", env=self.env)
        res = json.loads(p.stdout)["datasets"][0]
        print(f"zero-shot digits after {trained}: top-1 {res['metrics']['top1']:.3f} (chance "
              f"{res['chance']['top1']:.3f})", file=sys.stderr)
        self.assertEqual(res["samples"], 400)
        self.assertGreaterEqual(res["metrics"]["top1"], 3 * res["chance"]["top1"])
        stored = json.loads(run(CAT, "results", "--dataset", "zero-shot-digits", "--json", env=self.env).stdout)
        self.assertIn("top1", {r["metric"] for r in stored})

    def test_video_classification(self):
        """Held-out top-1 of moving-digit videos (8-frame MPEG-4 clips of the digits drifting across a dark
        canvas, digits_fixture.add_videos) at least 3x chance (10 %), as for images."""
        self.label_learns("moving-digits", 1000)

    def test_mlm_uses_the_context(self):
        """Held-out masked-token accuracy (the last 10 % of Sherlock Holmes, whole vocabulary) beyond the best
        predictor that ignores the context: always the most frequent token of the training text, scored on
        the held-out text's tokens (whole-word masking picks words uniformly, so its targets follow the
        text's token frequencies), plus three standard errors of the scored tokens."""
        if sanitized():  # 48,000 paragraphs through the encoder and 1,024 sampled words a step: > 15 min there
            self.skipTest("the sanitizer build trains MLM many times slower; test_learning runs MLM under the "
                          "sanitizers, the normal build runs this held-out check (tests/trainer/test_heldout.py)")
        res = self.train_eval("book", MLM_STEPS, *MLM_EXTRA, batches=3)  # 240 of the 261 held-out paragraphs
        bpe = self.env["UPMOE_BPE_VOCAB"]
        counts = []
        for path in self.book:
            with open(path, encoding="utf-8") as f:
                ids = run(os.path.join(BUILD, "upmoe-tokenize"), "--vocab", bpe, "--no-specials", "-",
                          stdin=f).stdout.split()
            c = {}
            for v in ids:
                c[v] = c.get(v, 0) + 1
            counts.append(c)
        top = max(counts[0], key=counts[0].get)
        blind = counts[1].get(top, 0) / sum(counts[1].values())
        se = (blind * (1 - blind) / res["scored"]) ** 0.5
        print(f"book: held-out masked-token accuracy {res['accuracy']:.3f} over {res['scored']} tokens, "
              f"context-blind {blind:.3f} (+3 se = {blind + 3 * se:.3f}), loss {res['loss']:.3f}", file=sys.stderr)
        self.assertGreater(res["scored"], 1000)
        self.assertGreater(res["accuracy"], blind + 3 * se)
        # upmoe-eval's own input-blind baseline (the most frequent of the scored targets themselves) measures the
        # same thing on the masked tokens instead of the whole held-out text: within 3 standard errors of this one
        self.assertAlmostEqual(res["blind"], blind, delta=3 * se)

    def test_captioning_reads_the_image(self):
        """Held-out token accuracy (every caption position, over the whole vocabulary) beyond the best
        predictor that cannot see the image: the most frequent training token at each position. Captions
        differ only in the digit's word, so the gap is how often the model reads the digit; it must exceed
        three standard errors of the held-out accuracy (~2,400 tokens)."""
        res = self.train_eval("digit-captions", 600)
        bpe = self.env["UPMOE_BPE_VOCAB"]
        tok = lambda texts: [[int(v) for v in line.split()] for line in run(  # noqa: E731
            os.path.join(BUILD, "upmoe-tokenize"), "--vocab", bpe, "--no-specials", "-",
            input="\n".join(texts) + "\n").stdout.splitlines()]
        words = digits_fixture.WORDS
        train = tok([digits_fixture.caption(w) for w in words])  # every class equally often (150 each)
        best = {}
        for j in range(max(len(t) for t in train) + 1):  # + end-of-text
            counts = {}
            for t in train:
                v = (t + [49407])[j] if j <= len(t) else None
                counts[v] = counts.get(v, 0) + 1
            best[j] = max(counts, key=counts.get)
        held = [t + [49407] for t in train]  # the held-out set has 40 of each class: the same captions
        blind = sum(best[j] == v for t in held for j, v in enumerate(t)) / sum(len(t) for t in held)
        n = 400 * len(held[0])
        se = (blind * (1 - blind) / n) ** 0.5
        print(f"digit captions: held-out token accuracy {res['accuracy']:.3f}, image-blind {blind:.3f} (+3 se = "
              f"{blind + 3 * se:.3f}; upmoe-eval's {res['blind']:.3f}), loss {res['loss']:.3f}", file=sys.stderr)
        self.assertGreater(res["accuracy"], blind + 3 * se)
        # upmoe-eval's input-blind baseline (the best token per caption position, in hindsight on the batches it
        # drew) is the same predictor on the drawn samples: within 3 standard errors of this count
        self.assertAlmostEqual(res["blind"], blind, delta=3 * se)


if __name__ == "__main__":
    unittest.main()
