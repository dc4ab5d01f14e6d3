"""The issue-13 acceptance run: the default model (`--model ti`: the attribute-MoE Uni-Perceiver-Ti with every
default, 160 px) trained for 120 steps of batch 16 on a small 10-class image set (real MNIST digits as coarse
32x32 pictures of 8x8 digits, like the UCI digits of the issue's measurement; tests/trainer/digits_fixture.py:
1,500 training images, 400 held out) with `--augment none`, must classify held-out images as well as an
independent implementation of the paper's recipe does.

The bound comes from that peer on this very set: tests/trainer/peer_recipe.py (dense Ti written from the paper
and docs/model.md alone: its own initialisation, PIL data loading, torch.optim.AdamW) reached 20.3 % and
18.5 % held-out top-1 at step 120 (seeds 0, 1; chance 10 %). The test demands their mean less two standard
errors of a 400-image accuracy: 0.194 - 2 * 0.020 = 0.154. upmoe measured 19.0 %, 22.3 %, 17.0 % (seeds 1,
2, 3; this test runs seed 1); before issue 13 it stayed at ln 10 for all 120 steps (12.5 % on the 28x28
digits). The issue's own peer reached 27-35 % on its digit set (not this one); on this set neither the peer
nor upmoe reaches that in 120 steps."""
import json
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import digits_fixture  # noqa: E402
from train_fixture import BUILD, TRAIN, run, sanitized  # noqa: E402

BOUND = 0.154  # the peer's mean (0.194) less two standard errors (docstring)


class DigitsTest(unittest.TestCase):
    def test_default_ti_learns_the_digits(self):
        if sanitized():  # Ti at 160 px: ~1.5 min here, many under the sanitizers; test_learning runs in both builds
            self.skipTest("the sanitizer build trains Ti several times slower; the normal build runs this acceptance "
                          "run (tests/trainer/test_digits.py)")
        with tempfile.TemporaryDirectory(prefix="upmoe-digits-") as tmp:
            env = digits_fixture.build(tmp)
            out = os.path.join(tmp, "run")
            run(TRAIN, "--mixture", "digits", "--out", out, "--model", "ti", "--augment", "none", "--steps", 120,
                "--batch", 16, "--checkpoint-every", 0, "--log-every", 20, env=env, timeout=1400)
            p = run(os.path.join(BUILD, "upmoe-eval"), "--mixture", "digits-heldout", "--checkpoint", out,
                    "--steps", 25, "--batch", 16, "--json", env=env, timeout=600)
            res = json.loads(p.stdout)["datasets"][0]
            print(f"held-out top-1 {res['accuracy']:.3f} over {res['samples']} images (chance 0.100), "
                  f"loss {res['loss']:.3f}", file=sys.stderr)
            self.assertEqual(res["samples"], 400)
            self.assertGreaterEqual(res["accuracy"], BOUND)


if __name__ == "__main__":
    unittest.main()
