"""Shared helpers for the upmoe-catalog CLI tests: run the real binary against a real catalog file in
a fresh temporary directory, with no inherited UPMOE_* settings."""
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import unittest

BIN = os.environ.get("UPMOE_CATALOG_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "upmoe-catalog")


PAPER = os.environ.get("UPMOE_PAPER") or os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "shared", "paper", "uni-perceiver-moe.txt")

# Keys of the JSON objects, in the order catalog/json_out.c writes them.
TASK_KEYS = ["name", "formulation", "causal", "inputs", "target_field", "target_modality", "label_set", "prompt",
             "max_text_len", "max_target_len", "loss_weight", "notes"]
DATASET_KEYS = ["name", "task", "split", "url", "num_samples", "num_shards", "sampling_weight", "loss_weight",
                "batch_size", "label_set", "augment", "license", "notes"]
LABELSET_KEYS = ["name", "synonyms", "notes", "labels"]
MIXTURE_KEYS = ["name", "notes", "datasets"]
MEMBER_KEYS = ["dataset", "sampling_weight", "loss_weight"]


def split_table(text, first=None):
    """An aligned table inside text: the header line (the first non-empty line, or the first line whose first
    word is `first`) and the lines after it up to a blank line. Returns (headers, offsets, lines)."""
    lines = text.splitlines()
    start = None
    for i, line in enumerate(lines):
        words = line.split()
        if words and (first is None or words[0] == first):
            start = i
            break
    if start is None:
        raise AssertionError(f"no table (header {first!r}) in:\n{text}")
    header = lines[start]
    body = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        body.append(line)
    offsets = [m.start() for m in re.finditer(r"\S+", header)]
    return header.split(), offsets, body


class CatalogTestCase(unittest.TestCase):
    """Each test gets its own temporary HOME and catalog path."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="upmoe-test-")
        self.db = os.path.join(self.tmp, "catalog.db")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("UPMOE_")}
        self.env["HOME"] = self.tmp

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run_cli(self, *args, catalog=True, env=None, stdin=None, check=None):
        """Runs upmoe-catalog; returns CompletedProcess. check=0/1/2 asserts the exit code."""
        argv = [BIN] + (["--catalog", self.db] if catalog else []) + [str(a) for a in args]
        p = subprocess.run(argv, capture_output=True, text=True, env=env or self.env, input=stdin,
                           timeout=120, cwd=self.tmp)
        if check is not None:
            self.assertEqual(p.returncode, check,
                             f"{argv} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
        return p

    def ok(self, *args, **kw):
        return self.run_cli(*args, check=0, **kw)

    def json_of(self, *args):
        return json.loads(self.ok(*args, "--json").stdout)

    def fails(self, code, *args, contains=None, **kw):
        """Asserts the exit code, one 'upmoe-catalog: error: ...' line, and that it names `contains`."""
        p = self.run_cli(*args, check=code, **kw)
        lines = [l for l in p.stderr.splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, f"expected one error line, got:\n{p.stderr}")
        self.assertTrue(lines[0].startswith("upmoe-catalog: error: "), lines[0])
        if contains:
            self.assertIn(contains, lines[0])
        return p

    def init(self, preset=True):
        return self.ok("init", *(["--preset", "uniperceiver-moe"] if preset else []))

    def snapshot(self):
        """Every row of every table, to assert that a failed command changed nothing."""
        con = sqlite3.connect(self.db)
        try:
            tables = [r[0] for r in con.execute(
                "SELECT name FROM sqlite_schema WHERE type='table' ORDER BY name")]
            return {t: con.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in tables}
        finally:
            con.close()

    # ---- helpers added for the CLI suites ----

    def write(self, name, content, mode="w"):
        """Writes a file under the temporary directory and returns its path."""
        path = os.path.join(self.tmp, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            f.write(content)
        return path

    def file_bytes(self, path=None):
        with open(path or self.db, "rb") as f:
            return f.read()

    def table(self, text, first=None):
        """Parses an aligned table and asserts its alignment: every column starts at the header's offset in
        every row (left-aligned cells start there, right-aligned ones all end at the column's right edge), and
        two spaces separate columns. Returns a list of {header: cell} dicts."""
        headers, offsets, body = split_table(text, first)
        n = len(headers)
        self.assertEqual(len(offsets), n, f"header words and offsets differ: {headers}")
        rows = []
        spans = [[] for _ in range(n)]
        for line in body:
            cells = []
            for j in range(n):
                lo = offsets[j]
                hi = offsets[j + 1] if j + 1 < n else len(line)
                if j + 1 < n:
                    self.assertEqual(line[hi - 2:hi], "  ",
                                     f"column {headers[j + 1]} does not start at offset {hi} in:\n{line}\n{text}")
                if j > 0:
                    self.assertEqual(line[lo - 2:lo], "  ", f"no column gap before {headers[j]} in:\n{line}")
                raw = line[lo:hi] if j + 1 < n else line[lo:]
                cell = raw.strip()
                if cell:
                    s0 = lo + len(raw) - len(raw.lstrip())
                    spans[j].append((s0, s0 + len(cell)))
                cells.append(cell)
            rows.append(dict(zip(headers, cells)))
        for j in range(n - 1):
            if not spans[j]:
                continue
            right_edge = offsets[j + 1] - 2
            left = all(s == offsets[j] for s, _ in spans[j])
            right = all(e == right_edge for _, e in spans[j])
            self.assertTrue(left or right, f"column {headers[j]} is neither left- nor right-aligned:\n{text}")
        return rows

    def sql(self, query, *params, path=None):
        """Reads the catalog with Python's sqlite3 (a separate connection, closed at once)."""
        con = sqlite3.connect(path or self.db)
        try:
            return con.execute(query, params).fetchall()
        finally:
            con.close()
