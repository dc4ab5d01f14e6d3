"""tools/quickstart, the README's main command, end to end on a fresh catalog (with this build's programs,
without tools/setup): the paper's preset, demo shards from the real test data, a pretraining job queued
with upmoe-jobs and run by a local worker while its log is followed live, the status summary, a loss plot
drawn by gnuplot, and the evaluation of the checkpoint."""
import json
import os
import re
import sqlite3
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.environ.get("UPMOE_SOURCE_DIR", os.path.join(HERE, "..", ".."))
BUILD = os.environ.get("UPMOE_BUILD_DIR", os.path.join(SOURCE, "build"))


def sanitized():
    with open(os.path.join(BUILD, "upmoe-train"), "rb") as f:
        return b"__asan_init" in f.read()


class QuickstartTest(unittest.TestCase):
    def test_quickstart_runs_a_real_pretraining_job(self):
        if sanitized():  # every program it runs has its own suite under the sanitizers
            self.skipTest("the sanitizer build trains several times slower (many minutes for this job); the normal build runs "
                          "tools/quickstart end to end")
        with tempfile.TemporaryDirectory(prefix="upmoe-quickstart-") as tmp:
            db = os.path.join(tmp, "catalog.db")
            env = dict(os.environ, UPMOE_BUILD_DIR=BUILD)
            env.pop("UPMOE_CATALOG", None)
            p = subprocess.run([os.path.join(SOURCE, "tools", "quickstart"), "--catalog", db], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=1400)
            out = p.stdout
            self.assertEqual(p.returncode, 0, out[-5000:])
            # live progress (the followed log) comes before the summary
            live = out.index("step 20/400 ")
            summary = out.index("== upmoe-jobs status")
            self.assertLess(live, summary)
            self.assertIn("checkpoint step 400:", out[:summary])
            tail = out[summary:]
            self.assertIn("succeeded, attempt 1 of 3", tail)
            self.assertIn("step 400 / 400", tail)
            for task in ("quickstart-classification", "image-caption", "image-text-retrieval", "mlm"):
                self.assertIn(f"loss {task}", tail)
            con = sqlite3.connect(db)
            try:
                (jid, state, out_dir), = con.execute("SELECT id, state, out_dir FROM jobs").fetchall()
                steps = con.execute("SELECT count(DISTINCT m.step) FROM metrics m JOIN jobs j ON j.run_id = m.run_id "
                                    "WHERE j.id = ?", (jid,)).fetchone()[0]
            finally:
                con.close()
            self.assertEqual((state, steps), ("succeeded", 400))
            with open(os.path.join(out_dir, "loss.png"), "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
            self.assertIn("loss.png", tail)
            # the evaluation of the checkpoint: one line per dataset of the mixture
            # every evaluation line shows chance, a uniform guess among the candidates: 12 classes, the batch
            # of 16 for retrieval, the ~1,000 scored tokens (targets + 1,024 sampled) of captions and MLM
            want = {"quickstart-images": 1 / 12, "quickstart-retrieval": 1 / 16}
            for ds in ("quickstart-images", "quickstart-captions", "quickstart-retrieval", "quickstart-book"):
                m = re.search(ds + r" +\S+ +\d+ samples +loss [\d.]+ +accuracy ([\d.]+) \(chance ([\d.e-]+), ", tail)
                self.assertIsNotNone(m, f"no evaluation line for {ds}:\n{tail}")
                chance = float(m.group(2))
                if ds in want:
                    self.assertAlmostEqual(chance, want[ds], places=4)
                else:
                    self.assertTrue(1 / 1300 < chance <= 1 / 1024, f"{ds}: chance {chance}")
            status = json.loads(subprocess.run([os.path.join(BUILD, "upmoe-jobs"), "--catalog", db, "status", str(jid),
                                                "--json"], env=env, text=True, stdout=subprocess.PIPE,
                                               check=True).stdout)
            self.assertEqual(status["step"], 400)


if __name__ == "__main__":
    unittest.main()
