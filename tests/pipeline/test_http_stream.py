"""HTTP shard streaming end to end: WebDataset shards written with Python's tarfile from real JPEGs and
Gutenberg text, served by a real nginx (directly, or through tests/pipeline/faultproxy.py to inject
resets, 5xx, 404s and stalls), read by build/upmoe-wds-cat. What arrives is compared, field by field
(size + FNV-1a hash), with Python's own reading of the local files grouped by webdataset's regex."""
import glob
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faultproxy import FaultProxy, Rule  # noqa: E402
from nginx_server import NginxServer, free_port  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.environ.get("UPMOE_BUILD_DIR") or os.path.join(HERE, "..", "..", "build")
BIN = os.path.join(BUILD, "upmoe-wds-cat")
TESTDATA = os.environ.get("UPMOE_TESTDATA") or os.path.expanduser("~/.cache/upmoe/testdata")
# Fast failure detection for tests; the defaults (30 s windows, 1 s backoff) are for real datasets.
FAST = ["--backoff", "0.05", "--max-backoff", "0.2", "--low-speed-time", "1", "--low-speed-limit", "1000",
        "--connect-timeout", "5"]


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def python_samples(path):
    """The samples of a local shard as webdataset groups them: [(key, [(ext, size, fnv), ...sorted])]."""
    out = []
    with tarfile.open(path, "r|*") as t:
        for m in t:
            name = m.name
            if not m.isreg() or ("/" not in name and name.startswith("__") and name.endswith("__")):
                continue
            if re.match(r"__[^/]*__($|/)", name):
                continue
            mt = re.match(r"^((?:.*/|)[^.]+)[.]([^/]*)$", name)
            if not mt:
                continue
            key, ext = mt.group(1), mt.group(2).lower()
            data = t.extractfile(m).read()
            if not out or out[-1][0] != key:
                out.append((key, {}))
            out[-1][1][ext] = data
    return [(k, sorted((e, len(d), fnv1a64(d)) for e, d in f.items())) for k, f in out]


def real_inputs():
    """Real JPEGs (with their class and word) and Gutenberg paragraphs from the test data."""
    jpgs = sorted(glob.glob(os.path.join(TESTDATA, "images", "art4apps", "*", "*.jpg")))
    text_path = os.path.join(TESTDATA, "text", "pg1661.txt")
    if len(jpgs) < 60 or not os.path.exists(text_path):
        raise AssertionError(f"test data missing under {TESTDATA} (need images/art4apps and text/pg1661.txt); "
                             "run tools/fetch-testdata")
    with open(text_path, encoding="utf-8", errors="replace") as f:
        paragraphs = [p.strip() for p in f.read().split("\n\n") if len(p.strip()) > 200]
    return jpgs, paragraphs


