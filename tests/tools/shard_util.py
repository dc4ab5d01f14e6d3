"""Shared helpers for the upmoe-shard tests: where the binaries and the test data are, running the tool,
reading shards back with Python's tarfile, and WebDataset's own grouping rules (key = the member path up
to the first dot of its basename; consecutive members with the same key form one sample)."""
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.environ.get("UPMOE_BUILD_DIR") or os.path.join(HERE, "..", "..", "build")
BIN = os.path.join(BUILD, "upmoe-shard")
CATALOG_BIN = os.environ.get("UPMOE_CATALOG_BIN") or os.path.join(BUILD, "upmoe-catalog")


def testdata():
    """The fetched test data folder; a missing one is a failure, not a skip."""
    d = os.environ.get("UPMOE_TESTDATA")
    if not d:
        raise AssertionError("UPMOE_TESTDATA is not set: run tools/fetch-testdata and point it at the printed folder")
    if not os.path.isdir(os.path.join(d, "images", "art4apps")):
        raise AssertionError(f"UPMOE_TESTDATA={d} holds no images/art4apps: run tools/fetch-testdata {d}")
    return d


def base_plus_ext(path):
    """webdataset.tariterators.base_plus_ext: (key, extension) of a member name."""
    m = re.match(r"^((?:.*/|)[^.]+)[.]([^/]*)$", path)
    if not m:
        return None, None
    return m.group(1), m.group(2)


def group_by_keys(members):
    """webdataset.tariterators.group_by_keys over (name, bytes) pairs: a new sample starts whenever the key
    changes; a repeated extension within one sample is an error there, so it is here."""
    current = None
    for name, data in members:
        key, ext = base_plus_ext(name)
        if key is None:
            continue
        ext = ext.lower()
        if current is None or key != current["__key__"]:
            if current:
                yield current
            current = {"__key__": key}
        if ext in current:
            raise AssertionError(f"{name}: duplicate file name in the tar file ({ext} in {sorted(current)})")
        current[ext] = data
    if current:
        yield current


def read_members(path):
    """(TarInfo, bytes) of every member of a shard, in order, read fully with tarfile."""
    out = []
    with tarfile.open(path, "r:") as t:
        for info in t:
            data = t.extractfile(info).read() if info.isfile() else None
            out.append((info, data))
    return out


def read_samples(paths):
    """WebDataset samples of the shards, in order."""
    members = []
    for p in paths:
        members += [(i.name, d) for i, d in read_members(p)]
    return list(group_by_keys(members))


def shard_files(out, prefix="shard"):
    return sorted(os.path.join(out, n) for n in os.listdir(out) if re.fullmatch(re.escape(prefix) + r"-\d{6}\.tar", n))


def member_cost(size, name_len=20):
    """Bytes one member takes in a ustar archive: a header block and the data padded to 512."""
    assert name_len <= 100
    return 512 + (size + 511) // 512 * 512


def folder_samples(root, exts=(".jpg",)):
    """(path, class index) of DIR/<class>/<file> in the documented order: classes and files sorted by name."""
    classes = sorted(d for d in os.listdir(root) if not d.startswith(".") and os.path.isdir(os.path.join(root, d)))
    out = []
    for ci, c in enumerate(classes):
        for f in sorted(os.listdir(os.path.join(root, c))):
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in exts:
                out.append((os.path.join(root, c, f), ci))
    return classes, out


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


class ShardTestCase(unittest.TestCase):
    """Each test gets a temporary folder; run() drives the real binary."""

    @classmethod
    def setUpClass(cls):
        cls.data = testdata()
        if not os.access(BIN, os.X_OK):
            raise AssertionError(f"{BIN} is not built")

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="upmoe-shard-test-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run_shard(self, *args, check=0, stderr_tty=False):
        argv = [BIN] + [str(a) for a in args]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=240, cwd=self.tmp)
        if check is not None:
            self.assertEqual(p.returncode, check, f"{argv} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
        return p

    def shard_json(self, *args):
        p = self.run_shard(*args, "--json")
        return json.loads(p.stdout), p

    def fails(self, code, *args, contains=()):
        """Exit code `code`, exactly one line 'upmoe-shard: error: ...' naming every string in contains,
        and nothing on stdout."""
        p = self.run_shard(*args, check=code)
        lines = p.stderr.splitlines()
        self.assertEqual(len(lines), 1, f"{args}: expected one error line, got:\n{p.stderr}")
        self.assertTrue(lines[0].startswith("upmoe-shard: error: "), lines[0])
        for c in ([contains] if isinstance(contains, str) else contains):
            self.assertIn(c, lines[0])
        self.assertEqual(p.stdout, "")
        return lines[0]

    def catalog(self, *args):
        db = os.path.join(self.tmp, "catalog.db")
        p = subprocess.run([CATALOG_BIN, "--catalog", db] + [str(a) for a in args], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(p.returncode, 0, f"upmoe-catalog {args}: {p.stderr}")
        return p.stdout

    def assert_catalog_counts(self, url, nshards, nsamples):
        """The printed pattern, registered with upmoe-catalog, expands to the shards written."""
        self.catalog("init")
        self.catalog("add", "task", "t", "--formulation", "vocab-mlm", "--input", "txt=text")
        self.catalog("add", "dataset", "d", "--task", "t", "--batch", "4", "--url", url, "--samples", nsamples)
        d = json.loads(self.catalog("show", "dataset", "d", "--json"))
        self.assertEqual(d["num_shards"], nshards)
        self.assertEqual(d["url"], url)
        self.assertEqual(d["num_samples"], nsamples)
