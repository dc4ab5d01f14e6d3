"""upmoe-shard on real data: the pysiogame class folder (585 JPEGs, 12 classes), CSV/JSONL annotations for
image and video captions and classes, and a Gutenberg book cut into MLM samples. Shards are read back with
Python's tarfile, GNU tar and WebDataset's grouping rules; the printed URL pattern goes through upmoe-catalog."""
import csv
import filecmp
import json
import os
import pty
import re
import signal
import subprocess
import sys
import tarfile
import time
import unittest

from shard_util import (BIN, ShardTestCase, folder_samples, member_cost, read_bytes, read_members, read_samples,
                        shard_files)

TMP_RE = re.compile(r"^\..*\.tar\.tmp\.\d+$")


class FolderTest(ShardTestCase):
    """upmoe-shard folder images/art4apps --kind image-class --max-samples 100."""

    def setUp(self):
        super().setUp()
        self.root = os.path.join(self.data, "images", "art4apps")
        self.classes, self.expected = folder_samples(self.root)
        self.out = os.path.join(self.tmp, "out")
        self.classes_file = os.path.join(self.tmp, "classes.txt")
        t0 = time.monotonic()
        self.result, self.proc = self.shard_json("folder", self.root, "--kind", "image-class", "--out", self.out,
                                                 "--prefix", "pysio", "--max-samples", 100, "--write-classes",
                                                 self.classes_file)
        self.seconds = time.monotonic() - t0
        self.shards = shard_files(self.out, "pysio")

    def test_counts_and_url(self):
        self.assertEqual(len(self.classes), 12)
        self.assertEqual(len(self.expected), 585)
        self.assertEqual([os.path.basename(s) for s in self.shards], [f"pysio-{i:06d}.tar" for i in range(6)])
        r = self.result
        self.assertEqual((r["samples"], r["shards"], r["classes"]), (585, 6, 12))
        self.assertEqual(r["bytes"], sum(os.path.getsize(s) for s in self.shards))
        self.assertEqual(r["url"], os.path.realpath(self.out) + "/pysio-{000000..000005}.tar")
        self.assertEqual(sorted(os.listdir(self.out)), [os.path.basename(s) for s in self.shards], "temporary files left")
        print(f"\n  585 images -> 6 shards, {r['bytes']} bytes in {self.seconds:.3f} s", file=sys.stderr)

    def test_members_with_tarfile(self):
        i = 0
        for n, shard in enumerate(self.shards):
            members = read_members(shard)
            self.assertEqual(len(members), 2 * (100 if n < 5 else 85))
            for k in range(0, len(members), 2):
                (jinfo, jdata), (cinfo, cdata) = members[k], members[k + 1]
                path, cls = self.expected[i]
                self.assertEqual(jinfo.name, f"{i:09d}.jpg")
                self.assertEqual(cinfo.name, f"{i:09d}.cls")
                self.assertEqual(jdata, read_bytes(path), f"{jinfo.name} is not {path}")
                self.assertEqual(cdata, str(cls).encode())
                self.assertEqual(self.classes[int(cdata)], os.path.basename(os.path.dirname(path)))
                for info in (jinfo, cinfo):
                    self.assertTrue(info.isreg())
                    self.assertEqual((info.mode, info.uid, info.gid, info.uname, info.gname, info.mtime),
                                     (0o644, 0, 0, "upmoe", "upmoe", 0))
                i += 1
        self.assertEqual(i, 585)

    def test_gnu_tar_lists_and_extracts(self):
        listed = []
        for shard in self.shards:
            p = subprocess.run(["tar", "-tvf", shard], capture_output=True, text=True, check=True)
            rows = p.stdout.splitlines()
            self.assertTrue(all(r.startswith("-rw-r--r-- upmoe/upmoe ") for r in rows), rows[:3])
            listed += [r.split()[-1] for r in rows]
            self.assertEqual([r.split()[-1] for r in rows], [i.name for i, _ in read_members(shard)])
            dest = os.path.join(self.tmp, "x", os.path.basename(shard))
            os.makedirs(dest)
            subprocess.run(["tar", "-xf", shard, "-C", dest], check=True)
        self.assertEqual(len(listed), 2 * 585)
        for i, (path, cls) in enumerate(self.expected):
            dest = os.path.join(self.tmp, "x", f"pysio-{i // 100:06d}.tar")
            self.assertTrue(filecmp.cmp(os.path.join(dest, f"{i:09d}.jpg"), path, shallow=False))
            self.assertEqual(read_bytes(os.path.join(dest, f"{i:09d}.cls")), str(cls).encode())

    def test_webdataset_grouping(self):
        samples = read_samples(self.shards)
        self.assertEqual(len(samples), 585)
        for i, s in enumerate(samples):
            self.assertEqual(sorted(s), ["__key__", "cls", "jpg"])
            self.assertEqual(s["__key__"], f"{i:09d}")
            self.assertEqual(s["jpg"], read_bytes(self.expected[i][0]))
            self.assertEqual(int(s["cls"]), self.expected[i][1])

    def test_classes_file_and_catalog(self):
        with open(self.classes_file, encoding="utf-8") as f:
            self.assertEqual(f.read(), "".join(c + "\n" for c in self.classes))
        self.catalog("init")
        self.catalog("add", "labels", "pysio", self.classes_file)
        labels = json.loads(self.catalog("show", "labels", "pysio", "--json"))["labels"]
        self.assertEqual([l["names"][0] for l in labels], self.classes)
        self.catalog("add", "task", "pysio-cls", "--formulation", "label", "--input", "jpg=image", "--target", "cls",
                     "--labels", "pysio")
        self.catalog("add", "dataset", "pysio", "--task", "pysio-cls", "--batch", 8, "--url", self.result["url"])
        d = json.loads(self.catalog("show", "dataset", "pysio", "--json"))
        self.assertEqual(d["num_shards"], 6)

    def test_text_output(self):
        p = self.run_shard("folder", self.root, "--kind", "image-class", "--out", self.out, "--prefix", "pysio",
                           "--max-samples", 100, "--force")
        url = os.path.realpath(self.out) + "/pysio-{000000..000005}.tar"
        self.assertIn(f"url      {url}\n", p.stdout)
        self.assertIn("samples  585\n", p.stdout)
        self.assertIn("shards   6\n", p.stdout)
        self.assertIn(f"--url '{url}'", p.stdout)
        self.assertEqual(p.stderr, "", "no progress line when stderr is not a terminal")

    def test_reproducible(self):
        out2 = os.path.join(self.tmp, "again")
        self.run_shard("folder", self.root, "--kind", "image-class", "--out", out2, "--prefix", "pysio",
                       "--max-samples", 100)
        again = shard_files(out2, "pysio")
        self.assertEqual(len(again), 6)
        for a, b in zip(self.shards, again):
            self.assertEqual(read_bytes(a), read_bytes(b), f"{a} and {b} differ")

    def test_force(self):
        line = self.fails(1, "folder", self.root, "--kind", "image-class", "--out", self.out, "--prefix", "pysio",
                          contains=["pysio-000000.tar", "--force"])
        self.assertIn(self.out, line)
        r, _ = self.shard_json("folder", self.root, "--kind", "image-class", "--out", self.out, "--prefix", "pysio",
                               "--max-samples", 300, "--force")
        self.assertEqual((r["shards"], r["removed_old_shards"]), (2, 4))
        self.assertEqual([os.path.basename(s) for s in shard_files(self.out, "pysio")],
                         ["pysio-000000.tar", "pysio-000001.tar"])
        self.assertEqual(len(read_samples(shard_files(self.out, "pysio"))), 585)

    def test_max_bytes(self):
        limit = 300 * 1024
        out = os.path.join(self.tmp, "mb")
        r, _ = self.shard_json("folder", self.root, "--kind", "image-class", "--out", out, "--max-bytes", "300K")
        shards = shard_files(out)
        self.assertEqual(r["shards"], len(shards))
        self.assertGreater(len(shards), 20)
        costs = [member_cost(os.path.getsize(p)) + member_cost(len(str(c))) for p, c in self.expected]
        i = 0
        for n, shard in enumerate(shards):
            size = os.path.getsize(shard)
            self.assertLessEqual(size, limit, shard)
            k = len(read_members(shard)) // 2
            self.assertEqual(size, sum(costs[i:i + k]) + 1024, "a shard is its members plus the 1024-byte end")
            i += k
            if n + 1 < len(shards):  # closed only when the next sample would not fit
                self.assertGreater(size + costs[i], limit)
        self.assertEqual(i, 585)
        self.assertEqual([s["jpg"] for s in read_samples(shards)], [s["jpg"] for s in read_samples(self.shards)])

    def test_oversized_sample_alone(self):
        # 11 files of one class folder; the limit is below the largest sample: it gets a shard of its own.
        sizes = sorted((os.path.getsize(p), p) for p, _ in self.expected[:11])
        big = sizes[-1][1]
        limit = member_cost(sizes[-1][0]) + 512 + 1024 - 1
        small = os.path.join(self.tmp, "small", "c")
        os.makedirs(small)
        for _, p in sizes:
            os.symlink(p, os.path.join(small, os.path.basename(p)))
        out = os.path.join(self.tmp, "ov")
        r, p = self.shard_json("folder", os.path.dirname(small), "--kind", "image-class", "--out", out,
                               "--max-bytes", limit)
        self.assertEqual(r["oversized"], 1)
        self.assertIn("warning", p.stderr)
        self.assertIn(os.path.basename(big), p.stderr)
        alone = [s for s in shard_files(out) if len(read_members(s)) == 2 and
                 read_members(s)[0][1] == read_bytes(big)]
        self.assertEqual(len(alone), 1, "the oversized sample is not alone in a shard")
        self.assertEqual(sum(len(read_members(s)) // 2 for s in shard_files(out)), 11)

    def test_shuffle(self):
        def run(seed, name):
            out = os.path.join(self.tmp, name)
            self.run_shard("folder", self.root, "--kind", "image-class", "--out", out, "--max-samples", 100,
                           "--shuffle", seed)
            return shard_files(out)
        a, b, c = run(7, "a"), run(7, "b"), run(8, "c")
        self.assertEqual([read_bytes(x) for x in a], [read_bytes(x) for x in b], "same seed, different shards")
        sa, sc, plain = read_samples(a), read_samples(c), read_samples(self.shards)
        self.assertNotEqual([s["__key__"] for s in sa], [s["__key__"] for s in sc])
        self.assertNotEqual([s["__key__"] for s in sa], [s["__key__"] for s in plain])
        # Keys name input positions, so each key keeps its image and class whatever the order.
        by_key = {s["__key__"]: (s["jpg"], s["cls"]) for s in plain}
        self.assertEqual({s["__key__"]: (s["jpg"], s["cls"]) for s in sa}, by_key)
        self.assertEqual(len(a), 6)

    def test_key_from_path(self):
        out = os.path.join(self.tmp, "kp")
        self.run_shard("folder", self.root, "--kind", "image-class", "--out", out, "--key-from-path")
        samples = read_samples(shard_files(out))
        self.assertEqual(len(samples), 585)
        for s, (path, cls) in zip(samples, self.expected):
            rel = os.path.relpath(path, self.root)
            self.assertEqual(s["__key__"], os.path.splitext(rel)[0])
            self.assertEqual((s["jpg"], int(s["cls"])), (read_bytes(path), cls))

    def test_progress_on_a_terminal(self):
        master, slave = pty.openpty()
        p = subprocess.Popen([BIN, "folder", self.root, "--kind", "image-class", "--out", os.path.join(self.tmp, "tty")],
                             stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)
        text = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            text += chunk
        os.close(master)
        self.assertEqual(p.wait(timeout=60), 0)
        self.assertIn(b"upmoe-shard: 585 samples, 1 shards", text)


class AtomicityTest(ShardTestCase):
    """A large input (600 links to a 0.7 MB clip): SIGKILL leaves only complete shards under final names."""

    def setUp(self):
        super().setUp()
        self.clip = os.path.join(self.data, "video", "cockatoo.mp4")
        self.clip_bytes = read_bytes(self.clip)
        folder = os.path.join(self.tmp, "big", "cockatoo")
        os.makedirs(folder)
        for i in range(600):
            os.symlink(self.clip, os.path.join(folder, f"{i:04d}.mp4"))
        self.argv = [BIN, "folder", os.path.dirname(folder), "--kind", "video-class", "--max-samples", "20"]
        self.out = os.path.join(self.tmp, "out")

    def start_and_stop(self, sig):
        p = subprocess.Popen(self.argv + ["--out", self.out], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if os.path.isdir(self.out) and len(shard_files(self.out)) >= 2:
                break
            self.assertIsNone(p.poll(), "upmoe-shard finished before the test could stop it: make the input larger")
            time.sleep(0.001)
        self.assertIsNone(p.poll(), "upmoe-shard finished before the test could stop it")
        p.send_signal(sig)
        out, err = p.communicate(timeout=60)
        return p.returncode, err.decode()

    def check_complete(self, shard):
        members = read_members(shard)
        self.assertEqual(len(members), 40, shard)
        for info, data in members:
            if info.name.endswith(".mp4"):
                self.assertEqual(data, self.clip_bytes, f"{shard}: {info.name}")
            else:
                self.assertEqual(data, b"0")

    def test_sigkill_leaves_only_complete_shards(self):
        rc, _ = self.start_and_stop(signal.SIGKILL)
        self.assertEqual(rc, -signal.SIGKILL)
        shards = shard_files(self.out)
        self.assertGreaterEqual(len(shards), 2)
        self.assertLess(len(shards), 30)
        for s in shards:
            self.check_complete(s)
        names = set(os.listdir(self.out)) - {os.path.basename(s) for s in shards}
        self.assertTrue(all(TMP_RE.match(n) for n in names), names)
        self.assertLessEqual(len(names), 1)
        # A new run replaces them and clears the dead run's temporary file.
        p = subprocess.run(self.argv + ["--out", self.out, "--force", "--json"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["shards"], 30)
        self.assertEqual(sorted(os.listdir(self.out)), [f"shard-{i:06d}.tar" for i in range(30)])
        for s in shard_files(self.out):
            self.check_complete(s)

    def test_sigterm_removes_what_the_run_wrote(self):
        rc, err = self.start_and_stop(signal.SIGTERM)
        self.assertEqual(rc, 1)
        self.assertIn("upmoe-shard: error: interrupted", err)
        self.assertEqual(os.listdir(self.out), [], "a failed run left files behind")


def caption_of(path, kind="picture"):
    word = os.path.splitext(os.path.basename(path))[0].replace("_", " ")
    return f"a {kind} of a {word}"


class AnnotationsTest(ShardTestCase):
    def images(self):
        """Real images with captions from their file names: art4apps JPEGs, photos, PNGs, and two links that
        test the extension rules (.jpeg -> jpg, .PNG -> png)."""
        _, samples = folder_samples(os.path.join(self.data, "images", "art4apps"))
        paths = [p for p, _ in samples[::15]]
        paths += sorted(os.path.join(self.data, "images", d, f) for d in ("photos", "png")
                        for f in os.listdir(os.path.join(self.data, "images", d)))
        links = os.path.join(self.tmp, "links")
        os.makedirs(links)
        os.symlink(paths[0], os.path.join(links, "linked.jpeg"))
        os.symlink(os.path.join(self.data, "images", "png", "chelsea.png"), os.path.join(links, "Cat.PNG"))
        paths += [os.path.join(links, "linked.jpeg"), os.path.join(links, "Cat.PNG")]
        rows = [(p, caption_of(p)) for p in paths]
        rows[1] = (rows[1][0], 'a picture of a "thing", with a comma\nand a second line')
        rows[2] = (rows[2][0], "a picture of a caf\u00e9")
        return rows

    def check_media_text(self, shards, rows, ext_of):
        samples = read_samples(shards)
        self.assertEqual(len(samples), len(rows))
        for i, (s, (path, text)) in enumerate(zip(samples, rows)):
            self.assertEqual(s["__key__"], f"{i:09d}")
            ext = ext_of(path)
            self.assertEqual(sorted(s), sorted(["__key__", ext, "txt"]), path)
            self.assertEqual(s[ext], read_bytes(path), path)
            self.assertEqual(s["txt"].decode("utf-8"), text)
        # Each sample's members are consecutive: key then its extensions.
        names = [i.name for sh in shards for i, _ in read_members(sh)]
        self.assertEqual([n.split(".")[0] for n in names], [f"{i:09d}" for i in range(len(rows)) for _ in (0, 1)])

    @staticmethod
    def image_ext(path):
        e = os.path.splitext(path)[1][1:].lower()
        return "jpg" if e == "jpeg" else e

    def test_csv_image_caption(self):
        rows = self.images()
        ann = os.path.join(self.tmp, "ann", "captions.csv")
        os.makedirs(os.path.dirname(ann))
        with open(ann, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["id", "path", "caption"])
            for i, (p, c) in enumerate(rows):
                w.writerow([i, os.path.relpath(p, os.path.dirname(ann)), c])
        out = os.path.join(self.tmp, "out")
        r, _ = self.shard_json("annotations", ann, "--kind", "image-caption", "--out", out, "--max-samples", 16)
        shards = shard_files(out)
        self.assertEqual((r["samples"], r["shards"]), (len(rows), len(shards)))
        self.assertEqual(len(shards), (len(rows) + 15) // 16)
        self.check_media_text(shards, rows, self.image_ext)
        exts = {i.name.split(".", 1)[1] for s in shards for i, _ in read_members(s)}
        self.assertEqual(exts, {"jpg", "png", "txt"})
        self.assert_catalog_counts(r["url"], len(shards), len(rows))

    def test_jsonl_image_caption(self):
        rows = self.images()
        ann = os.path.join(self.tmp, "captions.jsonl")
        with open(ann, "w", encoding="utf-8") as f:
            for i, (p, c) in enumerate(rows):
                path = p if i % 2 else os.path.relpath(p, self.tmp)  # absolute and relative paths
                f.write(json.dumps({"image": path, "text": c, "n": i}, ensure_ascii=i % 3 == 0) + "\n")
                if i == 4:
                    f.write("\n")  # blank lines are allowed
        out = os.path.join(self.tmp, "out")
        self.run_shard("annotations", ann, "--kind", "image-caption", "--path-field", "image", "--text-field", "text",
                       "--out", out)
        self.check_media_text(shard_files(out), rows, self.image_ext)

    def test_video_caption(self):
        vdir = os.path.join(self.data, "video")
        paths = sorted(os.path.join(vdir, f) for f in os.listdir(vdir) if f.endswith(".mp4"))
        paths += sorted(os.path.join(vdir, "codecs", f) for f in os.listdir(os.path.join(vdir, "codecs")))
        self.assertEqual(len(paths), 8)
        rows = [(p, caption_of(p, "video")) for p in paths]
        ann = os.path.join(self.tmp, "videos.csv")
        with open(ann, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["caption", "video"])
            for p, c in rows:
                w.writerow([c, os.path.relpath(p, self.tmp)])
        out = os.path.join(self.tmp, "out")
        r, _ = self.shard_json("annotations", ann, "--kind", "video-caption", "--path-field", "video", "--out", out)
        self.assertEqual(r["samples"], 8)
        self.check_media_text(shard_files(out), rows, lambda p: os.path.splitext(p)[1][1:])
        exts = sorted(i.name.split(".", 1)[1] for s in shard_files(out) for i, _ in read_members(s))
        self.assertEqual(exts, sorted(["3gp", "flv", "mov", "mp4", "mp4", "mp4", "ogv", "webm"] + ["txt"] * 8))

    def class_rows(self):
        _, samples = folder_samples(os.path.join(self.data, "images", "art4apps"))
        chosen = ("sport", "animals", "food")
        return [(p, os.path.basename(os.path.dirname(p))) for p, _ in samples
                if os.path.basename(os.path.dirname(p)) in chosen][::4]

    def test_image_class_names(self):
        rows = self.class_rows()
        ann = os.path.join(self.tmp, "labels.csv")
        with open(ann, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["path", "label"])
            w.writerows(rows)
        out = os.path.join(self.tmp, "out")
        names = os.path.join(self.tmp, "names.txt")
        r, _ = self.shard_json("annotations", ann, "--kind", "image-class", "--out", out, "--write-classes", names)
        self.assertEqual(r["classes"], 3)
        self.assertEqual(read_bytes(names), b"animals\nfood\nsport\n")
        samples = read_samples(shard_files(out))
        index = {"animals": 0, "food": 1, "sport": 2}
        self.assertEqual([(s["jpg"], int(s["cls"])) for s in samples], [(read_bytes(p), index[c]) for p, c in rows])
        # A fixed class list: the index is the line.
        fixed = os.path.join(self.tmp, "fixed.txt")
        with open(fixed, "w") as f:
            f.write("sport\nbody\nfood\nanimals\n")
        out2 = os.path.join(self.tmp, "out2")
        self.run_shard("annotations", ann, "--kind", "image-class", "--out", out2, "--classes", fixed)
        index = {"sport": 0, "food": 2, "animals": 3}
        self.assertEqual([int(s["cls"]) for s in read_samples(shard_files(out2))], [index[c] for _, c in rows])

    def test_jsonl_numeric_labels(self):
        rows = self.class_rows()
        ann = os.path.join(self.tmp, "labels.jsonl")
        with open(ann, "w") as f:
            for p, c in rows:
                f.write(json.dumps({"path": p, "y": len(c)}) + "\n")
        out = os.path.join(self.tmp, "out")
        self.run_shard("annotations", ann, "--kind", "image-class", "--label-field", "y", "--numeric-labels", "--out", out)
        self.assertEqual([s["cls"] for s in read_samples(shard_files(out))], [str(len(c)).encode() for _, c in rows])

    def test_text_annotations(self):
        with open(os.path.join(self.data, "sentiment", "imdb.json"), encoding="utf-8") as f:
            sentences = [r["text"] for r in json.load(f) if r.get("text")]
        self.assertGreater(len(sentences), 900)
        ann = os.path.join(self.tmp, "imdb.jsonl")
        with open(ann, "w", encoding="utf-8") as f:
            for s in sentences:
                f.write(json.dumps({"text": s}) + "\n")
        out = os.path.join(self.tmp, "out")
        r, _ = self.shard_json("annotations", ann, "--kind", "text", "--out", out, "--max-samples", 250)
        self.assertEqual((r["samples"], r["shards"]), (len(sentences), (len(sentences) + 249) // 250))
        samples = read_samples(shard_files(out))
        self.assertEqual([s["txt"].decode() for s in samples], sentences)
        self.assertTrue(all(sorted(s) == ["__key__", "txt"] for s in samples))


def split_reference(data, per, paragraphs):
    """The documented rule, independently: non-blank lines (CR dropped, BOM dropped), N per sample joined
    by newlines; or paragraphs (runs of non-blank lines), N per sample joined by a blank line."""
    text = data.decode("utf-8").lstrip("\ufeff")
    out, buf, units, in_par = [], "", 0, False
    for line in text.split("\n"):
        line = line[:-1] if line.endswith("\r") else line
        if line.strip(" \t\f\v") == "":
            if paragraphs and in_par:
                units += 1
                if units == per:
                    out.append(buf)
                    buf, units = "", 0
            in_par = False
            continue
        buf += ("" if not buf else "\n\n" if paragraphs and not in_par else "\n") + line
        in_par = True
        if not paragraphs:
            units += 1
            if units == per:
                out.append(buf)
                buf, units = "", 0
    if buf:
        out.append(buf)
    return out


class TextTest(ShardTestCase):
    def setUp(self):
        super().setUp()
        self.book = os.path.join(self.data, "text", "pg1661.txt")
        self.data_bytes = read_bytes(self.book)

    def test_paragraphs(self):
        out = os.path.join(self.tmp, "out")
        r, _ = self.shard_json("text", self.book, "--out", out, "--prefix", "holmes", "--max-samples", 1000)
        texts = [s["txt"].decode() for s in read_samples(shard_files(out, "holmes"))]
        paragraphs = [p for p in re.split(r"\n[ \t]*\n", self.data_bytes.decode().lstrip("\ufeff").replace("\r", ""))
                      if p.strip()]
        self.assertEqual(len(texts), len(paragraphs))
        self.assertEqual(texts, split_reference(self.data_bytes, 1, True))
        first = next(t for t in texts if t.startswith("To Sherlock Holmes"))
        self.assertTrue(first.startswith("To Sherlock Holmes she is always THE woman. I have seldom heard\nhim"), first[:80])
        self.assertTrue(all("\r" not in t and "\n\n" not in t for t in texts))
        self.assertEqual(r["samples"], len(texts))
        self.assertEqual(r["shards"], (len(texts) + 999) // 1000)
        self.assert_catalog_counts(r["url"], r["shards"], r["samples"])

    def test_lines_and_groups(self):
        for per, mode in ((10, "--lines-per-sample"), (3, "--paragraphs-per-sample")):
            out = os.path.join(self.tmp, mode + str(per))
            self.run_shard("text", self.book, "--out", out, mode, per)
            texts = [s["txt"].decode() for s in read_samples(shard_files(out))]
            self.assertEqual(texts, split_reference(self.data_bytes, per, mode == "--paragraphs-per-sample"))
            if mode == "--lines-per-sample":
                lines = [l for l in self.data_bytes.decode().lstrip("\ufeff").replace("\r", "").split("\n")
                         if l.strip(" \t\f\v")]
                self.assertEqual(len(texts), (len(lines) + 9) // 10)
                self.assertEqual("\n".join(texts).split("\n"), lines)


class ErrorTest(ShardTestCase):
    def setUp(self):
        super().setUp()
        self.img = os.path.join(self.data, "images", "art4apps", "animals", "koala.jpg")
        self.out = os.path.join(self.tmp, "out")

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def assert_nothing_written(self):
        self.assertFalse(os.path.exists(self.out) and os.listdir(self.out), "a failed run left files behind")

    def test_missing_inputs(self):
        self.fails(1, "folder", "/no/such/dir", "--kind", "image-class", "--out", self.out, contains="/no/such/dir")
        self.fails(1, "annotations", "/no/such.csv", "--kind", "image-caption", "--out", self.out,
                   contains="/no/such.csv")
        self.fails(1, "text", "/no/such.txt", "--out", self.out, contains="/no/such.txt")
        ann = self.write("a.csv", f"path,caption\n{self.img},a koala\nmissing.jpg,a ghost\n")
        self.fails(1, "annotations", ann, "--kind", "image-caption", "--out", self.out,
                   contains=[f"{ann}:3:", "missing.jpg", "No such file"])
        self.assert_nothing_written()

    def test_bad_csv(self):
        ann = self.write("a.csv", f"path,caption\n{self.img},a koala\n{self.img}\n")
        self.fails(1, "annotations", ann, "--kind", "image-caption", "--out", self.out,
                   contains=[f"{ann}:3:", "1 field", "header has 2"])
        ann = self.write("b.csv", f'path,caption\n{self.img},"a koala\n\n{self.img},x\n')
        self.fails(1, "annotations", ann, "--kind", "image-caption", "--out", self.out,
                   contains=[f"{ann}:2:", "never closed"])
        ann = self.write("c.csv", f"path,caption\n{self.img},a koala\n")
        self.fails(1, "annotations", ann, "--kind", "image-caption", "--text-field", "text", "--out", self.out,
                   contains=[f"{ann}:1:", "'text'", "path, caption"])
        ann = self.write("d.csv", f"path,caption\n{self.img},\n")
        self.fails(1, "annotations", ann, "--kind", "image-caption", "--out", self.out, contains=[f"{ann}:2:", "empty"])
        ann = self.write("e.csv", f"path,caption\n{os.path.dirname(self.img)}/../../../text/pg1661.txt,text\n")
        self.fails(1, "annotations", ann, "--kind", "image-caption", "--out", self.out,
                   contains=[f"{ann}:2:", "'.txt' is not an image"])
        self.assert_nothing_written()

    def test_bad_jsonl(self):
        ann = self.write("a.jsonl", json.dumps({"path": self.img, "caption": "a koala"}) + "\n{\"path\": \n")
        self.fails(1, "annotations", ann, "--kind", "image-caption", "--out", self.out,
                   contains=[f"{ann}:2:", "invalid JSON"])
        ann = self.write("b.jsonl", "\n" + json.dumps({"path": self.img}) + "\n")
        self.fails(1, "annotations", ann, "--kind", "image-caption", "--out", self.out,
                   contains=[f"{ann}:2:", "no field 'caption'"])
        ann = self.write("c.jsonl", "[1, 2]\n")
        self.fails(1, "annotations", ann, "--kind", "image-caption", "--out", self.out,
                   contains=[f"{ann}:1:", "not a JSON object"])
        ann = self.write("d.jsonl", json.dumps({"path": self.img, "label": "nope"}) + "\n")
        classes = self.write("classes.txt", "animals\nfood\n")
        self.fails(1, "annotations", ann, "--kind", "image-class", "--classes", classes, "--out", self.out,
                   contains=[f"{ann}:1:", "'nope'", classes])
        self.assert_nothing_written()

    def test_usage_errors(self):
        base = ["folder", os.path.dirname(os.path.dirname(self.img)), "--kind", "image-class", "--out", self.out]
        cases = [
            (base + ["--bogus"], "--bogus"),
            (base[:-2], "--out"),
            (["folder", base[1], "--kind", "pictures", "--out", self.out], "pictures"),
            (base + ["--max-samples", "0"], "--max-samples"),
            (base + ["--max-samples", "ten"], "ten"),
            (base + ["--max-bytes", "12Q"], "12Q"),
            (base + ["--shuffle", "-1"], "--shuffle"),
            (base + ["--max-samples"], "--max-samples"),
            (base + ["--prefix", "a/b"], "--prefix"),
            (base + ["--lines-per-sample", "3"], "--lines-per-sample"),
            (base + ["--text-field", "x"], "--text-field"),
            (["frobnicate", "x", "--out", self.out], "frobnicate"),
            (["folder", "--kind", "image-class", "--out", self.out], "folder"),
            (["annotations", self.img, "--kind", "image-caption", "--out", self.out], "--format"),
            (["text", self.img, "--out", self.out, "--lines-per-sample", "2", "--paragraphs-per-sample", "2"], "both"),
            (["annotations", "x.csv", "--kind", "image-caption", "--write-classes", "c", "--out", self.out],
             "--write-classes"),
            (["text", "x.txt", "--key-from-path", "--out", self.out], "--key-from-path"),
        ]
        for args, needle in cases:
            with self.subTest(args=args):
                self.fails(2, *args, contains=needle)
        self.assert_nothing_written()
        p = self.run_shard(check=2)
        self.assertIn("usage:", p.stderr)
        p = self.run_shard("--help")
        self.assertIn("usage: upmoe-shard folder DIR", p.stdout)

    def test_output_folder_checks(self):
        folder = os.path.dirname(os.path.dirname(self.img))
        bad = os.path.join(self.tmp, "with space")
        self.fails(1, "folder", folder, "--kind", "image-class", "--out", bad, contains="URL pattern")
        notdir = self.write("file", "x")
        self.fails(1, "folder", folder, "--kind", "image-class", "--out", notdir, contains=notdir)

    def test_duplicate_keys_from_path(self):
        d = os.path.join(self.tmp, "dup", "c")
        os.makedirs(d)
        os.symlink(self.img, os.path.join(d, "a.b.jpg"))
        os.symlink(self.img, os.path.join(d, "a_b.jpg"))
        self.fails(1, "folder", os.path.dirname(d), "--kind", "image-class", "--out", self.out, "--key-from-path",
                   contains=["a.b.jpg", "a_b.jpg", "c/a_b"])


if __name__ == "__main__":
    unittest.main()
