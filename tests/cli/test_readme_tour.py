"""The README's 5-minute tour runs as written: every command between the tour markers succeeds
against the real binary, and its claims (attributes, derived shard count, round trip) hold."""
import json
import os
import re
import subprocess
import unittest

from catalog_cli import BIN, CatalogTestCase

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def tour_script(name="tour"):
    with open(README, encoding="utf-8") as f:
        text = f.read()
    tour = text.split(f"<!-- {name}:begin -->", 1)[1].split(f"<!-- {name}:end -->", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", tour, flags=re.S)
    return "\n".join(blocks)


class ReadmeTourTest(CatalogTestCase):
    def test_tour_runs_as_written(self):
        script = tour_script()
        self.assertIn("upmoe-catalog init --preset uniperceiver-moe", script)
        env = dict(self.env)
        env["PATH"] = os.path.dirname(os.path.abspath(BIN)) + os.pathsep + env.get("PATH", "")
        p = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=self.tmp, env=env,
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, f"tour failed:\n{p.stdout}\n{p.stderr}")
        self.assertEqual(p.stderr.strip().splitlines(), [f"exported the catalog to novel.json"])
        self.assertIn("[1, 0, 0, 1, 1, 0, 0, 1]", p.stdout)

        tour = os.path.join(self.tmp, "tour.db")
        cc3m = json.loads(self.run_cli("--catalog", tour, "show", "dataset", "cc3m-caption", "--json",
                                       catalog=False, check=0).stdout)
        self.assertEqual(cc3m["num_shards"], 576)
        self.assertEqual(cc3m["num_samples"], 2870000)
        small = json.loads(self.run_cli("--catalog", tour, "mixture", "show", "small", "--json",
                                        catalog=False, check=0).stdout)
        self.assertEqual([m["dataset"] for m in small["datasets"]], ["books-wiki", "cc3m-caption", "imagenet-21k"])

        # The hand-made MSVD and GLUE tasks behave like the preset's.
        novel = os.path.join(self.tmp, "novel.db")
        attrs = json.loads(self.run_cli("--catalog", novel, "attributes", "video-caption", "--json",
                                        catalog=False, check=0).stdout)
        by_kind = {(t["side"], t["tokens"]): t["attributes"] for t in attrs["tokens"]}
        self.assertEqual(by_kind[("input", "mp4 frame patches")], [1, 1, 0, 1, 1, 0, 0, 1])
        self.assertEqual(by_kind[("input", "txt tokens")], [1, 1, 0, 1, 0, 1, 1, 1])
        copy = os.path.join(self.tmp, "copy.db")
        a = self.run_cli("--catalog", novel, "export", catalog=False, check=0).stdout
        b = self.run_cli("--catalog", copy, "export", catalog=False, check=0).stdout
        self.assertEqual(a, b)


class ReadmeDataTest(CatalogTestCase):
    def test_files_to_batches_runs_as_written(self):
        script = tour_script("data")
        env = dict(self.env)
        for k in ("UPMOE_TESTDATA",):
            if k in os.environ:
                env[k] = os.environ[k]
        env["PATH"] = os.path.dirname(os.path.abspath(BIN)) + os.pathsep + env.get("PATH", "")
        root = os.path.join(os.path.dirname(README))
        p = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=root, env=env,
                           capture_output=True, text=True, timeout=300)
        self.assertEqual(p.returncode, 0, f"block failed:\n{p.stdout}\n{p.stderr}")
        self.assertIn("585 samples", p.stdout)
        steps = re.findall(r"^step (\d+) dataset art .* checksum ([0-9a-f]+)", p.stdout, flags=re.M)
        self.assertEqual([int(s) for s, _ in steps], list(range(40)))


if __name__ == "__main__":
    unittest.main()
