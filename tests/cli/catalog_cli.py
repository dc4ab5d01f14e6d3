"""Shared helpers for the upmoe-catalog CLI tests: run the real binary against a real catalog file in
a fresh temporary directory, with no inherited UPMOE_* settings."""
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import unittest

BIN = os.environ.get("UPMOE_CATALOG_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "upmoe-catalog")


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
