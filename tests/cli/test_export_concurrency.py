"""export / import round trips, and several processes using one catalog at the same time."""
import json
import os
import subprocess
import sys
import threading
import time
import unittest

from catalog_cli import BIN, CatalogTestCase

WRITERS = 4
PER_WRITER = 25

# One writer process: waits for the start file, then runs `add dataset` PER_WRITER times (one process
# per command) and prints a JSON list of [name, exit code, stderr].
WRITER = r"""
import json, os, subprocess, sys, time
bin_, db, prefix, n, go = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
while not os.path.exists(go):
    time.sleep(0.001)
out = []
for i in range(n):
    name = f"{prefix}-{i:02d}"
    p = subprocess.run([bin_, "--catalog", db, "add", "dataset", name, "--task", "mlm", "--batch", str(i + 1),
                        "--weight", "0.5", "--url", f"/data/{name}/{{000..009}}.tar"],
                       capture_output=True, text=True, timeout=120)
    out.append([name, p.returncode, p.stderr])
print(json.dumps(out))
"""

# Waits for the start file, then becomes the given command (so many processes start at the same moment).
AT_GO = r"""
import os, sys
while not os.path.exists(sys.argv[1]):
    pass
os.execv(sys.argv[2], sys.argv[2:])
"""


class ExportImportTest(CatalogTestCase):
    def setUp(self):
        super().setUp()
        self.init()

    def add_extras(self):
        """Records beyond the preset: a keyed synonyms label set (UTF-8 too), a task with a prompt, datasets
        with every option, a mixture with explicit and inherited weights."""
        self.ok("add", "labels", "wordnet", self.write("wn.txt", "n02012849\tcrane, grus\nn03126707\tcrane, derrick\n"
                                                        "n07920872\tcafé, coffee shop\n"), "--keys", "--synonyms",
                "--notes", "WordNet ids with synonyms")
        self.ok("add", "labels", "plain-utf8", self.write("p.txt", "naïve\n日本語\n"))
        self.ok("add", "task", "qa", "--formulation", "label", "--input", "json:question=text",
                "--input", "jpg=image", "--target", "json:answer", "--labels", "wordnet", "--causal",
                "--prompt", "<|startoftext|> {json:question} <|spe|> <|endoftext|>", "--max-text-len", "100",
                "--max-target-len", "10", "--loss-weight", "0.3", "--notes", "a hand-made task")
        self.ok("add", "dataset", "qa-train", "--task", "qa", "--batch", "12", "--url",
                "https://example.org/qa/{000..019}.tar", "--split", "train", "--samples", "2000", "--weight",
                "0.04", "--loss-weight", "0.7", "--labels", "plain-utf8", "--license", "CC BY-SA 4.0",
                "--notes", "notes with ünïcode")
        self.ok("add", "dataset", "qa-val", "--task", "qa", "--batch", "3", "--split", "val",
                "--url", "/data/qa/val-{a,b}.tar")
        self.ok("set", "imagenet-21k", "url=/data/in21k/{000000..001023}.tar", "samples=13000000")
        self.ok("mixture", "create", "custom", "--notes", "explicit weights")
        self.ok("mixture", "add", "custom", "qa-train", "--weight", "0.125", "--loss-weight", "2")
        self.ok("mixture", "add", "custom", "qa-val", "imagenet-21k")
        self.ok("mixture", "add", "custom", "books-wiki", "--weight", "0")

    def fresh(self, name):
        path = os.path.join(self.tmp, name)
        self.run_cli("--catalog", path, "init", catalog=False, check=0)
        return path

    def test_round_trip_is_byte_identical(self):
        self.add_extras()
        first = self.ok("export").stdout
        doc = json.loads(first)
        self.assertEqual(doc["format"], "upmoe-catalog")
        self.assertEqual(doc["schema_version"], 11)
        self.assertEqual(list(doc), ["format", "schema_version", "label_sets", "tasks", "datasets", "mixtures"])
        for key in ("label_sets", "tasks", "datasets", "mixtures"):
            names = [x["name"] for x in doc[key]]
            self.assertEqual(names, sorted(names), key)
        self.assertEqual(len(doc["datasets"]), 33)
        wn = next(l for l in doc["label_sets"] if l["name"] == "wordnet")
        self.assertEqual(wn["labels"][2], {"key": "n07920872", "names": ["café", "coffee shop"]})
        custom = next(m for m in doc["mixtures"] if m["name"] == "custom")
        self.assertEqual(custom["datasets"], [
            {"dataset": "books-wiki", "sampling_weight": 0, "loss_weight": None},
            {"dataset": "imagenet-21k", "sampling_weight": None, "loss_weight": None},
            {"dataset": "qa-train", "sampling_weight": 0.125, "loss_weight": 2},
            {"dataset": "qa-val", "sampling_weight": None, "loss_weight": None}])

        path = self.write("export.json", first)
        copy = self.fresh("copy.db")
        self.run_cli("--catalog", copy, "import", path, catalog=False, check=0)
        second = self.run_cli("--catalog", copy, "export", catalog=False, check=0).stdout
        self.assertEqual(second, first)
        # and the copy behaves the same
        for args in (["mixture", "show", "custom"], ["attributes", "qa"], ["show", "dataset", "qa-train"],
                     ["list", "datasets"], ["show", "labels", "wordnet"]):
            with self.subTest(args=args):
                a = self.ok(*args).stdout
                b = self.run_cli("--catalog", copy, *args, catalog=False, check=0).stdout
                self.assertEqual(a, b)

    def test_round_trip_of_an_empty_catalog(self):
        os.remove(self.db)
        self.init(preset=False)
        first = self.ok("export").stdout
        self.assertEqual(json.loads(first), {"format": "upmoe-catalog", "schema_version": 11, "label_sets": [],
                                             "tasks": [], "datasets": [], "mixtures": []})
        copy = self.fresh("copy.db")
        self.run_cli("--catalog", copy, "import", self.write("e.json", first), catalog=False, check=0)
        self.assertEqual(self.run_cli("--catalog", copy, "export", catalog=False, check=0).stdout, first)

    def test_export_to_file(self):
        self.add_extras()
        out_dir = os.path.join(self.tmp, "out")
        os.mkdir(out_dir)
        target = os.path.join(out_dir, "catalog.json")
        p = self.ok("export", "-o", target)
        self.assertEqual(p.stdout, "")
        self.assertIn(target, p.stderr)
        with open(target, encoding="utf-8") as f:
            written = f.read()
        self.assertEqual(written, self.ok("export").stdout)
        self.assertEqual(os.listdir(out_dir), ["catalog.json"])  # no temporary file left behind
        # overwriting an existing file, and the long option
        self.ok("set", "books-wiki", "weight=0.3")
        self.ok("export", "--output", target)
        with open(target, encoding="utf-8") as f:
            doc = json.load(f)
        self.assertEqual(next(d for d in doc["datasets"] if d["name"] == "books-wiki")["sampling_weight"], 0.3)
        self.assertEqual(os.listdir(out_dir), ["catalog.json"])

    def test_export_to_unwritable_place(self):
        target = os.path.join(self.tmp, "no-such-dir", "x.json")
        p = self.run_cli("export", "-o", target, check=1)
        self.assertIn("no-such-dir", p.stderr)
        self.assertFalse(os.path.exists(os.path.dirname(target)))

    def test_import_from_stdin(self):
        self.add_extras()
        text = self.ok("export").stdout
        copy = self.fresh("copy.db")
        p = self.run_cli("--catalog", copy, "import", "-", catalog=False, stdin=text, check=0)
        self.assertIn("imported", p.stdout)
        self.assertEqual(self.run_cli("--catalog", copy, "export", catalog=False, check=0).stdout, text)

    def test_import_partial_document(self):
        """An export with only some sections adds just those (e.g. label sets shared between teams)."""
        copy = self.fresh("copy.db")
        doc = json.loads(self.ok("export").stdout)
        part = {"format": doc["format"], "schema_version": 1, "label_sets": doc["label_sets"]}
        self.run_cli("--catalog", copy, "import", self.write("part.json", json.dumps(part)), catalog=False, check=0)
        got = json.loads(self.run_cli("--catalog", copy, "export", catalog=False, check=0).stdout)
        self.assertEqual(got["label_sets"], doc["label_sets"])
        self.assertEqual(got["tasks"], [])


