"""upmoe-safetensors against Python's own reader and writer (safetensors_io): files written by Python are
listed exactly by `ls --json`, malformed files are refused by `check` with one error line, and files
re-written by the C reader and writer (`copy`) load back in Python bit for bit."""
import json
import math
import os
import re
import shutil
import struct
import subprocess
import tempfile
import unittest

import torch

import safetensors_io as st

BIN = os.path.join(os.environ.get("UPMOE_BUILD_DIR", os.path.join(os.path.dirname(__file__), "../../build")),
                   "upmoe-safetensors")
SOURCE = os.environ.get("UPMOE_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))


def run(*args):
    return subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, timeout=60)


def sample_tensors():
    g = torch.Generator().manual_seed(5)
    return {
        "blocks.0.attn.qkv.weight": torch.randn(6, 4, generator=g),
        "blocks.0.moe.experts": torch.randn(2, 3, 4, generator=g).to(torch.bfloat16),
        "half": torch.tensor([1.0, -2.5, 65504.0, float("inf"), float("nan")], dtype=torch.float16),
        "double": torch.tensor([math.pi, -1e300, 5e-324], dtype=torch.float64),
        "step": torch.tensor(123456789012, dtype=torch.int64),  # 0-d scalar
        "ids": torch.tensor([[-1, 0], [1, 2**31 - 1]], dtype=torch.int32),
        "i16": torch.tensor([-32768, 32767], dtype=torch.int16),
        "i8": torch.tensor([-128, 127, 0], dtype=torch.int8),
        "rng_state": torch.arange(0, 256, dtype=torch.uint8).reshape(4, 4, 16),
        "mask": torch.tensor([True, False, True]),
        "empty": torch.zeros(0),
        "empty_2d": torch.zeros(3, 0, dtype=torch.int64),
        "scale": torch.tensor(-0.0),
        "naïve €": torch.ones(1, 1, 1, 1, 1, 1, 1, 1),
    }


META = {"format": "pt", "step": "1200", "config": json.dumps({"layers": 12, "experts": 8}), "note": "línea\n2"}


def raw_file(header, data=b"", length=None, pad=True):
    """Bytes of a file with header (a dict or raw JSON text), an optional false length and data."""
    head = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    if pad:
        head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head) if length is None else length) + head + data


def f32(n, begin):
    return {"dtype": "F32", "shape": [n], "data_offsets": [begin, begin + 4 * n]}


class SafetensorsTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="upm-st-py-")
        self.addCleanup(shutil.rmtree, self.tmp)

    def path(self, name):
        return os.path.join(self.tmp, name)

    def assert_same(self, got, want):
        self.assertEqual(sorted(got), sorted(want))
        for name, t in want.items():
            self.assertEqual(got[name].dtype, t.dtype, name)
            self.assertEqual(tuple(got[name].shape), tuple(t.shape), name)
            self.assertEqual(st.tensor_bytes(got[name]), st.tensor_bytes(t), name)  # bitwise: NaN, -0.0

    def test_python_round_trip(self):
        p = self.path("py.safetensors")
        tensors = sample_tensors()
        st.save(p, tensors, META)
        got, meta = st.load(p)
        self.assert_same(got, tensors)
        self.assertEqual(meta, META)
        with open(p, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
        self.assertEqual(n % 8, 0)
        self.assertEqual(os.listdir(self.tmp), ["py.safetensors"])

    def test_ls_json_reports_python_file(self):
        p = self.path("model.safetensors")
        tensors = sample_tensors()
        st.save(p, tensors, META)
        r = run("ls", p, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")
        out = json.loads(r.stdout)
        self.assertEqual(out["metadata"], META)
        off = 0
        expected = []
        for name in sorted(tensors):  # save() lays data out in name order
            nbytes = len(st.tensor_bytes(tensors[name]))
            expected.append({"name": name, "dtype": st.NAMES[tensors[name].dtype],
                             "shape": list(tensors[name].shape), "data_offsets": [off, off + nbytes], "bytes": nbytes})
            off += nbytes
        self.assertEqual(out["tensors"], expected)
        self.assertEqual(out["data_bytes"], off)
        self.assertEqual(run("ls", "--json", p).stdout, r.stdout)  # option before the file too

    def test_ls_text(self):
        p = self.path("model.safetensors")
        tensors = sample_tensors()
        st.save(p, tensors, META)
        r = run("ls", p)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(lines[-1], f"{len(tensors)} tensors, {sum(len(st.tensor_bytes(t)) for t in tensors.values())}"
                                    " bytes of data")
        self.assertEqual(lines[len(tensors):-1], ["metadata:", "  format: pt", "  step: 1200",
                                                  '  config: {"layers": 12, "experts": 8}', "  note: línea\\n2"])
        rows = [line.split() for line in lines[:len(tensors)]]
        self.assertEqual(rows[0][0], "blocks.0.attn.qkv.weight")
        self.assertEqual(rows[0][1:], ["F32", "[6,", "4]", "96"])
        step = next(r for r in rows if r[0] == "step")
        self.assertEqual(step[1:], ["I64", "[]", "8"])

    def test_check_accepts_valid_files(self):
        p = self.path("ok.safetensors")
        st.save(p, sample_tensors(), META)
        r = run("check", p)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("ok", r.stdout)
        for name, data in [("empty", raw_file({})), ("meta-only", raw_file({"__metadata__": {"a": "b"}})),
                           ("unpadded", raw_file({"a": f32(1, 0)}, b"\0" * 4, pad=False)),
                           ("unsorted", raw_file({"b": f32(1, 4), "a": f32(2, 8), "c": f32(1, 0)}, b"\0" * 16))]:
            q = self.path(name)
            with open(q, "wb") as f:
                f.write(data)
            r = run("check", q)
            self.assertEqual(r.returncode, 0, f"{name}: {r.stderr}")
            st.load(q)

    def malformed(self):
        good = {"a": f32(2, 0)}
        return [
            ("empty file", b"", "too short"),
            ("truncated length", b"\x10\0\0", "too short"),
            ("header longer than file", raw_file(good, b"\0" * 8, length=4096), "larger than"),
            ("header over 100 MB", raw_file(good, b"\0" * 8, length=2**40), "limit"),
            ("truncated data", raw_file(good, b"\0" * 5), "run past"),
            ("not JSON", raw_file(b"{not json}"), "not valid JSON"),
            ("JSON array", raw_file(b"[1, 2, 3]"), "does not start with '{'"),
            ("entry not an object", raw_file({"a": [1]}), "'a'"),
            ("unknown dtype", raw_file({"a": {"dtype": "F8_E5M2", "shape": [1], "data_offsets": [0, 1]}}, b"\0"),
             "dtype 'F8_E5M2'"),
            ("negative shape", raw_file({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8),
             "shape[0]"),
            ("overflowing shape", raw_file({"a": {"dtype": "F64", "shape": [2**32, 2**32, 2**10],
                                                  "data_offsets": [0, 8]}}, b"\0" * 8), "overflows"),
            ("shape vs offsets", raw_file({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8),
             "need 12 bytes"),
            ("offsets out of order", raw_file({"a": {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}},
                                              b"\0" * 8), "out of order"),
            ("overlap", raw_file({"a": f32(2, 0), "b": f32(2, 4)}, b"\0" * 12), "overlaps"),
            ("hole", raw_file({"a": f32(1, 0), "b": f32(1, 8)}, b"\0" * 12), "hole"),
            ("trailing bytes", raw_file(good, b"\0" * 12), "4 trailing bytes"),
            ("metadata not strings", raw_file({"__metadata__": {"epoch": 3}, **good}, b"\0" * 8), "not a string"),
            ("duplicate name", raw_file(b'{"a":' + json.dumps(f32(1, 0)).encode() + b',"a":'
                                        + json.dumps(f32(1, 4)).encode() + b"}", b"\0" * 8), "twice"),
            ("bad UTF-8", raw_file(b'{"\xff":' + json.dumps(f32(1, 0)).encode() + b"}", b"\0" * 4), "UTF-8"),
        ]

    def test_check_refuses_malformed_files(self):
        for what, data, needle in self.malformed():
            with self.subTest(what):
                p = self.path(what.replace(" ", "_") + ".safetensors")
                with open(p, "wb") as f:
                    f.write(data)
                r = run("check", p)
                self.assertEqual(r.returncode, 1, f"{what}: {r.stdout}{r.stderr}")
                self.assertEqual(r.stdout, "")
                self.assertRegex(r.stderr, r"^upmoe-safetensors: error: [^\n]+\n$")
                self.assertIn(p, r.stderr)
                self.assertIn(needle, r.stderr)
                with self.assertRaises(ValueError, msg=what):  # the Python reader agrees
                    st.load(p)
                r = run("ls", p, "--json")
                self.assertEqual((r.returncode, r.stdout), (1, ""))

    def test_copy_round_trip_through_c(self):
        src, out = self.path("src.safetensors"), self.path("out.safetensors")
        tensors = sample_tensors()
        tensors["big"] = torch.randn(1 << 20, generator=torch.Generator().manual_seed(1))  # 4 MiB, streamed
        st.save(src, tensors, META)
        r = run("copy", src, out)
        self.assertEqual(r.returncode, 0, r.stderr)
        got, meta = st.load(out)
        self.assert_same(got, tensors)
        self.assertEqual(meta, META)
        # Both writers produce the same canonical form: compact JSON, name order, space padding.
        with open(src, "rb") as a, open(out, "rb") as b:
            self.assertEqual(a.read(), b.read())
        self.assertEqual(sorted(os.listdir(self.tmp)), ["out.safetensors", "src.safetensors"])

    def test_copy_normalises_other_layouts(self):
        # Unpadded header with spaces in the JSON, data order different from name order.
        data = struct.pack("<3f", 1, 2, 3) + struct.pack("<q", -7)
        header = {"__metadata__": {"k": "v"}, "z": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
                  "a": {"dtype": "I64", "shape": [], "data_offsets": [12, 20]}}
        src, out = self.path("other.safetensors"), self.path("norm.safetensors")
        with open(src, "wb") as f:
            f.write(raw_file(json.dumps(header, indent=1).encode(), data, pad=False))
        self.assertEqual(run("copy", src, out).returncode, 0)
        with open(out, "rb") as f:
            raw = f.read()
        n = struct.unpack("<Q", raw[:8])[0]
        self.assertEqual(n % 8, 0)
        self.assertEqual(raw[8 + n:], data)  # data order kept
        self.assertEqual(list(json.loads(raw[8:8 + n])), ["__metadata__", "z", "a"])
        got, meta = st.load(out)
        self.assertEqual(meta, {"k": "v"})
        self.assertEqual(got["z"].tolist(), [1.0, 2.0, 3.0])
        self.assertEqual((got["a"].shape, got["a"].item()), (torch.Size([]), -7))
        # In place: the reader's mapping stays valid while the writer replaces the file.
        self.assertEqual(run("copy", out, out).returncode, 0)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), raw)
        self.assertEqual(sorted(os.listdir(self.tmp)), ["norm.safetensors", "other.safetensors"])

    def test_copy_refuses_malformed_and_keeps_target(self):
        bad, out = self.path("bad.safetensors"), self.path("out.safetensors")
        with open(bad, "wb") as f:
            f.write(raw_file({"a": f32(1, 0), "b": f32(1, 8)}, b"\0" * 12))
        with open(out, "wb") as f:
            f.write(b"previous")
        r = run("copy", bad, out)
        self.assertEqual(r.returncode, 1)
        self.assertIn("hole", r.stderr)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), b"previous")
        r = run("copy", self.path("ok-missing"), os.path.join(self.tmp, "no", "such", "dir"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot open", r.stderr)
        st.save(self.path("ok.safetensors"), {"x": torch.ones(2)})
        r = run("copy", self.path("ok.safetensors"), os.path.join(self.tmp, "no", "out.safetensors"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot create", r.stderr)
        self.assertEqual(sorted(os.listdir(self.tmp)), ["bad.safetensors", "ok.safetensors", "out.safetensors"])

    def test_usage(self):
        for args in [(), ("frobnicate", "x"), ("ls",), ("check",), ("copy", "a"), ("check", "a", "b"),
                     ("ls", "a", "--bogus"), ("check", "a", "--json")]:
            with self.subTest(args=args):
                r = run(*args)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertRegex(r.stderr, r"^upmoe-safetensors: error: .*--help")
        r = run("--help")
        self.assertEqual(r.returncode, 0)
        for word in ("ls FILE [--json]", "check FILE", "copy IN OUT", "exit status"):
            self.assertIn(word, r.stdout)
        with open(os.path.join(SOURCE, "CMakeLists.txt")) as f:
            version = re.search(r"project\(upmoe VERSION (\S+)", f.read()).group(1)
        r = run("--version")
        self.assertEqual(r.returncode, 0)
        self.assertTrue(r.stdout.startswith(f"upmoe-safetensors {version} (cJSON "), r.stdout)
        r = run("check", self.path("missing.safetensors"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot open", r.stderr)


if __name__ == "__main__":
    unittest.main()
