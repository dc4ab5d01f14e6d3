"""End to end on real data: a small attribute-MoE model trained on the CPU for a few hundred steps on a
three-task mixture (image classification with label texts, image captioning, masked language modelling
on a book) lowers every task's loss well below where it started, and classifies held-out images
(never trained on) far better than chance."""
import os
import sqlite3
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
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