class ConcurrencyTest(CatalogTestCase):
    def setUp(self):
        super().setUp()
        self.init()
        self.base = {d["name"] for d in self.json_of("list", "datasets")}

    def start_writers(self, go):
        procs = []
        for w in range(WRITERS):
            procs.append(subprocess.Popen(
                [sys.executable, "-c", WRITER, BIN, self.db, f"w{w}", str(PER_WRITER), go],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env, cwd=self.tmp))
        return procs

    def collect(self, procs):
        results = []
        for p in procs:
            out, err = p.communicate(timeout=240)
            self.assertEqual(p.returncode, 0, err)
            results.extend(json.loads(out))
        return results

    def check_all_added(self, results):
        self.assertEqual(len(results), WRITERS * PER_WRITER)
        for name, rc, err in results:
            self.assertEqual(rc, 0, f"{name}: exit {rc}: {err}")
            self.assertNotIn("locked", err)
            self.assertNotIn("busy", err.lower())
        datasets = {d["name"]: d for d in self.json_of("list", "datasets")}
        expected = {f"w{w}-{i:02d}" for w in range(WRITERS) for i in range(PER_WRITER)}
        self.assertEqual(set(datasets), self.base | expected)
        for w in range(WRITERS):
            for i in range(PER_WRITER):
                d = datasets[f"w{w}-{i:02d}"]
                self.assertEqual((d["batch_size"], d["num_shards"], d["sampling_weight"]), (i + 1, 10, 0.5))
        self.assertEqual(self.sql("PRAGMA integrity_check")[0][0], "ok")

    def test_parallel_writers(self):
        go = os.path.join(self.tmp, "go")
        procs = self.start_writers(go)
        time.sleep(0.2)  # let every writer reach the start line
        with open(go, "w"):
            pass
        self.check_all_added(self.collect(procs))

    def test_one_process_per_command_all_at_once(self):
        procs = []
        for i in range(40):
            name = f"burst-{i:02d}"
            procs.append((name, subprocess.Popen(
                [BIN, "--catalog", self.db, "add", "dataset", name, "--task", "image-caption", "--batch", "5"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env, cwd=self.tmp)))
        for name, p in procs:
            out, err = p.communicate(timeout=120)
            self.assertEqual(p.returncode, 0, f"{name}: {err}")
            self.assertEqual(err, "")
        names = {d["name"] for d in self.json_of("list", "datasets")}
        self.assertEqual(names - self.base, {f"burst-{i:02d}" for i in range(40)})

    def test_mixed_writes_to_one_mixture(self):
        """Concurrent `mixture add` of distinct members to the same mixture all land."""
        for i in range(20):
            self.ok("add", "dataset", f"m-{i:02d}", "--task", "mlm", "--batch", "1")
        self.ok("mixture", "create", "shared")
        procs = [subprocess.Popen([BIN, "--catalog", self.db, "mixture", "add", "shared", f"m-{i:02d}",
                                   "--weight", str(i + 1)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env)
                 for i in range(20)]
        for p in procs:
            _, err = p.communicate(timeout=120)
            self.assertEqual(p.returncode, 0, err)
        members = self.json_of("mixture", "show", "shared")["datasets"]
        self.assertEqual({m["dataset"]: m["sampling_weight"] for m in members},
                         {f"m-{i:02d}": i + 1 for i in range(20)})

    def test_reader_never_fails_while_writers_write(self):
        go = os.path.join(self.tmp, "go")
        procs = self.start_writers(go)
        stop = threading.Event()
        reads = []

        def reader():
            while not stop.is_set():
                p = subprocess.run([BIN, "--catalog", self.db, "list", "datasets", "--json"], capture_output=True,
                                   text=True, env=self.env, timeout=60)
                try:
                    n = len(json.loads(p.stdout)) if p.returncode == 0 else None
                except ValueError:
                    n = None
                reads.append((p.returncode, n, p.stderr))

        t = threading.Thread(target=reader)
        t.start()
        try:
            time.sleep(0.2)
            with open(go, "w"):
                pass
            results = self.collect(procs)
        finally:
            stop.set()
            t.join(timeout=120)
        self.check_all_added(results)
        self.assertGreater(len(reads), 3, "the reader hardly ran")
        for rc, n, err in reads:
            self.assertEqual(rc, 0, err)
            self.assertEqual(err, "")
            self.assertIsNotNone(n)
        counts = [n for _, n, _ in reads]
        self.assertEqual(counts, sorted(counts), "a reader saw the catalog shrink")
        self.assertTrue(all(len(self.base) <= n <= len(self.base) + WRITERS * PER_WRITER for n in counts))

    def test_processes_creating_a_new_catalog_together(self):
        """Several processes running `init` (with and without the preset) on a catalog that does not exist yet:
        one creates it, the others see an existing catalog ('already exists'); none mistakes the catalog being
        created for a foreign or empty file, and none fails on a lock."""
        for preset in ([], ["--preset", "uniperceiver-moe"]):
            for rnd in range(4):
                with self.subTest(preset=preset, round=rnd):
                    d = os.path.join(self.tmp, f"new-{len(preset)}-{rnd}")
                    os.mkdir(d)
                    path, go = os.path.join(d, "c.db"), os.path.join(d, "go")
                    procs = [subprocess.Popen([sys.executable, "-c", AT_GO, go, BIN, "--catalog", path, "init",
                                               *preset], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                              env=self.env) for _ in range(6)]
                    time.sleep(0.15)
                    with open(go, "w"):
                        pass
                    outcomes = []
                    for p in procs:
                        out, err = p.communicate(timeout=120)
                        outcomes.append((p.returncode, out + err))
                    self.assertIn(0, [rc for rc, _ in outcomes], outcomes)
                    for rc, text in outcomes:
                        if rc != 0:
                            self.assertEqual(rc, 1, text)
                            self.assertIn("already exists", text, outcomes)
                    self.assertEqual(self.sql("PRAGMA user_version", path=path)[0][0], 11)
                    self.assertEqual(self.sql("PRAGMA application_id", path=path)[0][0], 0x55504D6F)
                    self.assertEqual(self.sql("SELECT count(*) FROM datasets", path=path)[0][0], 31 if preset else 0)


if __name__ == "__main__":
    unittest.main()
