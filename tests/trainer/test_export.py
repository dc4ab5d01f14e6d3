"""upmoe-export --merge-experts: a trained attribute-MoE checkpoint merged for one task's attribute
patterns evaluates exactly like the MoE checkpoint on that task (paper §3.3's 1.0x deployment), is
smaller, holds no gates, and refuses inputs of other tasks with a clear error; so do checkpoints with the
other data-independent routings (modality, task, task-specific weights; issue 18)."""
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
        self.assertIn("cannot merge experts: that needs a model with data-independent routing (attribute, modality, "
                      "task or task-specific), and this one is none", p.stderr)

    def test_every_data_independent_routing_merges(self):
        """Modality, task and task-specific checkpoints merge for a task into a model that evaluates exactly
        like them on it; a task the task-routed model never trained on has nothing to merge."""
        for moe in ("modality", "task", "task-specific"):
            ckpt, out = os.path.join(self.tmp, "r-" + moe), os.path.join(self.tmp, "r-merged-" + moe)
            run(TRAIN, "--mixture", "three", "--out", ckpt, *SMALL, "--moe", moe, "--steps", 6, "--lr", 3e-3,
                "--vocab-targets", "sampled:64", env=self.env)
            p = run(EXPORT, "--merge-experts", "--task", "classification", "--checkpoint", ckpt, "--out", out,
                    env=self.env)
            self.assertRegex(p.stdout, r"2 attribute patterns \(41, 153\)")
            self.assertEqual(self.evaluate(out), self.evaluate(ckpt), moe)
            tensors, _ = load(os.path.join(out, "model.safetensors"))
            self.assertFalse([k for k in tensors if ".gate" in k])
            self.assertEqual(list(tensors["blocks.0.mlp.fc1.weight"].shape), [2, 128, 32])
            if moe == "task":
                p = run(EXPORT, "--merge-experts", "--task", "image-text-retrieval", "--checkpoint", ckpt, "--out",
                        out + "-x", ok=False, env=self.env)
                self.assertEqual(p.returncode, 1)
                self.assertIn("task 'image-text-retrieval' was not met in training by this task model (its tasks: "
                              "mlm, image-caption, classification)", p.stderr)  # the datasets book, captions, images
                # evaluating it on that task: refused, with what would work instead
                run(os.path.join(BUILD, "upmoe-catalog"), "mixture", "create", "retrieval-only", env=self.env)
                run(os.path.join(BUILD, "upmoe-catalog"), "mixture", "add", "retrieval-only", "retrieval", env=self.env)
                p = self.evaluate(ckpt, "retrieval-only", ok=False)
                self.assertEqual(p.returncode, 1)
                self.assertIn("task image-text-retrieval was not met in training by this task model (its tasks: mlm, "
                              "image-caption, classification): it has no trained routing", p.stderr)


if __name__ == "__main__":
    unittest.main()
