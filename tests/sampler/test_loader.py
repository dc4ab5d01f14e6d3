"""The data loader end to end on real data: shards built by upmoe-shard from the fetched test data
(pysiogame images, Gutenberg text, real video clips), datasets and tasks registered with
upmoe-catalog, batches produced by upmoe-loader. Resuming from a cursor yields exactly the batches of
an uninterrupted run; thread count never changes a batch; datasets are drawn by weight; unusable
samples are reported and replaced deterministically."""
import csv
import io
import json
import math
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.environ.get("UPMOE_BUILD_DIR") or os.path.join(HERE, "..", "..", "build")
CAT = os.path.join(BUILD, "upmoe-catalog")
SHARD = os.path.join(BUILD, "upmoe-shard")
LOADER = os.path.join(BUILD, "upmoe-loader")


def testdata():
    d = os.environ.get("UPMOE_TESTDATA")
    if not d or not os.path.isdir(os.path.join(d, "images", "art4apps")):
        raise AssertionError("UPMOE_TESTDATA is not set or empty: run tools/fetch-testdata and point it at its folder")
    return d


def run(*argv, ok=True, **kw):
    p = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=300, **kw)
    if ok and p.returncode != 0:
        raise AssertionError(f"{argv} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


def steps(stdout):
    """(step, dataset, checksum) of every 'step ...' line."""
    out = []
    for line in stdout.splitlines():
        m = re.match(r"step (\d+) dataset (\S+) task \S+ batch (\d+) checksum ([0-9a-f]{16})", line)
        if m:
            out.append((int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)))
    return out


def shard_url(out_text):
    """The brace pattern upmoe-shard prints."""
    m = re.search(r"--url '([^']+)'", out_text)
    assert m, out_text
    return m.group(1)


class LoaderTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        td = testdata()
        cls.tmp = tempfile.mkdtemp(prefix="upmoe-loader-")
        cls.vocab = os.path.join(td, "clip", "bpe_simple_vocab_16e6.txt")
        t = cls.tmp
        cls.env = {k: v for k, v in os.environ.items() if not k.startswith("UPMOE_")}
        cls.env["UPMOE_CATALOG"] = os.path.join(t, "catalog.db")
        art = os.path.join(td, "images", "art4apps")
        p = run(SHARD, "folder", art, "--kind", "image-class", "--out", f"{t}/shards", "--prefix", "art",
                "--max-samples", "100", "--write-classes", f"{t}/classes.txt")
        urls = {"art": shard_url(p.stdout + p.stderr)}
        # Captions from the file names ("a picture of a koala"), as ../shared/testdata.md suggests.
        with open(f"{t}/captions.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "caption"])
            for cls_name in sorted(os.listdir(art)):
                for name in sorted(os.listdir(os.path.join(art, cls_name)))[:20]:
                    w.writerow([os.path.join(art, cls_name, name), "a picture of a " + name.rsplit(".", 1)[0].replace("_", " ")])
        p = run(SHARD, "annotations", f"{t}/captions.csv", "--kind", "image-caption", "--out", f"{t}/shards",
                "--prefix", "cap", "--max-samples", "60")
        urls["cap"] = shard_url(p.stdout + p.stderr)
        p = run(SHARD, "text", os.path.join(td, "text", "pg1661.txt"), "--out", f"{t}/shards", "--prefix", "holmes",
                "--max-samples", "400")
        urls["holmes"] = shard_url(p.stdout + p.stderr)
        with open(f"{t}/videos.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "caption"])
            # The task declares its video field as mp4, so only .mp4 clips (other containers would be
            # reported as samples without an .mp4 member).
            w.writerow([os.path.join(td, "video", "realshort.mp4"), "people in an office"])
            w.writerow([os.path.join(td, "video", "codecs", "mp4.mp4"), "a short clip"])
            w.writerow([os.path.join(td, "video", "cockatoo.mp4"), "a cockatoo"])
        p = run(SHARD, "annotations", f"{t}/videos.csv", "--kind", "video-caption", "--out", f"{t}/shards",
                "--prefix", "vid", "--max-samples", "2")
        urls["vid"] = shard_url(p.stdout + p.stderr)
        cls.urls = urls
        c = lambda *a: run(CAT, *a, env=cls.env)  # noqa: E731
        c("init")
        c("add", "labels", "art", f"{t}/classes.txt")
        c("add", "task", "image-classification", "--formulation", "label", "--input", "jpg=image", "--target", "cls",
          "--labels", "art")
        c("add", "task", "image-caption", "--formulation", "vocab-caption", "--input", "jpg=image", "--input", "txt=text",
          "--max-text-len", "16")
        c("add", "task", "image-text-retrieval", "--formulation", "pair", "--input", "jpg=image", "--target", "txt=text",
          "--max-target-len", "16")
        c("add", "task", "mlm", "--formulation", "vocab-mlm", "--input", "txt=text", "--max-text-len", "48")
        c("add", "task", "video-caption", "--formulation", "vocab-caption", "--input", "mp4=video", "--input", "txt=text",
          "--max-text-len", "16")
        c("add", "dataset", "art", "--task", "image-classification", "--batch", "8", "--url", urls["art"], "--weight", "0.3")
        c("add", "dataset", "cap-caption", "--task", "image-caption", "--batch", "6", "--url", urls["cap"], "--weight", "0.2")
        c("add", "dataset", "cap-retrieval", "--task", "image-text-retrieval", "--batch", "6", "--url", urls["cap"],
          "--weight", "0.2")
        c("add", "dataset", "holmes", "--task", "mlm", "--batch", "8", "--url", urls["holmes"], "--weight", "0.25")
        c("add", "dataset", "vid", "--task", "video-caption", "--batch", "2", "--url", urls["vid"], "--weight", "0.05")
        c("mixture", "create", "all")
        c("mixture", "add", "all", "art", "cap-caption", "cap-retrieval", "holmes", "vid")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def loader(self, *args, ok=True):
        base = ["--mixture", "all", "--vocab", self.vocab, "--image-size", "64", "--frames", "4", "--block", "32",
                "--seed", "11"]
        return run(LOADER, *base, *args, ok=ok, env=self.env, cwd=self.tmp)

    def test_resume_yields_the_same_batches(self):
        p = self.loader("--steps", "120")
        self.assertIn(" 0 unusable samples replaced", p.stdout, p.stderr)  # every task's samples decode
        full = steps(p.stdout)
        self.assertEqual(len(full), 120)
        self.assertEqual({d for _, d, _, _ in full}, {"art", "cap-caption", "cap-retrieval", "holmes", "vid"})
        cursor = os.path.join(self.tmp, "cursor.json")
        first = steps(self.loader("--steps", "57", "--save-cursor", cursor).stdout)
        second = steps(self.loader("--steps", "63", "--resume", cursor, "--threads", "3").stdout)
        self.assertEqual(first + second, full)
        # A second stop-and-resume in the middle of the second half agrees too.
        cursor2 = os.path.join(self.tmp, "cursor2.json")
        self.loader("--steps", "30", "--resume", cursor, "--save-cursor", cursor2)
        third = steps(self.loader("--steps", "33", "--resume", cursor2).stdout)
        self.assertEqual(third, full[87:])

    def test_resume_decodes_nothing_it_skips(self):
        cursor = os.path.join(self.tmp, "c90.json")
        self.loader("--steps", "90", "--save-cursor", cursor, "--quiet")
        p = self.loader("--steps", "1", "--resume", cursor)
        (step, _, batch, _), = steps(p.stdout)
        self.assertEqual(step, 90)
        decoded = int(re.search(r"(\d+) decoded", p.stdout).group(1))
        replaced = int(re.search(r"(\d+) unusable", p.stdout).group(1))
        self.assertEqual(replaced, 0, p.stderr)
        self.assertEqual(decoded, batch)  # only the one batch produced, nothing of the 90 skipped steps

    def test_readers_split_shards_and_resume(self):
        """Three reader threads per dataset: deterministic whatever the timing, resumable, and a cursor
        saved with another reader count is refused (the reader count is part of the data order)."""
        full = steps(self.loader("--steps", "80", "--readers", "3").stdout)
        self.assertEqual(steps(self.loader("--steps", "80", "--readers", "3", "--threads", "1").stdout), full)
        self.assertNotEqual(full, steps(self.loader("--steps", "80", "--readers", "1").stdout))
        cursor = os.path.join(self.tmp, "readers3.json")
        first = steps(self.loader("--steps", "35", "--readers", "3", "--save-cursor", cursor).stdout)
        second = steps(self.loader("--steps", "45", "--readers", "3", "--resume", cursor).stdout)
        self.assertEqual(first + second, full)
        p = self.loader("--steps", "1", "--readers", "2", "--resume", cursor, ok=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("readers", p.stderr)

    def test_thread_count_does_not_change_batches(self):
        one = steps(self.loader("--steps", "40", "--threads", "1").stdout)
        four = steps(self.loader("--steps", "40", "--threads", "4").stdout)
        self.assertEqual(one, four)

    def test_seed_and_rank_change_batches(self):
        a = steps(self.loader("--steps", "20").stdout)
        b = steps(self.loader("--steps", "20", "--seed", "12").stdout)
        r1 = steps(self.loader("--steps", "20", "--world", "2", "--rank", "1").stdout)
        self.assertNotEqual([x[3] for x in a], [x[3] for x in b])
        self.assertNotEqual([x[3] for x in a], [x[3] for x in r1])

    def test_datasets_are_drawn_by_weight(self):
        p = self.loader("--steps", "1500", "--batch", "1")
        got = {}
        for _, d, _, _ in steps(p.stdout):
            got[d] = got.get(d, 0) + 1
        weights = {"art": 0.3, "cap-caption": 0.2, "cap-retrieval": 0.2, "holmes": 0.25, "vid": 0.05}
        total = sum(weights.values())
        for name, w in weights.items():
            expect = 1500 * w / total
            self.assertLess(abs(got.get(name, 0) - expect), 5 * math.sqrt(expect), f"{name}: {got}")

    def test_cursor_of_another_run_is_refused(self):
        cursor = os.path.join(self.tmp, "c5.json")
        self.loader("--steps", "5", "--save-cursor", cursor, "--quiet")
        p = self.loader("--steps", "1", "--resume", cursor, "--seed", "99", ok=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("cursor is for", p.stderr)

    def test_unusable_samples_are_reported_and_replaced(self):
        """A shard whose second sample is a truncated JPEG and whose fourth is text named .jpg."""
        td = testdata()
        bad = os.path.join(self.tmp, "bad-000000.tar")
        jpgs = sorted(os.path.join(td, "images", "art4apps", "animals", n)
                      for n in os.listdir(os.path.join(td, "images", "art4apps", "animals")))[:6]
        with tarfile.open(bad, "w") as tar:
            for i, path in enumerate(jpgs):
                with open(path, "rb") as f:
                    data = f.read()
                if i == 1:
                    data = data[: len(data) // 2]
                if i == 3:
                    data = b"this is text, not a JPEG\n"
                for ext, payload in (("jpg", data), ("cls", b"1")):
                    info = tarfile.TarInfo(f"s{i:03d}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
        env = self.env
        run(CAT, "add", "dataset", "bad", "--task", "image-classification", "--batch", "4", "--url", bad, env=env)
        run(CAT, "mixture", "create", "badmix", env=env)
        run(CAT, "mixture", "add", "badmix", "bad", env=env)
        argv = [LOADER, "--mixture", "badmix", "--image-size", "64", "--block", "6", "--steps", "3"]
        p1 = run(*argv, env=env)
        p2 = run(*argv, env=env)
        self.assertEqual(steps(p1.stdout), steps(p2.stdout))
        self.assertTrue(all(b == 4 for _, _, b, _ in steps(p1.stdout)))
        warnings = [l for l in p1.stderr.splitlines() if "warning" in l]
        self.assertTrue(any(bad in l and "s001" in l for l in warnings), p1.stderr)
        self.assertTrue(any(bad in l and "s003" in l for l in warnings), p1.stderr)
        self.assertGreaterEqual(int(re.search(r"(\d+) unusable", p1.stdout).group(1)), 2)
        # Replacements come from the same stream the next step was prefetched from: a run resumed
        # after each step still sees exactly the same batches.
        for stop in (1, 2):
            cursor = os.path.join(self.tmp, f"bad-{stop}.json")
            a = run(*argv[:-1], str(stop), "--save-cursor", cursor, env=env)
            b = run(*argv[:-1], str(3 - stop), "--resume", cursor, env=env)
            self.assertEqual(steps(a.stdout) + steps(b.stdout), steps(p1.stdout))

    def test_verify_counts_and_reports(self):
        env = self.env
        p = run(CAT, "verify", "art", "--json", env=env)
        import json
        got = json.loads(p.stdout)
        self.assertEqual((got["shards"], got["samples"], got["bad_samples"], got["bad_shards"]), (6, 585, 0, 0))
        self.assertGreater(got["bytes"], 585 * 1000)
        run(CAT, "verify", "holmes", "--store", env=env)
        holmes = json.loads(run(CAT, "show", "dataset", "holmes", "--json", env=env).stdout)
        self.assertGreater(holmes["num_samples"], 1000)
        # A pattern with a missing shard and a damaged one: both named, the rest counted, exit 1.
        shards = os.path.join(self.tmp, "verify")
        os.makedirs(shards, exist_ok=True)
        art0 = re.sub(r"\{.*\}", "000000", self.urls["art"])
        shutil.copy(art0, os.path.join(shards, "v-0.tar"))
        with open(art0, "rb") as f:
            data = f.read()
        with open(os.path.join(shards, "v-2.tar"), "wb") as f:
            f.write(data[: len(data) // 2])  # cut in the middle of a member
        run(CAT, "add", "dataset", "v", "--task", "image-classification", "--batch", "4",
            "--url", os.path.join(shards, "v-{0..2}.tar"), env=env)
        p = run(CAT, "verify", "v", env=env, ok=False)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("v-1.tar", p.stderr)
        self.assertIn("v-2.tar", p.stderr)
        m = re.search(r"dataset v: 3 shards, (\d+) samples, \d+ bytes, \d+ bad samples, 2 bad shards", p.stdout)
        self.assertTrue(m, p.stdout)
        self.assertGreater(int(m.group(1)), 100)  # shard 0 whole, and what the cut shard held before the cut
        self.assertLess(int(m.group(1)), 200)

    def test_verify_decode_reports_undecodable_samples_apart(self):
        """verify --decode: structural errors (a sample with one member twice, a shard cut in a member) and
        undecodable contents (a JPEG cut in half, text named .jpg, a class index the label set lacks) are
        counted apart, each named by URL and key; the counts do not depend on the
        threads; --store keeps both, and show prints them."""
        env = self.env
        art0 = re.sub(r"\{.*\}", "000000", self.urls["art"])
        samples = {}
        with tarfile.open(art0) as t:
            for m in t.getmembers():
                key, ext = m.name.split(".", 1)
                samples.setdefault(key, {})[ext] = t.extractfile(m).read()
        good = [samples[k] for k in sorted(samples)[:6]]
        jpg = good[0]["jpg"]
        members = []
        for i, s in enumerate(good):
            members += [(f"good{i}.jpg", s["jpg"]), (f"good{i}.cls", s["cls"])]
        members += [("cut.jpg", jpg[: len(jpg) // 2]), ("cut.cls", b"1"),
                    ("text.jpg", b"this is not an image\n"), ("text.cls", b"2"),
                    ("badclass.jpg", jpg), ("badclass.cls", b"999"),
                    ("dup.jpg", jpg), ("dup.cls", b"1"), ("dup.cls", b"2")]
        shards = os.path.join(self.tmp, "verify-decode")
        os.makedirs(shards, exist_ok=True)
        with tarfile.open(os.path.join(shards, "d-0.tar"), "w", format=tarfile.GNU_FORMAT) as t:
            for name, data in members:
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
        with open(art0, "rb") as f:
            data = f.read()
        with open(os.path.join(shards, "d-1.tar"), "wb") as f:
            f.write(data[: 40 * 1024 + 700])  # the first samples, then a member cut short
        url0 = os.path.join(shards, "d-0.tar")
        run(CAT, "add", "dataset", "dec", "--task", "image-classification", "--batch", "4",
            "--url", os.path.join(shards, "d-{0..1}.tar"), env=env)
        plain = run(CAT, "verify", "dec", "--json", env=env, ok=False)
        self.assertEqual(plain.returncode, 1)
        p = json.loads(plain.stdout)
        self.assertEqual((p["bad_samples"], p["bad_shards"], p["undecodable"]), (1, 1, None))
        self.assertNotIn("undecodable", plain.stderr)
        runs = {}
        for threads in ("1", "2"):
            r = run(CAT, "verify", "dec", "--decode", "--threads", threads, "--json", env=env, ok=False)
            self.assertEqual(r.returncode, 1, r.stderr)
            runs[threads] = (json.loads(r.stdout), r.stderr)
        got, err = runs["1"]
        self.assertEqual(runs["2"][0], got)
        self.assertEqual((got["samples"], got["bad_samples"], got["bad_shards"], got["undecodable"]),
                         (p["samples"], 1, 1, 3))
        for key in ("cut", "text", "badclass"):
            self.assertRegex(err, rf"undecodable sample {re.escape(url0)} key {key}: ")
        self.assertNotIn("key good", err)
        self.assertRegex(err, r"bad sample: .*d-0\.tar.*dup")
        self.assertRegex(err, r"bad shard: .*d-1\.tar")
        # the same numbers in the text summary, and kept by --store
        r = run(CAT, "verify", "dec", "--decode", "--store", env=env, ok=False)
        self.assertIn(f"dataset dec: 2 shards, {got['samples']} samples, {got['bytes']} bytes, 1 bad samples, "
                      "1 bad shards, 3 undecodable", r.stdout)
        shown = json.loads(run(CAT, "show", "dataset", "dec", "--json", env=env).stdout)
        self.assertEqual(shown["num_samples"], got["samples"])
        v = shown["verified"]
        self.assertEqual((v["samples"], v["bad_samples"], v["bad_shards"], v["undecodable"]), (got["samples"], 1, 1, 3))
        self.assertIn("1 bad samples, 1 bad shards, 3 undecodable", run(CAT, "show", "dataset", "dec", env=env).stdout)
        run(CAT, "verify", "dec", "--store", env=env, ok=False)  # a pass without decoding says so
        v = json.loads(run(CAT, "show", "dataset", "dec", "--json", env=env).stdout)["verified"]
        self.assertIsNone(v["undecodable"])
        # a clean dataset decodes whole: every task's fields (images and labels, captions, text, video)
        for ds in ("art", "cap-retrieval", "holmes", "vid"):
            r = run(CAT, "verify", ds, "--decode", "--json", env=env)
            self.assertEqual(json.loads(r.stdout)["undecodable"], 0, ds)
        r = run(CAT, "verify", "dec", "--threads", "2", env=env, ok=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--threads and --bpe-vocab go with --decode", r.stderr)

    def test_placeholder_dataset_is_refused(self):
        env = self.env
        run(CAT, "add", "dataset", "nourl", "--task", "mlm", "--batch", "4", env=env)
        run(CAT, "mixture", "create", "withplaceholder", env=env)
        run(CAT, "mixture", "add", "withplaceholder", "nourl", env=env)
        p = run(LOADER, "--mixture", "withplaceholder", "--vocab", self.vocab, ok=False, env=env)
        self.assertEqual(p.returncode, 1)
        self.assertIn("nourl has no shard URL", p.stderr)


if __name__ == "__main__":
    unittest.main()
