"""upmoe-export --merge-experts: a trained attribute-MoE checkpoint merged for one task's attribute
patterns evaluates exactly like the MoE checkpoint on that task (paper §3.3's 1.0x deployment), is
smaller, holds no gates, and refuses inputs of other tasks with a clear error."""
import json
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from train_fixture import BUILD, TRAIN, build, run  # noqa: E402
from safetensors_io import load  # noqa: E402

EXPORT, EVAL = os.path.join(BUILD, "upmoe-export"), os.path.join(BUILD, "upmoe-eval")
SMALL = ["--dim", 32, "--layers", 2, "--heads", 2, "--experts", 4, "--image-size", 32, "--batch", 8]


class ExportTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmpdir = tempfile.TemporaryDirectory(prefix="upmoe-export-")
        cls.tmp = cls.tmpdir.name
        cls.env = build(cls.tmp)
        cls.moe = os.path.join(cls.tmp, "moe")
        run(TRAIN, "--mixture", "three", "--out", cls.moe, *SMALL, "--steps", 10, "--lr", 3e-3,
            "--vocab-targets", "sampled:64", env=cls.env)

    @classmethod
    def tearDownClass(cls):
        cls.tmpdir.cleanup()

    def evaluate(self, ckpt, mixture="images-only", ok=True):
        p = run(EVAL, "--mixture", mixture, "--checkpoint", ckpt, "--steps", 4, "--image-size", 32, "--batch", 8,
                "--vocab-targets", "sampled:64", "--json", env=self.env, ok=ok)
        return json.loads(p.stdout)["datasets"] if ok else p

    def test_merged_checkpoint_equals_the_moe_model_on_its_task(self):
        out = os.path.join(self.tmp, "merged-classification")
        p = run(EXPORT, "--merge-experts", "--task", "classification", "--checkpoint", self.moe, "--out", out,
                env=self.env)
        self.assertRegex(p.stdout, r"2 attribute patterns \(41, 153\)")
        self.assertEqual(self.evaluate(out), self.evaluate(self.moe))  # same loss and accuracy, every digit
        tensors, meta = load(os.path.join(out, "model.safetensors"))
        self.assertEqual((meta["format"], meta["task"]), ("upmoe-merged-1", "classification"))
        self.assertEqual(list(tensors["blocks.0.mlp.fc1.weight"].shape), [2, 128, 32])  # one weight per pattern
        self.assertFalse([k for k in tensors if ".gate" in k])
        moe, _ = load(os.path.join(self.moe, "checkpoints", "step-00000010", "model.safetensors"))
        self.assertLess(sum(t.numel() for t in tensors.values()), sum(t.numel() for t in moe.values()))
        p = self.evaluate(out, mixture="three", ok=False)  # captions and MLM tokens were not exported
        self.assertEqual(p.returncode, 1)
        self.assertIn("merged model serves 2 attribute patterns", p.stderr)

    def test_every_task_of_the_mixture(self):
        for task in ("image-caption", "mlm"):
            out = os.path.join(self.tmp, "merged-" + task)
            run(EXPORT, "--merge-experts", "--task", task, "--checkpoint", self.moe, "--out", out, env=self.env)
            mix = {"image-caption": "captions-only", "mlm": "book-only"}[task]
            run(os.path.join(BUILD, "upmoe-catalog"), "mixture", "create", mix, env=self.env, ok=False)
            run(os.path.join(BUILD, "upmoe-catalog"), "mixture", "add", mix,
                "captions" if task == "image-caption" else "book", env=self.env, ok=False)
            self.assertEqual(self.evaluate(out, mix), self.evaluate(self.moe, mix))

    def test_errors(self):
        out = os.path.join(self.tmp, "x")
        p = run(EXPORT, "--task", "classification", "--checkpoint", self.moe, "--out", out, ok=False, env=self.env)
        self.assertEqual(p.returncode, 2)
        p = run(EXPORT, "--merge-experts", "--task", "nope", "--checkpoint", self.moe, "--out", out, ok=False,
                env=self.env)
        self.assertEqual(p.returncode, 1)
        self.assertIn("nope", p.stderr)
        dense = os.path.join(self.tmp, "dense")
        run(TRAIN, "--mixture", "images-only", "--out", dense, *SMALL, "--moe", "none", "--steps", 2, env=self.env)
        p = run(EXPORT, "--merge-experts", "--task", "classification", "--checkpoint", dense, "--out", out, ok=False,
                env=self.env)
        self.assertEqual(p.returncode, 1)
        self.assertIn("no attribute-routed experts", p.stderr)


if __name__ == "__main__":
    unittest.main()
