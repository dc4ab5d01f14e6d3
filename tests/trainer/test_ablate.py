"""tools/ablate-routings (issue 18, point 8): one command trains the same small mixture with several routings
through the job queue and prints a Table-3-like comparison read back from the catalog: the dense run's cost
ratio is 1, every routing has each task's loss, the evaluation set's metrics and (token routing) its balance
loss and dropped share; --collect reads the same jobs again without training; bad arguments are refused."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from train_fixture import BUILD, build  # noqa: E402

TOOL = os.path.join(HERE, "..", "..", "tools", "ablate-routings")
SMALL = ["--dim", 32, "--layers", 2, "--heads", 2, "--experts", 4, "--batch", 8, "--image-size", 32,
         "--vocab-targets", "sampled:64", "--threads", 1, "--loader-threads", 1]


class AblateTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmpdir = tempfile.TemporaryDirectory(prefix="upmoe-ablate-")
        cls.tmp = cls.tmpdir.name
        cls.env = dict(build(cls.tmp), UPMOE_BUILD_DIR=BUILD)

    @classmethod
    def tearDownClass(cls):
        cls.tmpdir.cleanup()

    def tool(self, *argv, ok=True):
        p = subprocess.run([TOOL] + [str(a) for a in argv], capture_output=True, text=True, env=self.env, timeout=900)
        if ok:
            self.assertEqual(p.returncode, 0, p.stderr)
        return p

    def test_three_routings_compared(self):
        args = ["--mixture", "three", "--routings", "attribute,token", "--steps", 6, "--name", "abl", "--out",
                os.path.join(self.tmp, "abl"), "--eval-dataset", "images", "--eval-limit", 16]
        p = self.tool(*args, "--json", "--", *SMALL)
        doc = json.loads(p.stdout)
        rows = doc["routings"]
        self.assertEqual(sorted(rows), ["attribute", "none", "token"])  # dense always runs: the cost reference
        self.assertEqual(rows["none"]["cost_vs_dense"], 1.0)
        for name, r in rows.items():
            self.assertEqual(r["steps"], 6, name)
            self.assertEqual(sorted(r["loss"]), ["classification", "image-caption", "mlm"], name)
            self.assertTrue(all(v > 0 for v in r["loss"].values()), name)
            self.assertIn("images", r["eval"], name)  # the evaluation pass of the last step
            self.assertGreater(r["cost_vs_dense"], 0, name)
        # the balance loss E * sum_e f_e P_e lies in (0, E] by its definition (E = 4); dropped is a share
        self.assertTrue(0 < rows["token"]["balance_loss"] <= 4 and 0 <= rows["token"]["dropped"] < 1)
        self.assertIsNone(rows["attribute"]["dropped"])
        # the text table, from the same jobs without training them again
        p = self.tool("--mixture", "three", "--routings", "attribute,token", "--name", "abl", "--collect")
        lines = p.stdout.splitlines()
        self.assertTrue(lines[0].startswith("routing") and "loss mlm" in lines[0] and "dropped" in lines[0])
        self.assertEqual([l.split()[0] for l in lines[1:4]], ["none", "attribute", "token"])
        self.assertIn("1.00x", lines[1])

    def test_errors(self):
        p = self.tool("--mixture", "three", "--routings", "attribute,switch", ok=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("unknown routing switch", p.stderr)
        p = self.tool("--mixture", "three", "--name", "never", "--collect", ok=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("no job named never-none", p.stderr)
        p = self.tool("--routings", "token", ok=False)
        self.assertEqual(p.returncode, 2)


if __name__ == "__main__":
    unittest.main()
