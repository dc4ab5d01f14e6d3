"""End to end on real data: a small attribute-MoE model trained on the CPU for a few hundred steps on a
three-task mixture (image classification with label texts, image captioning, masked language modelling
on a book) lowers every task's loss well below where it started, and classifies held-out images
(never trained on) far better than chance."""
import json
import os
import sqlite3
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import digits_fixture  # noqa: E402
from train_fixture import BUILD, TRAIN, build, run  # noqa: E402

STEPS = 1500  # about 40 s here; the classes (12 clip-art categories at 32 px) are the slow learners


class LearningTest(unittest.TestCase):
    def test_three_tasks_learn_and_the_label_task_generalises(self):
        with tempfile.TemporaryDirectory(prefix="upmoe-learn-") as tmp:
            env = build(tmp, heldout_every=5)
            out = os.path.join(tmp, "run")
            # --augment light: the paper's RandomResizedCrop (down to 8 % of the area) on 32-px clip art cuts the
            # object away (issue 13); measured on this test's held-out images (640 draws of 117 images):
            # paper 0.208, light 0.281 with the defaults of issue 13 (0.287 before it, with paper)
            model = ["--dim", 64, "--layers", 2, "--heads", 4, "--experts", 4, "--image-size", 32, "--batch", 16,
                     "--augment", "light"]
            run(TRAIN, "--mixture", "three", "--out", out, *model, "--steps", STEPS, "--lr", 3e-3, "--warmup", 20,
                "--vocab-targets", "sampled:256", "--log-every", 50, "--name", "learn", env=env, timeout=1500)
            con = sqlite3.connect(os.path.join(tmp, "catalog.db"))
            rows = con.execute("SELECT task, step, loss FROM metrics ORDER BY step").fetchall()
            con.close()
            by_task = {}
            for task, step, loss in rows:
                by_task.setdefault(task, []).append(loss)
            self.assertEqual(set(by_task), {"classification", "image-caption", "mlm"})
            for task, losses in sorted(by_task.items()):
                k = max(3, len(losses) // 10)
                first, last = sum(losses[:3]) / 3, sum(losses[-k:]) / k  # the start, and the last tenth
                print(f"{task}: loss {first:.3f} -> {last:.3f} over {len(losses)} steps", file=sys.stderr)
                # vocabulary losses start near ln(49411) = 10.8 and must lose a quarter; the label loss starts
                # near ln(12) = 2.48 (12 clip-art classes at 32 px learn slowly: 2.48 -> 2.22..2.24 measured) and
                # must fall by 0.15 or more; the held-out accuracy below is the stronger check
                if task == "classification":
                    self.assertLess(last, first - 0.15, f"{task}: loss {first:.3f} -> {last:.3f}")
                else:
                    self.assertLess(last, 0.75 * first, f"{task}: loss {first:.3f} -> {last:.3f}")
            p = run(os.path.join(BUILD, "upmoe-eval"), "--mixture", "heldout", "--checkpoint", out, "--steps", 8,
                    "--image-size", 32, "--batch", 16, "--json", env=env, timeout=600)
            import json
            res = json.loads(p.stdout)["datasets"]
            self.assertEqual([d["dataset"] for d in res], ["images-heldout"])
            chance = 1 / 12
            print(f"held-out accuracy {res[0]['accuracy']:.3f} (chance {chance:.3f})", file=sys.stderr)
            # 128 held-out draws: chance +- 0.024 (one standard error); demand twice chance (> 3.5 sigma)
            self.assertGreater(res[0]["accuracy"], 2 * chance, f"held-out accuracy {res[0]['accuracy']:.3f}")


if __name__ == "__main__":
    unittest.main()


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

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def train_eval(self, name, steps, *extra):
        out = os.path.join(self.tmp.name, name)
        run(TRAIN, "--mixture", name, "--out", out, *self.MODEL, "--steps", steps, "--vocab-targets", "sampled:256",
            *extra, env=self.env, timeout=1400)
        p = run(os.path.join(BUILD, "upmoe-eval"), "--mixture", name + "-heldout", "--checkpoint", out, "--steps", 25,
                "--image-size", 32, "--batch", 16, "--vocab-targets", "full", "--json", env=self.env, timeout=1400)
        return json.loads(p.stdout)["datasets"][0]

    def test_image_classification(self):
        """Held-out top-1 at least 3x chance (the issue's bound; 400 images, chance 10 %)."""
        res = self.train_eval("digits", 600)
        print(f"digits: held-out top-1 {res['accuracy']:.3f} (chance {res['chance']:.3f}), loss {res['loss']:.3f}",
              file=sys.stderr)
        self.assertAlmostEqual(res["chance"], 0.1)
        self.assertGreaterEqual(res["accuracy"], 3 * res["chance"])

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
              f"{blind + 3 * se:.3f}), loss {res['loss']:.3f}", file=sys.stderr)
        self.assertGreater(res["accuracy"], blind + 3 * se)