def add(t, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1700000000
    t.addfile(info, io.BytesIO(data))


def write_shards(root, n_shards=3, per_shard=20, skip=()):
    """shard-K.tar with samples sampleK_NNN {jpg, cls, txt, json}; shard 2 also holds webdataset corner
    cases (dots in a directory, an upper-case extension, a directory entry). Returns the local paths."""
    jpgs, paragraphs = real_inputs()
    paths = []
    for k in range(n_shards):
        path = os.path.join(root, f"shard-{k}.tar")
        paths.append(path)
        if k in skip:
            continue
        with tarfile.open(path, "w") as t:
            for i in range(per_shard):
                j = jpgs[(k * per_shard + i) * 7 % len(jpgs)]
                cls, word = os.path.basename(os.path.dirname(j)), os.path.basename(j)[:-4]
                key = f"sample{k}_{i:03d}"
                with open(j, "rb") as f:
                    add(t, key + ".jpg", f.read())
                add(t, key + ".cls", cls.encode())
                add(t, key + ".txt", f"a picture of a {word}".encode())
                add(t, key + ".json", json.dumps({"word": word, "text": paragraphs[i % len(paragraphs)]}).encode())
            if k == 2:
                d = tarfile.TarInfo("dir.v1")
                d.type = tarfile.DIRTYPE
                t.addfile(d)
                with open(jpgs[1], "rb") as f:
                    add(t, "dir.v1/x.seg.JPG", f.read())
                add(t, "dir.v1/x.TXT", b"upper-case extensions are lower-cased")
    return paths


class HttpStreamTest(unittest.TestCase):
    def setUp(self):
        if not os.access(BIN, os.X_OK):
            self.fail(f"{BIN} is not built (ninja -C build)")
        self.tmp = tempfile.mkdtemp(prefix="upmoe-http-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.www = os.path.join(self.tmp, "www")
        os.makedirs(self.www)
        self.started = time.monotonic()

    def tearDown(self):
        self.assertLess(time.monotonic() - self.started, 20, "each test must finish within 20 s")

    def serve(self, rules=()):
        """Starts nginx on self.www and a fault proxy in front of it; both stop at cleanup."""
        self.nginx = NginxServer(self.www).start()
        self.addCleanup(self.nginx.stop)
        self.proxy = FaultProxy(self.nginx.port, rules).start()
        self.addCleanup(self.proxy.stop)
        return self.proxy

    def cat(self, *args, expect=None):
        p = subprocess.run([BIN, "--json", "--stats", *FAST, *args], capture_output=True, text=True, timeout=60)
        if expect is not None:
            self.assertEqual(p.returncode, expect, f"exit {p.returncode}\nstdout:\n{p.stdout[-2000:]}\nstderr:\n{p.stderr}")
        p.samples = [json.loads(line) for line in p.stdout.splitlines()]
        p.errors = [line for line in p.stderr.splitlines() if not line.startswith("upmoe-wds-cat: stats:")]
        stats = [line for line in p.stderr.splitlines() if line.startswith("upmoe-wds-cat: stats:")]
        p.stats = dict(kv.split("=") for kv in stats[0].split()[2:]) if stats else {}
        return p

    @staticmethod
    def as_python(samples):
        return [(s["key"], [(f["ext"], f["size"], int(f["fnv1a64"], 16)) for f in s["fields"]]) for s in samples]

    def expected(self, paths):
        return [s for p in paths if os.path.exists(p) for s in python_samples(p)]

    # (a)
    def test_all_samples_arrive_in_order_with_the_same_bytes(self):
        paths = write_shards(self.www)
        self.serve()
        pattern = self.nginx.url("shard-{0..2}.tar")
        p = self.cat(pattern, expect=0)
        self.assertEqual(p.errors, [])
        want = self.expected(paths)
        self.assertEqual(len(want), 61)  # 3 x 20 + the corner-case sample (two members, one key)
        corner = [fields for key, fields in want if key == "dir.v1/x"]  # Python's grouping of the corner cases
        self.assertEqual([[(e, n) for e, n, _ in f] for f in corner],
                         [[("seg.jpg", os.path.getsize(real_inputs()[0][1])), ("txt", 37)]])
        self.assertEqual(self.as_python(p.samples), want)
        self.assertEqual([s["url"] for s in p.samples[:21]], [self.nginx.url("shard-0.tar")] * 20 +
                         [self.nginx.url("shard-1.tar")])
        self.assertEqual([s["index"] for s in p.samples[:21]], list(range(20)) + [0])
        local = self.cat(os.path.join(self.www, "shard-{0..2}.tar"), expect=0)
        self.assertEqual(self.as_python(local.samples), want)
        self.assertEqual(p.stats["retries"], "0")

    def test_https_with_a_private_ca(self):
        """Real TLS: nginx with a certificate for 127.0.0.1 that only UPMOE_CA_BUNDLE trusts."""
        paths = write_shards(self.www, n_shards=2)
        cert, key = os.path.join(self.tmp, "cert.pem"), os.path.join(self.tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True, timeout=60)
        nginx = NginxServer(self.www, tls=(cert, key)).start()
        self.addCleanup(nginx.stop)
        pattern = nginx.url("shard-{0..1}.tar")
        self.assertTrue(pattern.startswith("https://"))
        env = dict(os.environ, UPMOE_CA_BUNDLE=cert)
        p = subprocess.run([BIN, "--json", pattern], capture_output=True, text=True, timeout=60, env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.as_python([json.loads(l) for l in p.stdout.splitlines()]), self.expected(paths))
        # Without the CA the certificate is refused at once (not retried), naming the URL.
        env.pop("UPMOE_CA_BUNDLE")
        t0 = time.monotonic()
        p = subprocess.run([BIN, "--json", pattern], capture_output=True, text=True, timeout=60, env=env)
        self.assertEqual(p.returncode, 1)
        self.assertIn(nginx.url("shard-0.tar"), p.stderr)
        self.assertRegex(p.stderr.lower(), "certificate|ssl")
        self.assertLess(time.monotonic() - t0, 5)

    # (b)
    def test_reset_mid_shard_resumes_with_a_range_request(self):
        paths = write_shards(self.www)
        size = os.path.getsize(paths[1])
        cut = size * 2 // 5
        self.serve([Rule("/shard-1.tar", "reset", after=cut)])
        p = self.cat(self.proxy.url("shard-{0..2}.tar"), expect=0)
        self.assertEqual(self.as_python(p.samples), self.expected(paths))
        seen = self.proxy.seen("/shard-1.tar")
        self.assertEqual([r["action"] for r in seen], ["reset", "forward"], seen)
        self.assertEqual(seen[0]["sent"], cut)
        self.assertEqual(seen[1]["range"], f"bytes={cut}-")  # resumed exactly after the last byte received
        self.assertEqual(seen[1]["status"], 206)
        self.assertEqual(seen[1]["sent"], size - cut)
        self.assertEqual(p.stats["retries"], "1")
        self.assertTrue(any(f'"GET /shard-1.tar HTTP/1.1" 206 {size - cut} range="bytes={cut}-"' in line
                            for line in self.nginx.access_log()), self.nginx.access_log())

    def test_reset_then_server_ignoring_range_skips_what_was_read(self):
        paths = write_shards(self.www)
        cut = os.path.getsize(paths[0]) // 3
        self.serve([Rule("/shard-0.tar", "reset", after=cut), Rule("/shard-0.tar", "ignore_range"),
                    Rule("/shard-1.tar", "close", after=1000)])
        p = self.cat(self.proxy.url("shard-{0..2}.tar"), expect=0)
        self.assertEqual(self.as_python(p.samples), self.expected(paths))
        seen = self.proxy.seen("/shard-0.tar")
        self.assertEqual([(r["range"], r["status"]) for r in seen], [(None, 200), (f"bytes={cut}-", 200)])
        self.assertEqual([r["range"] for r in self.proxy.seen("/shard-1.tar")], [None, "bytes=1000-"])

    # (c)
    def test_server_errors_are_retried(self):
        paths = write_shards(self.www)
        self.serve([Rule("/shard-0.tar", "status", status=500, count=2)])
        p = self.cat(self.proxy.url("shard-{0..2}.tar"), expect=0)
        self.assertEqual(self.as_python(p.samples), self.expected(paths))
        self.assertEqual([r["status"] for r in self.proxy.seen("/shard-0.tar")], [500, 500, 200])
        self.assertEqual(p.stats["retries"], "2")
        self.assertEqual(p.errors, [])

    def test_retries_run_out(self):
        write_shards(self.www, n_shards=1)
        self.serve([Rule("/shard-0.tar", "status", status=503, count=None)])
        url = self.proxy.url("shard-0.tar")
        p = self.cat("--retries", "2", url, expect=1)
        self.assertEqual(len(self.proxy.seen("/shard-0.tar")), 3)
        self.assertEqual(len(p.errors), 1, p.errors)
        self.assertTrue(p.errors[0].startswith(f"upmoe-wds-cat: error: {url}: HTTP 503"), p.errors)
        self.assertIn("gave up after 2 retries", p.errors[0])

    def test_connection_refused_is_retried_then_reported(self):
        url = f"http://127.0.0.1:{free_port()}/shard-0.tar"
        p = self.cat("--retries", "1", url, expect=1)
        self.assertEqual(len(p.errors), 1, p.errors)
        self.assertTrue(p.errors[0].startswith(f"upmoe-wds-cat: error: {url}: curl error 7 "), p.errors)
        self.assertIn("gave up after 1 retries", p.errors[0])

    # (d)
    def test_missing_shard_is_skipped_and_named(self):
        paths = write_shards(self.www, n_shards=4, skip=(2,))
        self.serve([Rule("/shard-3.tar", "status", status=403)])
        p = self.cat(self.proxy.url("shard-{0..3}.tar"), expect=1)
        self.assertEqual(self.as_python(p.samples), self.expected(paths[:2]))
        self.assertEqual(p.errors, [
            f"upmoe-wds-cat: error: {self.proxy.url('shard-2.tar')}: HTTP 404 Not Found at byte 0 (not retried)",
            f"upmoe-wds-cat: error: {self.proxy.url('shard-3.tar')}: HTTP 403 Injected at byte 0 (not retried)"])
        self.assertEqual(len(self.proxy.seen("/shard-2.tar")), 1)  # 404 is final: no retries
        self.assertEqual(len(self.proxy.seen("/shard-3.tar")), 1)
        self.assertEqual(p.stats["bad_shards"], "2")

    # (e)
    def test_stall_times_out_and_resumes(self):
        paths = write_shards(self.www)
        cut = os.path.getsize(paths[1]) // 2
        self.serve([Rule("/shard-1.tar", "stall", after=cut, seconds=60), Rule("/shard-2.tar", "stall", seconds=60)])
        t0 = time.monotonic()
        p = self.cat(self.proxy.url("shard-{0..2}.tar"), expect=0)
        elapsed = time.monotonic() - t0
        self.assertEqual(self.as_python(p.samples), self.expected(paths))
        self.assertLess(elapsed, 10, "a 1 s low-speed window should end each 60 s stall within ~2 s")
        self.assertEqual([r["range"] for r in self.proxy.seen("/shard-1.tar")], [None, f"bytes={cut}-"])
        self.assertEqual([r["range"] for r in self.proxy.seen("/shard-2.tar")], [None, None])  # stalled before headers
        self.assertEqual(p.stats["retries"], "2")

    # (f)
    def test_bad_shard_budget(self):
        write_shards(self.www, n_shards=5, skip=(1, 2, 3, 4))
        self.serve()
        p = self.cat("--max-bad-shards", "3", self.proxy.url("shard-{0..4}.tar"), expect=1)
        self.assertEqual(len(p.samples), 20)
        self.assertEqual(len(p.errors), 5, p.errors)
        self.assertTrue(p.errors[-1].startswith(
            f"upmoe-wds-cat: error: dataset stream: 4 bad shards (limit 3): {self.proxy.url('shard-4.tar')}: HTTP 404"),
            p.errors)

    def test_bad_sample_budget(self):
        jpgs, _ = real_inputs()
        with tarfile.open(os.path.join(self.www, "dups.tar"), "w") as t:
            for i in range(10):
                with open(jpgs[i], "rb") as f:
                    data = f.read()
                add(t, f"s{i}.jpg", data)
                if i in (3, 4):
                    add(t, f"s{i}.jpg", data)  # the same extension twice: a bad sample
        self.serve()
        url = self.proxy.url("dups.tar")
        p = self.cat(url, expect=1)  # no budget: both reported, the other 8 read
        self.assertEqual([s["key"] for s in p.samples], ["s0", "s1", "s2", "s5", "s6", "s7", "s8", "s9"])
        self.assertEqual(p.errors, [f'upmoe-wds-cat: error: {url}: s{i}: duplicate extension "jpg" in the sample '
                                    f'(member "s{i}.jpg")' for i in (3, 4)])
        # the limit applies once 5 samples were met: s0 s1 s2, bad s3, bad s4 -> 2 of 5
        p = self.cat("--max-bad-sample-ratio", "0.1", "--min-samples", "5", url, expect=1)
        self.assertEqual([s["key"] for s in p.samples], ["s0", "s1", "s2"])
        self.assertEqual(len(p.errors), 3, p.errors)
        self.assertTrue(p.errors[-1].startswith("upmoe-wds-cat: error: dataset stream: 2 bad samples of 5 (40.00%, "
                                                f"limit 10.00%): {url}: s4: duplicate extension"), p.errors)

    # (g)
    def test_refused_schemes(self):
        write_shards(self.www, n_shards=1)
        self.serve()
        local = os.path.join(self.www, "shard-0.tar")
        for url in ("ftp://127.0.0.1/shard-0.tar", "pipe:cat", "gopher://127.0.0.1/shard.tar",
                    self.proxy.url("shard-0.tar").replace("http:", "ftp:")):
            p = self.cat(url, expect=2)
            self.assertEqual(p.samples, [])
            self.assertEqual(len(p.errors), 1, p.errors)
            self.assertIn("unsupported scheme", p.errors[0])
        # webdataset's "pipe:cat FILE" also has a space, refused on its own; a good URL beside a bad one
        # is not read either: patterns are checked before anything is opened
        p = self.cat(self.proxy.url("shard-0.tar"), f"pipe:cat {local}", expect=2)
        self.assertEqual((p.samples, len(p.errors)), ([], 1))
        self.assertEqual(self.proxy.seen(), [])

    def test_resume_position_skips_shards_without_opening_them(self):
        paths = write_shards(self.www)
        self.serve()
        p = self.cat("--start", "1:7", self.proxy.url("shard-{0..2}.tar"), expect=0)
        self.assertEqual(self.as_python(p.samples), self.expected(paths)[27:])
        self.assertEqual(p.samples[0]["index"], 7)
        self.assertEqual(self.proxy.seen("/shard-0.tar"), [])
        self.assertEqual(p.stats["skipped_samples"], "7")


if __name__ == "__main__":
    unittest.main()
