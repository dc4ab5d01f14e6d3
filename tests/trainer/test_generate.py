"""Caption generation in upmoe-eval (trainer/generate.c, model/decode.c): after a short captioning run on the
fixture's real images (every caption reads "a picture of a <word>"), every sample gets a generated caption;
the stored BLEU-4 equals nltk's corpus_bleu and the stored CIDEr-D the independent reference implementation
(tests/tools/cider_reference.py, checked on nlg-eval's published example) on the --predictions file; the
key/value cache gives the same captions and scores as re-encoding every step; the model has learned the
captions' shared template; several references per sample (one per line) all count; two runs print the same
bytes; bad generation options exit 2."""
import json
import os
import re
import sys
import tarfile
import tempfile
import unittest
import warnings
import io

from nltk.translate.bleu_score import corpus_bleu

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
from cider_reference import cider_d  # noqa: E402
from train_fixture import BUILD, CAT, TRAIN, build, run, testdata  # noqa: E402

EVAL = os.path.join(BUILD, "upmoe-eval")
SMALL = ["--dim", 32, "--layers", 2, "--heads", 2, "--experts", 4, "--batch", 16, "--image-size", 32,
         "--vocab-targets", "sampled:64", "--lr", 2e-3, "--threads", 2]


def words(text):
    """docs/evaluation.md's tokenisation: ASCII letters lowercased, other ASCII bytes separate words."""
    return [w.lower() for w in re.findall(rb"[A-Za-z0-9\x80-\xff]+", text.encode("utf-8"))]


class GenerateTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmpdir = tempfile.TemporaryDirectory(prefix="upmoe-generate-")
        cls.tmp = cls.tmpdir.name
        cls.env = build(cls.tmp)
        run(CAT, "mixture", "create", "captions-only", env=cls.env)
        run(CAT, "mixture", "add", "captions-only", "captions", env=cls.env)
        cls.run_dir = os.path.join(cls.tmp, "run")
        run(TRAIN, "--mixture", "captions-only", "--out", cls.run_dir, *SMALL, "--steps", 150, "--quiet", env=cls.env)

    @classmethod
    def tearDownClass(cls):
        cls.tmpdir.cleanup()

    def evaluate(self, dataset, *args, ok=True):
        pred = os.path.join(self.tmp, "pred.jsonl")
        p = run(EVAL, "--checkpoint", self.run_dir, "--image-size", 32, "--dataset", dataset, "--batch", 16,
                "--no-store", "--json", "--predictions", pred, *args, env=self.env, ok=ok)
        if not ok:
            return p
        with open(pred, encoding="utf-8") as f:
            lines = [json.loads(line) for line in f]
        return p.stdout, json.loads(p.stdout)["datasets"][0], lines

    def check_against_oracles(self, res, lines):
        self.assertEqual(len(lines), res["samples"])
        self.assertEqual([x["index"] for x in lines], list(range(len(lines))))
        hyps = [words(x["caption"]) for x in lines]
        refs = [[words(r) for r in x["references"]] for x in lines]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bleu = corpus_bleu(refs, hyps)
        cider, _ = cider_d(hyps, refs)
        self.assertAlmostEqual(res["metrics"]["bleu4"], bleu, delta=1e-6)
        self.assertAlmostEqual(res["metrics"]["cider_d"], cider, delta=1e-6)
        return bleu, cider

    def test_metrics_equal_the_oracles_and_the_template_is_learned(self):
        out, res, lines = self.evaluate("captions", "--limit", 96)
        self.assertEqual((res["formulation"], res["samples"]), ("vocab-caption", 96))
        bleu, cider = self.check_against_oracles(res, lines)
        template = sum(x["caption"].startswith("a picture of a ") for x in lines) / len(lines)
        print(f"\n96 captions, beam 2: BLEU-4 {bleu:.4f}, CIDEr-D {cider:.4f}, template in {template:.0%}; "
              f"e.g. {lines[0]['caption']!r} for {lines[0]['references']}")
        # every reference starts with these four words: a model that learned the captions says them
        self.assertGreaterEqual(template, 0.9)
        self.assertGreater(bleu, 0)  # the oracle comparison is not 0 == 0
        self.assertTrue(all(x["caption"] == x["caption"].strip() for x in lines))
        again, _, _ = self.evaluate("captions", "--limit", 96)
        self.assertEqual(out, again)

    def test_cache_equals_reencoding(self):
        for beams in ("1", "3"):
            cached = self.evaluate("captions", "--limit", 48, "--beams", beams)
            full = self.evaluate("captions", "--limit", 48, "--beams", beams, "--no-cache")
            self.assertEqual([x["caption"] for x in cached[2]], [x["caption"] for x in full[2]], beams)
            self.assertEqual(cached[1]["metrics"], full[1]["metrics"])

    def test_length_penalty_and_max_len(self):
        _, res, lines = self.evaluate("captions", "--limit", 32, "--length-penalty", 2.0, "--beams", 2)
        self.check_against_oracles(res, lines)
        _, short, lines = self.evaluate("captions", "--limit", 32, "--max-len", 3)
        self.assertTrue(all(len(words(x["caption"])) <= 3 for x in lines), lines[:3])
        self.check_against_oracles(short, lines)

    def test_several_references_per_sample(self):
        art = os.path.join(testdata(), "images", "art4apps")
        pics = sorted((c, f) for c in os.listdir(art) for f in os.listdir(os.path.join(art, c)))[::15][:32]
        path = os.path.join(self.tmp, "multi-ref-000000.tar")
        with tarfile.open(path, "w") as t:
            for i, (c, f) in enumerate(pics):
                word = os.path.splitext(f)[0].replace("_", " ")
                forms = [f"a picture of a {word}", f"a {c} picture", f"the {word} again"]
                caps = [forms[(i + k) % 3] for k in range(1 + i % 3)]  # the template in 2/3 of the samples
                with open(os.path.join(art, c, f), "rb") as fp:
                    jpg = fp.read()
                for ext, data in (("jpg", jpg), ("txt", ("\n".join(caps) + "\n").encode())):
                    info = tarfile.TarInfo(f"p{i:04d}.{ext}")
                    info.size = len(data)
                    t.addfile(info, io.BytesIO(data))
        run(CAT, "add", "dataset", "multi-ref", "--task", "image-caption", "--split", "test", "--batch", 16,
            "--url", path, env=self.env)
        _, res, lines = self.evaluate("multi-ref")
        self.assertEqual([len(x["references"]) for x in lines], [1 + i % 3 for i in range(32)])
        bleu, cider = self.check_against_oracles(res, lines)
        self.assertGreater(cider, 0)  # references that differ: n-grams with weight, not 0 == 0

    def test_bad_options(self):
        for args in (["--beams", 0], ["--beams", "x"], ["--max-len", 0], ["--length-penalty", -1],
                     ["--length-penalty", "nan"]):
            p = self.evaluate("captions", *args, ok=False)
            self.assertEqual(p.returncode, 2, args)
            self.assertEqual(p.stdout, "")
            self.assertIn("error", p.stderr)


if __name__ == "__main__":
    unittest.main()
