# Self-checks of the PyTorch oracle (reference.py) against hand-derived values and independent
# formulations, and of oracle_compare.py on synthetic oracle files; torch only, no C tool needed.
import math
import os
import sys
import tempfile
import unittest

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import oracle_compare  # noqa: E402
import oracle_synth  # noqa: E402
import reference as ref  # noqa: E402

F64 = torch.float64


def text_seg(ids, lengths, attr, attn="full"):
    ids = torch.tensor(ids, dtype=torch.int32)
    return {"modality": "text", "attn": attn, "ids": ids, "lengths": torch.tensor(lengths, dtype=torch.int32),
            "attrs": torch.full(ids.shape, attr, dtype=torch.uint8)}


def image_seg(n, H, W, attr, gen=None):
    pix = torch.randn(n, 1, 3, H, W, generator=gen, dtype=F64)
    return {"modality": "image", "attn": "full", "pixels": pix,
            "attrs": torch.full((n, (H // 16) * (W // 16)), attr, dtype=torch.uint8)}


def tiny_params(cfg, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {k: v.to(F64) for k, v in oracle_synth.make_params(cfg, gen).items()}


class SequenceTests(unittest.TestCase):
    def test_caption_query_mask(self):
        # SPE, 1 image patch, full text (L=2), causal text (L=3), caption queries (L=3)
        segs = [image_seg(2, 16, 16, 1), text_seg([[5, 0], [5, 6]], [1, 2], 2),
                text_seg([[7, 8, 0], [7, 8, 9]], [2, 3], 3, "causal"),
                text_seg([[4, 4, 0], [4, 4, 4]], [2, 3], 4, "caption_query")]
        want0 = [  # row 0: full length 1, causal length 2, queries length 2
            [1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            [1, 1, 1, 0, 1, 0, 0, 0, 0, 0],
            [1, 1, 1, 0, 1, 1, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0, 0, 1, 0, 0],
            [1, 1, 1, 0, 1, 0, 0, 0, 1, 0],
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]]
        want1 = [  # row 1: nothing padded
            [1, 1, 1, 1, 0, 0, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0, 0, 0, 0, 0],
            [1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
            [1, 1, 1, 1, 1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
            [1, 1, 1, 1, 0, 0, 0, 1, 0, 0],
            [1, 1, 1, 1, 1, 0, 0, 0, 1, 0],
            [1, 1, 1, 1, 1, 1, 0, 0, 0, 1]]
        got = ref.attention_mask(segs, 2).to(torch.int64)
        self.assertEqual(got[0].tolist(), want0)
        self.assertEqual(got[1].tolist(), want1)
        # two causal segments: each sees SPE and its own prefix only
        segs = [text_seg([[1, 2]], [2], 3, "causal"), text_seg([[1, 2]], [2], 3, "causal")]
        self.assertEqual(ref.attention_mask(segs, 1)[0].to(torch.int64).tolist(),
                         [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 1, 0], [1, 0, 0, 1, 1]])

    def test_caption_file_layout_mask(self):
        # a vocab-caption input as oracle files spell it (segment metadata kind/attn "query"): SPE, an image
        # of 2 patches, causal caption L=3, queries L=3 with the caption's lengths [2, 3]. Query j sees SPE,
        # the image, caption tokens 0..j-1 (never token j, its own target) and itself.
        T = {"input.0.pixels": torch.zeros(2, 1, 3, 16, 32), "input.0.attrs": torch.full((2, 2), 1, dtype=torch.uint8),
             "input.1.ids": torch.tensor([[5, 6, 0], [5, 6, 7]], dtype=torch.int32),
             "input.1.lengths": torch.tensor([2, 3], dtype=torch.int32),
             "input.1.attrs": torch.full((2, 3), 2, dtype=torch.uint8),
             "input.2.ids": torch.tensor([[9, 9, 0], [9, 9, 9]], dtype=torch.int32),
             "input.2.lengths": torch.tensor([2, 3], dtype=torch.int32),
             "input.2.attrs": torch.full((2, 3), 3, dtype=torch.uint8)}
        metas = [{"kind": "image", "attn": "full"}, {"kind": "text", "attn": "causal", "L": 3},
                 {"kind": "text", "attn": "query", "L": 3}]
        segs = [oracle_compare._segment(T, "input.%d." % i, m) for i, m in enumerate(metas)]
        self.assertEqual(segs[2]["attn"], ref.QUERY)
        #         S  p  p  c0 c1 c2 q0 q1 q2
        want0 = [[1, 1, 1, 0, 0, 0, 0, 0, 0],   # SPE
                 [1, 1, 1, 0, 0, 0, 0, 0, 0],   # patches
                 [1, 1, 1, 0, 0, 0, 0, 0, 0],
                 [1, 1, 1, 1, 0, 0, 0, 0, 0],   # causal 0
                 [1, 1, 1, 1, 1, 0, 0, 0, 0],   # causal 1
                 [0, 0, 0, 0, 0, 0, 0, 0, 0],   # causal 2: padding
                 [1, 1, 1, 0, 0, 0, 1, 0, 0],   # query 0
                 [1, 1, 1, 1, 0, 0, 0, 1, 0],   # query 1
                 [0, 0, 0, 0, 0, 0, 0, 0, 0]]   # query 2: padding
        want1 = [[1, 1, 1, 0, 0, 0, 0, 0, 0],
                 [1, 1, 1, 0, 0, 0, 0, 0, 0],
                 [1, 1, 1, 0, 0, 0, 0, 0, 0],
                 [1, 1, 1, 1, 0, 0, 0, 0, 0],
                 [1, 1, 1, 1, 1, 0, 0, 0, 0],
                 [1, 1, 1, 1, 1, 1, 0, 0, 0],
                 [1, 1, 1, 0, 0, 0, 1, 0, 0],
                 [1, 1, 1, 1, 0, 0, 0, 1, 0],
                 [1, 1, 1, 1, 1, 0, 0, 0, 1]]
        got = ref.attention_mask(segs, 2).to(torch.int64)
        self.assertEqual(got[0].tolist(), want0)
        self.assertEqual(got[1].tolist(), want1)

    def test_sincos_2x3(self):
        s1, s2, c1, c2 = math.sin(1), math.sin(2), math.cos(1), math.cos(2)
        t1, t2, d1, d2 = math.sin(0.01), math.sin(0.02), math.cos(0.01), math.cos(0.02)
        # D=8: Q=2, omega = (1, 10000^-1/2 = 0.01); tokens (gy, gx) row-major; gx first half
        want = [
            [0, 0, 1, 1, 0, 0, 1, 1],
            [s1, t1, c1, d1, 0, 0, 1, 1],
            [s2, t2, c2, d2, 0, 0, 1, 1],
            [0, 0, 1, 1, s1, t1, c1, d1],
            [s1, t1, c1, d1, s1, t1, c1, d1],
            [s2, t2, c2, d2, s1, t1, c1, d1]]
        want = torch.tensor(want, dtype=F64)
        self.assertTrue(torch.allclose(ref.sincos_2d(8, 2, 3), want, atol=1e-12))
        # an image 32 px high, 48 wide is that grid; with a zero patch projection only positions remain
        P = {"embed.patch.weight": torch.zeros(8, 768, dtype=F64), "embed.patch.bias": torch.zeros(8, dtype=F64),
             "embed.temporal": torch.ones(4, 8, dtype=F64)}
        emb = ref.embed_segment(P, image_seg(1, 32, 48, 0), F64)
        self.assertTrue(torch.allclose(emb[0], want, atol=1e-12))
        # a 2-frame video adds embed.temporal[t] on top of the same grid
        vid = {"modality": "video", "pixels": torch.zeros(1, 2, 3, 32, 48, dtype=F64)}
        P["embed.temporal"] = torch.arange(32, dtype=F64).reshape(4, 8)
        emb = ref.embed_segment(P, vid, F64)[0]
        self.assertTrue(torch.allclose(emb[6:], want + P["embed.temporal"][1], atol=1e-12))

    def test_patch_order(self):
        # pixel (channel c, row y, column x) of patch (py, px) is column c*256 + (y%16)*16 + x%16 of token
        # py*gw + px
        pix = torch.zeros(1, 1, 3, 32, 48, dtype=F64)
        pix[0, 0, 2, 16 + 3, 32 + 5] = 1.0
        p = ref.patchify(pix)
        self.assertEqual(p.shape, (1, 6, 768))
        self.assertEqual(p.nonzero().tolist(), [[0, 1 * 3 + 2, 2 * 256 + 3 * 16 + 5]])

    def test_pass_assembly(self):
        # [SPE] + segments; text token i of a segment (queries included) = token[id] + text_pos[i]
        P = {"embed.spe": torch.full((4,), -1.0, dtype=F64),
             "embed.token": 100 * torch.arange(10, dtype=F64).reshape(10, 1).expand(10, 4),
             "embed.text_pos": torch.arange(6, dtype=F64).reshape(6, 1).expand(6, 4)}
        ps = {"segments": [text_seg([[3, 4, 0]], [2], 7, "causal"), text_seg([[9, 9, 0]], [2], 8, "caption_query")],
              "spe_attr": 5}
        x, attrs, mask = ref.build_pass(P, ps, F64)
        self.assertEqual(x[0, :, 0].tolist(), [-1, 300, 401, 2, 900, 901, 2])
        self.assertEqual(attrs[0].tolist(), [5, 7, 7, 7, 8, 8, 8])
        self.assertEqual(mask.shape, (1, 7, 7))

    def test_attr_bits(self):
        # paper Table 2: image-classification input tokens are [1, 0, 0, 1, 1, 0, 0, 1]
        self.assertEqual(ref.attr_bits([153], F64).tolist(), [[1, 0, 0, 1, 1, 0, 0, 1]])


class MoeTests(unittest.TestCase):
    def setUp(self):
        self.cfg = oracle_synth.make_config(dim=8, heads=2, layers=1, mlp=16, experts=4, topk=2)
        self.P = tiny_params(self.cfg, seed=1)

    def test_topk_no_renorm_ties_low_index(self):
        p = torch.tensor([[0.3, 0.3, 0.1, 0.3], [0.1, 0.2, 0.2, 0.5]], dtype=F64)
        self.assertEqual(ref.topk_mask(p, 2).tolist(), [[1, 1, 0, 0], [0, 1, 0, 1]])
        G = ref.gate(self.P, "blocks.0.mlp.gate1", [3, 200], None, 2, 1e-5)
        self.assertEqual(int((G > 0).sum()), 4)
        self.assertTrue(bool((G.sum(1) < 1 - 1e-6).all()))  # kept values are not renormalised
        probs = ref.gate_probs(self.P, "blocks.0.mlp.gate1", [3, 200], None, 1e-5)
        top2 = torch.sort(probs, dim=1, descending=True).values[:, :2].sum(1)
        self.assertTrue(torch.allclose(G.sum(1), top2, atol=1e-15))

    def test_gate_formula(self):
        # Eq. 9 and Eq. 3 written out element by element for pattern 0b10000101 with noise
        pfx, p = "blocks.0.attn.gate", 0b10000101
        noise = torch.randn(256, 4, dtype=F64, generator=torch.Generator().manual_seed(3))
        a = torch.tensor([1, 0, 1, 0, 0, 0, 0, 1], dtype=F64)
        h = self.P[pfx + ".attr.weight"] @ a + self.P[pfx + ".attr.bias"]
        r = (h - h.mean()) / torch.sqrt(h.var(unbiased=False) + 1e-5) * self.P[pfx + ".norm.weight"] \
            + self.P[pfx + ".norm.bias"]
        z = self.P[pfx + ".proj.weight"] @ r + noise[p]
        e = torch.exp(z - z.max())
        probs = e / e.sum()
        got = ref.gate_probs(self.P, pfx, [p], noise, 1e-5)[0]
        self.assertTrue(torch.allclose(got, probs, atol=1e-14))

    def test_equal_experts_scale_dense(self):
        gen = torch.Generator().manual_seed(5)
        W, b = torch.randn(6, 8, dtype=F64, generator=gen), torch.randn(6, dtype=F64, generator=gen)
        x = torch.randn(2, 5, 8, dtype=F64, generator=gen)
        attrs = torch.tensor([[3, 3, 9, 9, 9], [3, 9, 3, 9, 9]])
        dense = x @ W.t() + b
        for k in (4, 2):
            G = ref.gate(self.P, "blocks.0.mlp.gate1", [3, 9], None, k, 1e-5)
            y = ref.moe_linear(x, attrs, W.expand(4, 6, 8), b.expand(4, 6), [3, 9], G)
            gsum = G.sum(1)
            want = torch.where((attrs == 3).unsqueeze(-1), gsum[0] * dense, gsum[1] * dense)
            self.assertTrue(torch.allclose(y, want, atol=1e-12))
            if k == 4:
                self.assertTrue(torch.allclose(y, dense, atol=1e-12))
            else:
                self.assertFalse(torch.allclose(y, dense, atol=1e-3))

    def test_moe_is_per_token_expert_mix(self):
        # merged weights (Eq. 4) == the per-token sum of expert outputs, computed one token at a time
        gen = torch.Generator().manual_seed(6)
        W, b = torch.randn(4, 6, 8, dtype=F64, generator=gen), torch.randn(4, 6, dtype=F64, generator=gen)
        x = torch.randn(2, 5, 8, dtype=F64, generator=gen)
        attrs = torch.tensor([[3, 3, 9, 9, 200], [3, 9, 200, 9, 9]])
        pats = [3, 9, 200]
        G = ref.gate(self.P, "blocks.0.mlp.gate2", pats, None, 2, 1e-5)
        y = ref.moe_linear(x, attrs, W, b, pats, G)
        for s in range(2):
            for t in range(5):
                g = G[pats.index(int(attrs[s, t]))]
                want = sum(g[e] * (W[e] @ x[s, t] + b[e]) for e in range(4))
                self.assertTrue(torch.allclose(y[s, t], want, atol=1e-12))

    def test_gradcheck_gate_params(self):
        cfg = oracle_synth.make_config(dim=8, heads=2, layers=1, mlp=16, experts=3, topk=2, vocab=16,
                                       max_text=8)
        c = ref.normalize_config(cfg)
        P = tiny_params(cfg, seed=2)
        gen = torch.Generator().manual_seed(7)
        inp = {"segments": [image_seg(2, 16, 32, 153, gen)], "spe_attr": 153,
               "noise": {"blocks.0." + g: torch.randn(256, 3, dtype=F64, generator=gen) / 3
                         for g in ref.layer_gates(c, 0)}}
        tgt = {"segments": [text_seg([[3, 4, 5, 0], [6, 7, 0, 0], [8, 9, 10, 11]], [3, 2, 4], 41)],
               "spe_attr": 41}
        labels = torch.tensor([2, 0])
        names = [n for n in P if ".gate" in n]
        self.assertEqual(len(names), 15)
        for ps in (inp, tgt):  # tie-free top-k: finite differences stay on one side of every decision
            for g in ref.layer_gates(c, 0):
                probs = ref.gate_probs(P, "blocks.0." + g, ref.pass_patterns(ps),
                                       ps.get("noise", {}).get("blocks.0." + g), 1e-5)
                top = torch.sort(probs, dim=1, descending=True).values
                self.assertGreater(float((top[:, 1] - top[:, 2]).min()), 1e-3)

        def loss(*gate_params):
            Q = dict(P)
            Q.update(zip(names, gate_params))
            return ref.forward(cfg, Q, "label", inp, tgt, labels, 1.0, F64)["loss"]

        args = tuple(P[n].clone().requires_grad_(True) for n in names)
        self.assertTrue(torch.autograd.gradcheck(loss, args, eps=1e-6, atol=1e-7, rtol=1e-5))


class EncoderTests(unittest.TestCase):
    def setUp(self):
        self.cfg = oracle_synth.make_config(dim=8, heads=2, layers=2, mlp=16, experts=4, topk=2, vocab=16,
                                            max_text=8)
        self.c = ref.normalize_config(self.cfg)
        self.P = tiny_params(self.cfg, seed=3)
        self.ps = {"segments": [text_seg([[3, 4, 5, 0], [6, 7, 0, 0], [8, 9, 10, 11]], [3, 2, 4], 170)],
                   "spe_attr": 170}

    def encode(self, P, ps, keep=None):
        x, attrs, mask = ref.build_pass(P, ps, F64)
        return x, ref.encoder(self.c, P, x, attrs, mask, None, keep)

    def test_drop_path_keep_zero(self):
        ones = torch.ones(3, dtype=F64)
        zero0 = torch.tensor([0.0, 1 / 0.9, 1 / 0.9], dtype=F64)
        keep = {"blocks.%d.%s" % (l, b): zero0 for l in range(2) for b in ("attn", "mlp")}
        x, y = self.encode(self.P, self.ps, keep)
        self.assertTrue(torch.equal(y[0], x[0]))  # every branch dropped: the embeddings pass through
        self.assertFalse(torch.allclose(y[1], x[1], atol=1e-3))
        # dropping layer 0's attention branch of sequence 0 == that sequence alone with ls1 = 0 there
        keep = {k: ones for k in keep}
        keep["blocks.0.attn"] = zero0
        _, y = self.encode(self.P, self.ps, keep)
        Q = dict(self.P)
        Q["blocks.0.ls1"] = torch.zeros(8, dtype=F64)
        alone = {"segments": [{k: (v[:1] if torch.is_tensor(v) else v) for k, v in self.ps["segments"][0].items()}],
                 "spe_attr": 170}
        _, y0 = self.encode(Q, alone)
        self.assertTrue(torch.allclose(y[0], y0[0], atol=1e-12))
        # the kept sequences are scaled by 1/(1-p)
        keep = {k: ones * (1 / 0.9) for k in keep}
        Q = {k: (v / 0.9 if k.endswith(("ls1", "ls2")) else v) for k, v in self.P.items()}
        _, ya = self.encode(self.P, self.ps, keep)
        _, yb = self.encode(Q, self.ps)
        self.assertTrue(torch.allclose(ya, yb, atol=1e-12))

    def test_padding_is_invisible(self):
        x, y = self.encode(self.P, self.ps)
        other = {"segments": [dict(self.ps["segments"][0])], "spe_attr": 170}
        ids = other["segments"][0]["ids"].clone()
        ids[0, 3], ids[1, 2:] = 15, torch.tensor([13, 14], dtype=torch.int32)  # padding positions only
        other["segments"][0]["ids"] = ids
        _, y2 = self.encode(self.P, other)
        valid = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
        self.assertTrue(torch.allclose(y[valid], y2[valid], atol=1e-12))
        # a padding row's attention output is 0
        qkv = torch.randn(3, 5, 24, dtype=F64)
        _, _, mask = ref.build_pass(self.P, self.ps, F64)
        a = ref.mhsa(qkv, mask, 2)
        self.assertTrue(torch.equal(a[~valid], torch.zeros_like(a[~valid])))
        self.assertTrue(bool((a[valid].abs().sum(-1) > 0).all()))


class LossTests(unittest.TestCase):
    def test_cross_entropy_matches_torch_and_formula(self):
        gen = torch.Generator().manual_seed(8)
        logits = torch.randn(5, 7, dtype=F64, generator=gen) * 3
        t = torch.tensor([0, 6, 3, 3, 1])
        want = F.cross_entropy(logits, t, label_smoothing=0.1)
        self.assertAlmostEqual(float(ref.cross_entropy(logits, t)), float(want), places=12)
        lp = torch.log_softmax(logits, 1)
        rows = [-(0.9) * lp[i, t[i]] - 0.1 / 7 * lp[i].sum() for i in range(5)]
        self.assertAlmostEqual(float(ref.cross_entropy(logits, t)), float(sum(rows) / 5), places=12)
        t2 = torch.tensor([0, -1, 3, -1, 1])  # ignored rows leave the mean
        self.assertAlmostEqual(float(ref.cross_entropy(logits, t2)), float((rows[0] + rows[2] + rows[4]) / 3),
                               places=12)

    def test_temperature_cap(self):
        for v, s, g in ((math.log(1 / 0.07), 1 / 0.07, 1 / 0.07), (math.log(200.0), 100.0, 0.0)):
            ls = torch.tensor([v], dtype=F64, requires_grad=True)
            out = ref.temperature(ls)
            out.sum().backward()
            self.assertAlmostEqual(float(out), s, places=9)
            self.assertAlmostEqual(float(ls.grad), g, places=9)

    def test_pair_loss_is_symmetric_ce(self):
        T, meta = oracle_synth.make_oracle("pair", "image", B=3, loss_weight=0.5, seed=4)
        L = T["out.logits"].to(F64)
        d = torch.arange(3)
        want = 0.25 * (F.cross_entropy(L, d, label_smoothing=0.1) + F.cross_entropy(L.t(), d, label_smoothing=0.1))
        self.assertAlmostEqual(float(T["out.loss"]), float(want), places=5)
        u, v = T["out.input_features"].to(F64), T["out.target_features"].to(F64)
        self.assertTrue(torch.allclose(L, (u @ v.t()) / 0.07, atol=1e-4))
        self.assertTrue(torch.allclose(u.norm(dim=1), torch.ones(3, dtype=F64), atol=1e-6))


class VocabTests(unittest.TestCase):
    """The vocabulary formulations: the candidates' pass, read-outs, and the loss with its correction."""

    def setUp(self):
        self.cfg = oracle_synth.make_config(dim=8, heads=2, layers=2, mlp=16, experts=4, topk=2, vocab=16,
                                            max_text=8)
        self.c = ref.normalize_config(self.cfg)
        self.P = tiny_params(self.cfg, seed=9)
        gen = torch.Generator().manual_seed(10)
        # caption input: SPE, 2 patches, causal caption (L=3), queries (L=3); lengths [3, 2]
        self.cap = {"segments": [image_seg(2, 16, 32, 153, gen),
                                 text_seg([[3, 4, 5], [6, 7, 0]], [3, 2], 232, "causal"),
                                 text_seg([[14, 14, 14], [14, 14, 0]], [3, 2], 104, "caption_query")],
                    "spe_attr": 153}

    def test_vocab_pass_layout(self):
        # candidate c is [SPE, ids[c]]: embed.spe, then token[id] + text_pos[0]; attributes (spe, text);
        # both tokens see each other
        ps = ref.vocab_pass(torch.tensor([5, 9, 0], dtype=torch.int32), 40, 44)
        x, attrs, mask = ref.build_pass(self.P, ps, F64)
        self.assertEqual(x.shape, (3, 2, 8))
        for c, v in enumerate((5, 9, 0)):
            self.assertTrue(torch.equal(x[c, 0], self.P["embed.spe"]))
            self.assertTrue(torch.equal(x[c, 1], self.P["embed.token"][v] + self.P["embed.text_pos"][0]))
        self.assertEqual(attrs.tolist(), [[40, 44]] * 3)
        self.assertTrue(bool(mask.all()))

    def test_vocab_candidates_are_independent(self):
        # a candidate's feature does not depend on which other candidates share the pass (chunking)
        all_ = ref.encode_pass(self.c, self.P, ref.vocab_pass(torch.arange(16), 40, 44), F64)
        part = ref.encode_pass(self.c, self.P, ref.vocab_pass(torch.tensor([11, 2]), 40, 44), F64)
        self.assertTrue(torch.allclose(part, all_[[11, 2]], atol=1e-12))
        other = ref.encode_pass(self.c, self.P, ref.vocab_pass(torch.tensor([11]), 40, 45), F64)
        self.assertFalse(torch.allclose(other[0], all_[11], atol=1e-4))  # the text byte routes the MoE

    def test_readouts(self):
        # reading (seq, 0) is the SPE feature; read-outs come back in the order asked
        spe = ref.encode_pass(self.c, self.P, self.cap, F64)
        at0 = ref.encode_pass(self.c, self.P, self.cap, F64, (torch.tensor([1, 0]), torch.tensor([0, 0])))
        self.assertTrue(torch.allclose(at0, spe[[1, 0]], atol=1e-12))
        rows = ref.encode_pass(self.c, self.P, self.cap, F64, (torch.tensor([0, 1, 0]), torch.tensor([6, 7, 8])))
        swapped = ref.encode_pass(self.c, self.P, self.cap, F64, (torch.tensor([0, 0]), torch.tensor([8, 6])))
        self.assertTrue(torch.allclose(swapped, rows[[2, 0]], atol=1e-12))
        self.assertFalse(torch.allclose(rows[0], rows[2], atol=1e-4))
        with self.assertRaises(ValueError):
            ref.encode_pass(self.c, self.P, self.cap, F64, (torch.tensor([0]), torch.tensor([9])))

    def test_query_does_not_see_its_target(self):
        # changing caption token j changes the queries after j (and the causal tokens from j on), never
        # query j itself or those before it: the mask's leak-freedom through the whole encoder
        reads = (torch.zeros(3, dtype=torch.long), torch.tensor([6, 7, 8]))
        base = ref.encode_pass(self.c, self.P, self.cap, F64, reads)
        for j in range(3):
            changed = {"segments": [dict(g) for g in self.cap["segments"]], "spe_attr": 153}
            ids = changed["segments"][1]["ids"].clone()
            ids[0, j] = 12
            changed["segments"][1]["ids"] = ids
            got = ref.encode_pass(self.c, self.P, changed, F64, reads)
            diff = (got - base).abs().amax(dim=1)
            self.assertTrue(bool((diff[:j + 1] < 1e-12).all()), (j, diff))
            self.assertTrue(bool((diff[j + 1:] > 1e-6).all()), (j, diff))

    def vocab_case(self, logq):
        cand = torch.tensor([3, 4, 5, 6, 7, 9, 13], dtype=torch.int32)
        read = (torch.tensor([0, 0, 0, 1, 1]), torch.tensor([6, 7, 8, 6, 7]))
        target = torch.tensor([0, 1, 2, 3, 4])  # query j -> caption token j
        return ref.vocab_pass(cand, 40, 44), read, target, logq

    def test_vocab_loss_and_temperature_gradient(self):
        logq = torch.tensor([0, 0, 0, 0, 0, 1.7, 1.7], dtype=F64)
        for lq in (None, logq):
            tgt, read, target, lq = self.vocab_case(lq)
            out, grads = ref.run(self.cfg, self.P, "vocab-caption", self.cap, tgt, target, 0.7, F64, read, lq)
            u, v = out["input_features"], out["target_features"]
            s = math.exp(float(self.P["logit_scale"]))
            self.assertEqual(tuple(out["logits"].shape), (5, 7))
            self.assertTrue(torch.allclose(out["logits"], s * u @ v.t(), atol=1e-12))  # no correction in it
            z = out["logits"] + (0 if lq is None else lq)
            want = 0.7 * F.cross_entropy(z, target, label_smoothing=0.1)
            self.assertAlmostEqual(float(out["loss"]), float(want), places=12)
            # d loss / d logit_scale = Σ dL/dz ⊙ s U Vᵀ; dL/dz = w (softmax(z) - (0.9 onehot + 0.1/C)) / M
            dz = 0.7 * (torch.softmax(z, 1) - 0.9 * F.one_hot(target, 7).to(F64) - 0.1 / 7) / 5
            self.assertAlmostEqual(float(grads["logit_scale"]), float((dz * out["logits"]).sum()), places=12)
        with self.assertRaises(ValueError):  # a vocab formulation without read-outs
            ref.forward(self.cfg, self.P, "vocab-mlm", self.cap, tgt, target, 1.0, F64)

    def test_gradcheck_vocab_caption(self):
        names = ["logit_scale", "proj.weight", "embed.token", "blocks.1.mlp.gate2.proj.weight", "blocks.0.ls1",
                 "embed.spe"]
        tgt, read, target, lq = self.vocab_case(torch.tensor([0, 0, 0, 0, 0, 1.7, 1.7], dtype=F64))
        for ps in (self.cap, tgt):  # tie-free top-k: finite differences stay on one side of every decision
            for l in range(2):
                for g in ref.layer_gates(self.c, l):
                    probs = ref.gate_probs(self.P, "blocks.%d.%s" % (l, g), ref.pass_patterns(ps), None, 1e-5)
                    top = torch.sort(probs, dim=1, descending=True).values
                    self.assertGreater(float((top[:, 1] - top[:, 2]).min()), 1e-4)

        def loss(*xs):
            Q = dict(self.P)
            Q.update(zip(names, xs))
            return ref.forward(self.cfg, Q, "vocab-caption", self.cap, tgt, target, 1.0, F64, read, lq)["loss"]

        args = tuple(self.P[n].clone().requires_grad_(True) for n in names)
        self.assertTrue(torch.autograd.gradcheck(loss, args, eps=1e-6, atol=1e-7, rtol=1e-5))


class CompareTests(unittest.TestCase):
    """oracle_compare on files whose outputs come from reference.py itself: they must pass, and each
    kind of corruption must fail."""

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.dir.cleanup()

    def roundtrip(self, T, meta):
        path = os.path.join(self.dir.name, "o.safetensors")
        oracle_synth.save(path, T, meta)
        return oracle_compare.compare(path)

    def assert_passes(self, res):
        self.assertTrue(all(r[3] for r in res), oracle_compare.summary(res))

    def failing(self, res):
        return [r[0] for r in res if not r[3]]

    def test_synthetic_files_pass(self):
        for kw in ({"formulation": "label", "input_kind": "image"},
                   {"formulation": "label", "input_kind": "text", "moe": "none"},
                   {"formulation": "pair", "input_kind": "image", "drop_path": 0.1, "gate_noise": True},
                   {"formulation": "label", "input_kind": "image", "moe_sa": 0},
                   {"formulation": "pair", "input_kind": "image", "moe_every": 2, "loss_weight": 0.3}):
            with self.subTest(**kw):
                T, meta = oracle_synth.make_oracle(**kw)
                res = self.roundtrip(T, meta)
                self.assert_passes(res)
                names = [r[0] for r in res]
                self.assertIn("out.loss", names)
                self.assertEqual(sum(n.startswith("grad.") for n in names), len(ref.param_shapes(
                    oracle_compare._json(meta["config"]))))

    def test_perturbed_gradient_fails(self):
        T, meta = oracle_synth.make_oracle("pair", "image", drop_path=0.1, gate_noise=True)
        name = "grad.blocks.1.attn.gate.proj.weight"
        g = T[name].clone()
        g[1, 2] += 1e-3 * g.abs().max()
        T[name] = g
        self.assertEqual(self.failing(self.roundtrip(T, meta)), [name])

    def test_file_tables_are_used(self):
        base = oracle_synth.make_oracle("pair", "image", drop_path=0.1, gate_noise=True)
        cases = {
            "keep": ("keep.input.blocks.0.mlp", lambda t: torch.where(t == 0, torch.full_like(t, 1 / 0.9),
                                                                       torch.zeros_like(t))),
            "noise": ("noise.target.blocks.1.mlp.gate1", lambda t: t * -1.0),
            "ids": ("target.0.ids", lambda t: torch.where(t > 0, (t % 60) + 1, t)),
        }
        for what, (key, change) in cases.items():
            with self.subTest(what):
                T = dict(base[0])
                T[key] = change(T[key])
                self.assertIn("out.loss", self.failing(self.roundtrip(T, base[1])))

    def test_missing_and_bad_entries_fail(self):
        T, meta = oracle_synth.make_oracle("label", "text")
        T2 = dict(T)
        del T2["grad.blocks.0.ls1"]
        self.assertEqual(self.failing(self.roundtrip(T2, meta)), ["grad.blocks.0.ls1 (missing in file)"])
        T2 = dict(T)
        T2["out.logits"] = T["out.logits"].t().contiguous()
        self.assertEqual(len(self.failing(self.roundtrip(T2, meta))), 1)
        T2 = dict(T)
        T2["grad.blocks.0.ls1"] = T["grad.blocks.0.ls1"] * float("nan")
        self.assertEqual(self.failing(self.roundtrip(T2, meta)), ["grad.blocks.0.ls1"])
        T2 = dict(T)
        T2["blocks.0.attn.qkv.scale"] = torch.ones(3)
        T2["noise.input.blocks.0.mlp.gate3"] = torch.zeros(256, 4)
        self.assertEqual(sorted(self.failing(self.roundtrip(T2, meta))),
                         ["blocks.0.attn.qkv.scale (unknown tensor)",
                          "noise.input.blocks.0.mlp.gate3 (no such gate or branch)"])
        T2 = dict(T)
        del T2["blocks.1.mlp.gate2.proj.weight"]
        self.assertEqual(self.failing(self.roundtrip(T2, meta)),
                         ["blocks.1.mlp.gate2.proj.weight (parameter missing in file)"])

    def test_near_tie_is_reported(self):
        T, meta = oracle_synth.make_oracle("label", "image", gate_noise=True)
        E = 4
        T = dict(T)
        # equal gate logits for every pattern: all probabilities tie
        T["blocks.0.mlp.gate1.proj.weight"] = torch.zeros(E, 16)
        T["noise.input.blocks.0.mlp.gate1"] = torch.zeros(256, E)
        res = self.roundtrip(T, meta)
        self.assertTrue(any(n.startswith("gate near-tie: input blocks.0.mlp.gate1") for n in self.failing(res)))


    VOCAB_CASES = ({"formulation": "vocab-mlm", "moe": "none"},
                   {"formulation": "vocab-mlm", "gate_noise": True, "vocab_targets": 16},
                   {"formulation": "vocab-caption", "loss_weight": 0.4},
                   {"formulation": "vocab-caption", "moe": "none", "vocab_targets": 8},
                   {"formulation": "vocab-caption", "gate_noise": True, "vocab_targets": 8, "moe_every": 2})

    def test_synthetic_vocab_files_pass(self):
        for kw in self.VOCAB_CASES:
            with self.subTest(**kw):
                T, meta = oracle_synth.make_oracle(**kw)
                res = self.roundtrip(T, meta)
                self.assert_passes(res)
                M, C = T["read.seq"].shape[0], T["vocab.ids"].shape[0]
                self.assertEqual(list(T["out.logits"].shape), [M, C])
                self.assertEqual(list(T["out.target_features"].shape), [C, 16])
                self.assertEqual("vocab.logq" in T, "vocab_targets" in kw)
                self.assertEqual(sum(r[0].startswith("grad.") for r in res),
                                 len(ref.param_shapes(oracle_compare._json(meta["config"]))))

    def test_vocab_perturbed_logits_and_grad_fail(self):
        T, meta = oracle_synth.make_oracle("vocab-mlm", gate_noise=True, vocab_targets=16)
        for name, at in (("out.logits", (1, 5)), ("grad.blocks.0.mlp.gate1.attr.weight", (3, 2)),
                         ("grad.embed.token", (int(T["vocab.ids"][-1]), 1))):
            with self.subTest(name):
                T2 = dict(T)
                t = T[name].clone()
                t[at] += 2e-4 * t.abs().max()
                T2[name] = t
                self.assertEqual(self.failing(self.roundtrip(T2, meta)), [name])

    def test_vocab_file_inputs_are_used(self):
        # every input of the vocabulary path reaches the recomputation: changing one fails the outputs
        T, meta = oracle_synth.make_oracle("vocab-caption", gate_noise=True, vocab_targets=8)
        cases = {
            "logq": ("vocab.logq", lambda t: t * 1.5, {"out.loss"}, {"out.logits"}),
            "noise": ("noise.target.blocks.1.mlp.gate2", lambda t: -t, {"out.target_features"}, {"out.input_features"}),
            "ids": ("vocab.ids", lambda t: t.flip(0), {"out.target_features"}, {"out.input_features"}),
            "read.pos": ("read.pos", lambda t: torch.cat([t[1:2], t[:1], t[2:]]), {"out.input_features"},
                         {"out.target_features"}),
        }
        for what, (key, change, fails, holds) in cases.items():
            with self.subTest(what):
                T2 = dict(T)
                T2[key] = change(T[key])
                bad = set(self.failing(self.roundtrip(T2, meta)))
                self.assertTrue(fails <= bad, bad)
                self.assertFalse(holds & bad, bad)
        meta2 = dict(meta, vocab_attr="[41, 108]")
        bad = set(self.failing(self.roundtrip(T, meta2)))
        self.assertIn("out.target_features", bad)
        self.assertNotIn("out.input_features", bad)

    def test_vocab_read_rules(self):
        T, meta = oracle_synth.make_oracle("vocab-caption", moe="none", vocab_targets=8)
        L = T["input.1.ids"].shape[1]
        tgt = T["read.target"]
        cases = {
            # query j must target caption token j: shift the targets by one read-out
            "target": ("read.target", torch.cat([tgt[1:], tgt[:1]]), "targets token"),
            # a query read-out moved onto its caption token (same sequence and index)
            "not query": ("read.pos", T["read.pos"] - torch.where(torch.arange(len(tgt)) == 0, L, 0).to(torch.int32),
                          "not a caption query token"),
        }
        for what, (key, value, msg) in cases.items():
            with self.subTest(what):
                T2 = dict(T)
                T2[key] = value.to(torch.int32)
                bad = self.failing(self.roundtrip(T2, meta))
                self.assertTrue(any(b.startswith("read-outs: ") and msg in b for b in bad), bad)
        T2 = {k: (v[1:] if k.startswith("read.") else v) for k, v in T.items()}  # one query left unread
        bad = self.failing(self.roundtrip(T2, meta))
        self.assertTrue(any("valid query tokens are not read out" in b for b in bad), bad)
        # MLM: a read-out on a padding position and on SPE
        T, meta = oracle_synth.make_oracle("vocab-mlm", moe="none")
        lengths = T["input.0.lengths"]
        short = int(torch.nonzero(lengths < T["input.0.ids"].shape[1])[0])
        for pos, msg in ((int(lengths[short]) + 1, "a padding token"), (0, "SPE")):
            with self.subTest(msg):
                T2 = dict(T)
                T2["read.seq"] = T["read.seq"].clone()
                T2["read.pos"] = T["read.pos"].clone()
                T2["read.seq"][0], T2["read.pos"][0] = short, pos
                bad = self.failing(self.roundtrip(T2, meta))
                self.assertTrue(any(b.startswith("read-outs: ") and msg in b for b in bad), bad)

    def test_vocab_bad_entries(self):
        T, meta = oracle_synth.make_oracle("vocab-mlm", moe="none", vocab_targets=8)
        T2 = dict(T, labels=torch.zeros(3, dtype=torch.int32), **{"vocab.extra": torch.zeros(2)})
        self.assertEqual(sorted(self.failing(self.roundtrip(T2, meta))),
                         ["labels (a vocab file's targets are read.target)",
                          "vocab.extra (not a tensor of a vocab-mlm file)"])
        P, pm = oracle_synth.make_oracle("pair", "image")
        T2 = dict(P, **{"read.seq": T["read.seq"]})
        self.assertEqual(self.failing(self.roundtrip(T2, pm)), ["read.seq (not a tensor of a pair file)"])
        for key, value in (("read.pos", T["read.pos"] + 100), ("read.target", T["read.target"] + 1000),
                           ("vocab.logq", T["vocab.logq"][1:]), ("target.0.ids", T["input.0.ids"])):
            with self.subTest(key):
                T2 = dict(T, **{key: value})
                if key == "target.0.ids":
                    T2["target.0.lengths"], T2["target.0.attrs"] = T["input.0.lengths"], T["input.0.attrs"]
                with self.assertRaises(ValueError):
                    self.roundtrip(T2, meta)
        T2 = dict(T)
        del T2["read.target"]
        with self.assertRaises(ValueError):
            self.roundtrip(T2, meta)


if __name__ == "__main__":
    unittest.main()
