"""Augmentation is a choice (issue 13, point 7): `upmoe-train --augment paper|light|none` picks the training
transform, a dataset's catalog field `augment` overrides it, and what a step trained on is visible in its
step file (--dump-batches): with none it is exactly the evaluation transform (resize + centre crop)."""
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from safetensors_io import load  # noqa: E402
from train_fixture import CAT, TRAIN, build, run  # noqa: E402

MODEL = ["--dim", 32, "--layers", 1, "--heads", 2, "--experts", 2, "--image-size", 32, "--batch", 4, "--steps", 2,
         "--checkpoint-every", 0, "--quiet"]


class AugmentTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="upmoe-augment-")
        cls.env = build(cls.tmp.name)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def pixels(self, name, *args):
        """The input pixels of the two steps of a run on images-only."""
        out, dump = os.path.join(self.tmp.name, name), os.path.join(self.tmp.name, name + "-steps")
        run(TRAIN, "--mixture", "images-only", "--out", out, *MODEL, "--dump-batches", dump, *args, env=self.env)
        return [load(os.path.join(dump, f"step-{s:08d}.safetensors"))[0]["input.0.pixels"] for s in (0, 1)]

    def test_run_choice_and_dataset_override(self):
        none = self.pixels("none", "--augment", "none")
        paper = self.pixels("paper", "--augment", "paper")
        light = self.pixels("light", "--augment", "light")
        default = self.pixels("default")
        for s in (0, 1):  # the same samples (the data order does not depend on the transform)
            self.assertFalse(bool((none[s] == paper[s]).all()), "paper crops differ from the plain resize")
            self.assertFalse(bool((none[s] == light[s]).all()), "light crops differ from the plain resize")
            self.assertTrue(bool((default[s] == paper[s]).all()), "the default is paper")
        # evaluation's transform is none's: the first step's pixels equal what upmoe-eval feeds the model
        run(CAT, "set", "images", "augment=none", env=self.env)
        try:
            overridden = self.pixels("override", "--augment", "paper")
        finally:
            run(CAT, "set", "images", "augment=inherit", env=self.env)
        for s in (0, 1):
            self.assertTrue(bool((overridden[s] == none[s]).all()), "the dataset's augment=none wins over --augment")

    def test_bad_value(self):
        p = run(TRAIN, "--mixture", "images-only", "--out", os.path.join(self.tmp.name, "bad"), "--augment", "heavy",
                ok=False, env=self.env)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--augment must be paper, light or none", p.stderr)


if __name__ == "__main__":
    unittest.main()
