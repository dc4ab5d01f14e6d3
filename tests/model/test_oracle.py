# The C model against the PyTorch oracle: upmoe-model-oracle writes params, inputs, noise and keep
# tables (vocabulary formulations: read-outs and candidates), outputs and gradients of one training
# step; oracle_compare recomputes all of it in float64 and every tensor must agree to 1e-4 of its
# largest value.
import math
import json
import os
import subprocess
import sys
import tempfile
import unittest

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import oracle_compare  # noqa: E402


def oracle_bin():
    return os.path.join(os.environ.get("UPMOE_BUILD_DIR", ""), "upmoe-model-oracle")


class OracleTests(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.dir.cleanup()

    def oracle(self, *args):
        """Runs the C tool, compares its file, and returns (tensors, metadata) for further checks."""
        if not os.environ.get("UPMOE_BUILD_DIR"):
            self.fail("UPMOE_BUILD_DIR is not set: it must name the build directory holding upmoe-model-oracle")
        exe = oracle_bin()
        if not os.access(exe, os.X_OK):
            self.fail("%s does not exist: upmoe-model-oracle is a required part of the build" % exe)
        out = os.path.join(self.dir.name, "oracle.safetensors")
        cmd = [exe] + [str(a) for a in args] + ["--out", out]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        self.assertEqual(p.returncode, 0, "%s failed:\n%s%s" % (" ".join(cmd), p.stdout.decode(errors="replace"),
                                                                 p.stderr.decode(errors="replace")))
        res = oracle_compare.compare(out)
        self.assertTrue(all(r[3] for r in res), "%s\n%s" % (" ".join(cmd), oracle_compare.summary(res, 12)))
        tensors, meta = oracle_compare.load(out)
        return {k: oracle_compare._tensor(v) for k, v in tensors.items()}, meta

    def check_config(self, meta, **want):
        cfg = oracle_compare._json(meta["config"])
        for k, v in want.items():
            self.assertEqual(type(v)(cfg[k]), v, "config %s" % k)

    def test_label_image_dense(self):
        T, meta = self.oracle("--formulation", "label", "--input", "image", "--moe", "none", "--seed", 1)
        self.check_config(meta, moe="none")
        self.assertEqual(list(T["out.logits"].shape), [4, 5])
        self.assertEqual(list(T["input.0.pixels"].shape), [4, 1, 3, 32, 32])
        self.assertEqual(list(T["target.0.ids"].shape)[0], 5)

    def test_label_video_moe_noise(self):
        """Video input: 3 frames, the learned temporal embedding on top of the per-frame sin-cos grid."""
        T, meta = self.oracle("--formulation", "label", "--input", "video", "--moe", "attribute", "--gate-noise",
                              "--seed", 21)
        self.assertEqual(list(T["input.0.pixels"].shape), [4, 3, 3, 32, 32])
        self.assertEqual(json.loads(meta["segments"])["input"][0]["kind"], "video")
        self.assertGreater(T["grad.embed.temporal"][:3].abs().sum().item(), 0)  # frames 0..2 trained
        self.assertEqual(T["grad.embed.temporal"][3:].abs().sum().item(), 0)    # frames never seen

    def test_label_image_moe(self):
        T, meta = self.oracle("--formulation", "label", "--input", "image", "--moe", "attribute", "--seed", 2)
        self.check_config(meta, moe="attribute", experts=4, topk=2, gate_renorm=1)
        self.assertEqual(list(T["blocks.0.attn.qkv.weight"].shape), [4, 192, 64])

    def test_modality_routing(self):
        """Modality routing (issue 18): each gate reads an embedding of the token's modality (image, video or
        text) instead of its 8 attribute bits; forward and every gradient against the reference, on image and
        text tokens in one pass (two modalities, so two rows of each gate), on video, and with gate noise."""
        T, meta = self.oracle("--formulation", "label", "--input", "image+text", "--moe", "modality", "--seed", 11)
        self.check_config(meta, moe="modality", experts=4, topk=2)
        self.assertEqual(list(T["blocks.0.attn.gate.modality.weight"].shape), [64, 3])
        self.assertNotIn("blocks.0.attn.gate.attr.weight", T)
        # the image, text and target-text rows of the embedding received gradients; video's did not
        g = T["grad.blocks.0.mlp.gate1.modality.weight"]
        self.assertGreater(g[:, 0].abs().sum().item(), 0)
        self.assertGreater(g[:, 2].abs().sum().item(), 0)
        self.assertEqual(g[:, 1].abs().sum().item(), 0)
        T, meta = self.oracle("--formulation", "label", "--input", "video", "--moe", "modality", "--gate-noise",
                              "--seed", 12)
        g = T["grad.blocks.0.mlp.gate1.modality.weight"]
        self.assertGreater(g[:, 1].abs().sum().item(), 0)  # video tokens: the video row
        self.assertEqual(g[:, 0].abs().sum().item(), 0)
        self.oracle("--formulation", "pair", "--input", "image", "--moe", "modality", "--seed", 13)

    def test_task_routing(self):
        """Task routing (issue 18): each gate reads an embedding of the pass's task id; forward and every
        gradient against the reference for every formulation (label and pair on image+text, the two
        vocabulary ones), with gate noise; only the pass's row of the task embedding learns."""
        T, meta = self.oracle("--formulation", "label", "--input", "image+text", "--moe", "task", "--task-slots", 3,
                              "--task-id", 2, "--gate-noise", "--seed", 31)
        self.check_config(meta, moe="task", experts=4, topk=2, task_slots=3)
        self.assertEqual(list(T["blocks.0.attn.gate.task.weight"].shape), [64, 3])
        g = T["grad.blocks.0.mlp.gate1.task.weight"]
        self.assertGreater(g[:, 1].abs().sum().item(), 0)
        self.assertEqual(g[:, 0].abs().sum().item() + g[:, 2].abs().sum().item(), 0)
        self.oracle("--formulation", "pair", "--input", "image", "--moe", "task", "--task-id", 3, "--seed", 32)
        self.oracle("--formulation", "mlm", "--moe", "task", "--task-id", 1, "--gate-noise", "--seed", 33)
        self.oracle("--formulation", "caption", "--moe", "task", "--seed", 34)

    def test_task_specific_weights(self):
        """The task-specific baseline (issue 18): every MoE linear holds one weight per task slot and a pass
        uses its task's, with weight 1 and no gate; only that slot's weights receive gradients."""
        T, meta = self.oracle("--formulation", "label", "--input", "image+text", "--moe", "task-specific",
                              "--task-slots", 3, "--task-id", 3, "--seed", 41)
        self.check_config(meta, moe="task-specific", experts=3, topk=1, task_slots=3)
        self.assertFalse([k for k in T if ".gate." in k])
        g = T["grad.blocks.1.mlp.fc1.weight"]
        self.assertEqual(list(g.shape), [3, 256, 64])
        self.assertGreater(g[2].abs().sum().item(), 0)
        self.assertEqual(g[:2].abs().sum().item(), 0)
        self.oracle("--formulation", "pair", "--input", "video", "--moe", "task-specific", "--task-id", 1,
                    "--drop-path", "0.1", "--seed", 42)
        self.oracle("--formulation", "caption", "--moe", "task-specific", "--task-id", 2, "--seed", 43)

    def test_token_routing(self):
        """Token routing (issue 18, paper Eq. 5): each gate reads its linear's input token by token; experts take
        at most ceil(capacity * k * tokens / E) tokens, first choices before second ones in (sequence, position)
        order, the rest dropped (the residual carries them); the Switch balance loss enters the gradients with
        its weight; the gate noise is drawn per (sequence, position). Forward, every gradient, the summed
        balance loss and the dropped count against the reference for every formulation, with and without
        noise; at a capacity factor that fits every token nothing is dropped."""
        for f, seed, noise in (("label", 6, 0), ("pair", 6, 0), ("mlm", 7, 0), ("caption", 7, 0), ("label", 6, 1),
                               ("pair", 6, 1), ("mlm", 9, 1), ("caption", 11, 1)):
            T, meta = self.oracle("--formulation", f, "--input", "image+text", "--moe", "token", "--seed", seed,
                                  *(["--gate-noise"] if noise else []))
            self.check_config(meta, moe="token", experts=4, topk=2, capacity=1.0)
            self.assertGreater(T["out.dropped"].item(), 0, f)  # capacity 1: tokens were dropped
            if noise:
                self.assertEqual(list(T["noise.input.blocks.1.mlp.gate2"].shape)[2], 4)  # [nseq, S, E]
        self.assertEqual(list(T["blocks.1.mlp.gate2.proj.weight"].shape), [4, 256])  # fc2's input: the FFN width
        T, _ = self.oracle("--formulation", "label", "--input", "image+text", "--moe", "token", "--seed", 9,
                           "--capacity-factor", 2, "--balance-loss", 0.5)  # every token fits (E / k = 2)
        self.assertEqual(T["out.dropped"].item(), 0)
        self.oracle("--formulation", "pair", "--input", "video", "--moe", "token", "--moe-every", 2, "--layers", 2,
                    "--drop-path", "0.1", "--seed", 7, "--backend", "debug")

    def test_context_routing(self):
        """Context routing (issue 18, paper Eq. 6): each gate reads concat(x_i, attnpool(X)), the pool a learned
        query attending over the tokens token i may see (the attention mask: a causal caption token's context
        is its prefix), with token routing's capacity, dispatch, balance loss and per-token noise. Forward and
        every gradient (the pool's query and both halves of W_g included) against the reference for every
        formulation, with and without noise; the causal cases fail against a pool over the whole sequence."""
        for f in ("label", "pair", "mlm", "caption"):
            for noise in (0, 1):
                T, meta = self.oracle("--formulation", f, "--input", "image+text", "--moe", "context", "--seed", 1,
                                      *(["--gate-noise"] if noise else []))
                self.check_config(meta, moe="context", experts=4, topk=2, capacity=1.0)
                self.assertGreater(T["out.dropped"].item(), 0, f)  # capacity 1: tokens were dropped
        self.assertEqual(list(T["blocks.1.mlp.gate2.proj.weight"].shape), [4, 2 * 256])  # concat(x, pool) of fc2's
        self.assertEqual(list(T["blocks.1.mlp.gate2.query"].shape), [256])
        # the last file (caption, causal text) against a pool that sees every valid token of the sequence
        pool = oracle_compare.ref.context_pool

        def whole_sequence(X, q, mask):
            valid = torch.diagonal(mask, dim1=1, dim2=2)
            return pool(X, q, valid.unsqueeze(1) & valid.unsqueeze(2))
        try:
            oracle_compare.ref.context_pool = whole_sequence
            res = oracle_compare.compare(os.path.join(self.dir.name, "oracle.safetensors"))
        finally:
            oracle_compare.ref.context_pool = pool
        self.assertFalse(all(r[3] for r in res), "a pool over the whole sequence passes the causal caption case")
        T, _ = self.oracle("--formulation", "label", "--input", "image+text", "--text-attn", "causal", "--moe",
                           "context", "--seed", 1, "--capacity-factor", 2, "--balance-loss", 0.5)
        self.assertEqual(T["out.dropped"].item(), 0)
        self.oracle("--formulation", "pair", "--input", "video", "--moe", "context", "--moe-every", 2, "--layers", 2,
                    "--drop-path", "0.1", "--seed", 7, "--backend", "debug")

    def test_label_image_moe_eq3(self):
        # the gate of Eq. 3 as written (kept probabilities not renormalised); the default renormalises
        T, meta = self.oracle("--formulation", "label", "--input", "image", "--moe", "attribute", "--gate-renorm", "0",
                              "--gate-noise", "--seed", 4)
        self.check_config(meta, gate_renorm=0)

    def test_label_text_moe(self):
        T, meta = self.oracle("--formulation", "label", "--input", "text", "--moe", "attribute", "--seed", 3)
        self.assertIn("input.0.ids", T)
        self.assertNotIn("input.0.pixels", T)
        lengths = T["input.0.lengths"]
        self.assertTrue(bool((lengths >= 1).all()) and bool((lengths <= 8).all()))

    def test_label_image_causal_text_moe(self):
        # two input segments, the text one causal: the causal mask and segment assembly of the C model
        T, meta = self.oracle("--formulation", "label", "--input", "image+text", "--text-attn", "causal", "--moe",
                              "attribute", "--seed", 8)
        self.assertIn("input.0.pixels", T)
        self.assertIn("input.1.ids", T)
        segs = oracle_compare.parse_segments(meta["segments"])["input"]
        self.assertEqual(segs[1]["attn"], "causal")

    def pair(self, moe, seed):
        T, meta = self.oracle("--formulation", "pair", "--input", "image", "--moe", moe, "--drop-path", "0.1",
                              "--gate-noise", "--seed", seed)
        self.assertEqual(list(T["out.logits"].shape), [4, 4])
        keeps = [v for k, v in T.items() if k.startswith("keep.")]
        self.assertTrue(keeps, "no keep tables in a drop-path file")
        for v in keeps:  # per sequence: dropped (0) or kept and rescaled by 1/(1-p)
            ok = (v == 0) | ((v - 1 / 0.9).abs() < 1e-6)
            self.assertTrue(bool(ok.all()), v)
        return T

    def test_pair_dense_drop_path(self):
        self.pair("none", 4)

    def test_pair_moe_drop_path_noise(self):
        T = self.pair("attribute", 5)
        noise = [v for k, v in T.items() if k.startswith("noise.")]
        self.assertEqual(len(noise), 2 * 2 * 3)  # both passes, 2 layers, 3 gates
        self.assertTrue(all(list(v.shape) == [256, 4] and float(v.abs().max()) > 0 for v in noise))

    def test_moe_ffn_only(self):
        T, meta = self.oracle("--formulation", "label", "--input", "image", "--moe", "attribute", "--moe-sa", "0",
                              "--moe-ffn", "1", "--seed", 6)
        self.assertEqual(list(T["blocks.1.attn.qkv.weight"].shape), [192, 64])
        self.assertEqual(list(T["blocks.1.mlp.fc1.weight"].shape), [4, 256, 64])
        self.assertNotIn("blocks.1.attn.gate.proj.weight", T)

    def test_moe_every_2(self):
        T, meta = self.oracle("--formulation", "label", "--input", "image", "--moe", "attribute", "--moe-every", "2",
                              "--seed", 7)
        self.check_config(meta, moe_every=2)
        self.assertEqual(list(T["blocks.0.mlp.fc2.weight"].shape), [64, 256])
        self.assertEqual(list(T["blocks.1.mlp.fc2.weight"].shape), [4, 64, 256])
        self.assertNotIn("blocks.0.mlp.gate2.proj.weight", T)
        self.assertIn("blocks.1.mlp.gate2.proj.weight", T)


    def vocab(self, formulation, moe, targets, *extra, seed):
        """A vocab-mlm / vocab-caption file: compared, then the file's layout checked against
        docs/training.md ("A step", "Vocabulary targets")."""
        T, meta = self.oracle("--formulation", formulation, "--moe", moe, "--vocab-targets", targets, *extra,
                              "--seed", seed)
        self.assertEqual(meta["formulation"], "vocab-" + formulation)
        segs = oracle_compare.parse_segments(meta["segments"])
        self.assertEqual(segs["target"], [])
        self.assertFalse([k for k in T if k.startswith(("target.", "keep.")) or k == "labels"])
        M, C = T["read.seq"].shape[0], T["vocab.ids"].shape[0]
        self.assertGreaterEqual(M, 4)  # at least one read-out per sequence
        self.assertEqual(sorted(set(T["read.seq"].tolist())), [0, 1, 2, 3])
        for name, shape in (("out.logits", [M, C]), ("out.input_features", [M, 64]),
                            ("out.target_features", [C, 64]), ("read.pos", [M]), ("read.target", [M])):
            self.assertEqual(list(T[name].shape), shape, name)
        ids = T["vocab.ids"].long()
        if targets == "full":
            self.assertEqual(ids.tolist(), list(range(512)))
            self.assertNotIn("vocab.logq", T)
        else:  # the batch's distinct targets first, then N distinct negatives with -log q, q = N / (R - targets)
            N = int(targets.split(":")[1])
            ntgt = len(set(T["read.target"].tolist()))
            self.assertEqual(C, ntgt + N)
            self.assertEqual(len(set(ids.tolist())), C)
            self.assertEqual(sorted(set(T["read.target"].tolist())), list(range(ntgt)))
            logq = T["vocab.logq"].double()
            self.assertTrue(bool((logq[:ntgt] == 0).all()))
            corr = float(logq[ntgt])
            self.assertTrue(bool((logq[ntgt:] == logq[ntgt]).all()) and corr > 0)
            regular = N * math.exp(corr) + ntgt  # the number of regular tokens the sampler draws from
            self.assertAlmostEqual(regular, round(regular), delta=1e-3 * regular)
            self.assertTrue(ntgt + N <= round(regular) <= 512, regular)
        return T, meta

    def test_mlm_full_dense(self):
        T, meta = self.vocab("mlm", "none", "full", seed=11)
        segs = oracle_compare.parse_segments(meta["segments"])["input"]
        self.assertEqual([(g["kind"], g["attn"]) for g in segs], [("text", "full")])

    def test_mlm_full_moe_chunked(self):
        # 512 candidates in chunks of 100: the chunked encode and re-encode in the backward
        T, meta = self.vocab("mlm", "attribute", "full", "--vocab-chunk", 100, seed=12)
        self.assertEqual(len(oracle_compare._json(meta["vocab_attr"])), 2)

    def test_mlm_sampled_moe_noise(self):
        T, meta = self.vocab("mlm", "attribute", "sampled:64", "--gate-noise", seed=13)
        noise = [k for k in T if k.startswith("noise.")]
        self.assertEqual(sorted({k.split(".")[1] for k in noise}), ["input", "target"])
        self.assertEqual(len(noise), 2 * 2 * 3)
        self.assertTrue(all(float(T[k].abs().max()) > 0 for k in noise))

    def test_caption_full_moe(self):
        T, meta = self.vocab("caption", "attribute", "full", seed=14)
        segs = oracle_compare.parse_segments(meta["segments"])["input"]
        self.assertEqual([(g["kind"], g["attn"]) for g in segs], [("image", "full"), ("text", "causal"),
                                                                   ("text", "query")])
        self.assertTrue(torch.equal(T["input.1.lengths"], T["input.2.lengths"]))
        # every valid query is read out (oracle_compare.read_check checks targets and positions)
        self.assertEqual(T["read.seq"].shape[0], int(T["input.1.lengths"].sum()))

    def test_caption_sampled_dense(self):
        self.vocab("caption", "none", "sampled:32", seed=15)


if __name__ == "__main__":
    torch.set_num_threads(1)
    unittest.main()
