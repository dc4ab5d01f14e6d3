"""upmoe-analyze gates (paper Fig. 3, issue 18): the gate maps of a trained attribute-MoE checkpoint equal the
gates PyTorch computes from the same safetensors with the reference model (tests/model/reference.py, written
from docs/model.md), for every task of a mixture, every kind of its tokens and every routed block and gate;
the text, JSON and heat-map outputs agree; a dense checkpoint and bad arguments get clear errors."""
import json
import os
import sys
import tempfile
import unittest

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "model"))
from train_fixture import BUILD, TRAIN, build, run  # noqa: E402
from safetensors_io import load  # noqa: E402
import reference as ref  # noqa: E402

ANALYZE = os.path.join(BUILD, "upmoe-analyze")
SMALL = ["--dim", 32, "--layers", 2, "--heads", 2, "--experts", 4, "--image-size", 32, "--batch", 8,
         "--vocab-targets", "sampled:64"]
PREFIX = {"attn": "attn.gate", "fc1": "mlp.gate1", "fc2": "mlp.gate2"}


class AnalyzeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmpdir = tempfile.TemporaryDirectory(prefix="upmoe-analyze-")
        cls.tmp = cls.tmpdir.name
        cls.env = build(cls.tmp)
        cls.moe = os.path.join(cls.tmp, "moe")
        # a few steps at a high rate, so the gates have moved away from their initial values
        run(TRAIN, "--mixture", "three", "--out", cls.moe, *SMALL, "--steps", 8, "--lr", 3e-3, env=cls.env)

    @classmethod
    def tearDownClass(cls):
        cls.tmpdir.cleanup()

    def analyze(self, *argv, ok=True):
        return run(ANALYZE, "gates", "--checkpoint", self.moe, *argv, ok=ok, env=self.env)

    def test_gate_maps_equal_pytorchs_gates(self):
        maps = json.loads(self.analyze("--mixture", "three", "--json").stdout)
        self.assertEqual({t["task"] for t in maps["tasks"]}, {"classification", "image-caption", "mlm"})
        self.assertEqual((maps["experts"], maps["topk"]), (4, 2))
        ckpt = sorted(d for d in os.listdir(os.path.join(self.moe, "checkpoints")))[-1]
        P, _ = load(os.path.join(self.moe, "checkpoints", ckpt, "model.safetensors"))
        P = {k: v.double() for k, v in P.items()}
        checked, tops = 0, set()
        for t in maps["tasks"]:
            kinds = t["kinds"]
            self.assertGreaterEqual(len(kinds), 2)  # an input and a target kind at least
            for k in kinds:
                self.assertEqual(len(k["gates"]), 2 * 3)  # 2 blocks x (attention, fc1, fc2)
                for g in k["gates"]:
                    prefix = f"blocks.{g['block']}.{PREFIX[g['gate']]}"
                    want = ref.gate(P, prefix, [k["attr"]], None, 2, 1e-5, renorm=True)[0]
                    got = torch.tensor(g["values"], dtype=torch.float64)
                    self.assertLess(float((got - want).abs().max()), 1e-5, (t["task"], k["what"], prefix))
                    self.assertEqual(g["top1"], int(torch.argmax(want)), (t["task"], k["what"], prefix))
                    self.assertEqual(int((got > 0).sum()), 2)  # top-2 kept
                    tops.add(g["top1"])
                    checked += 1
        self.assertGreater(checked, 30)
        self.assertGreater(len(tops), 1)  # the map is not one colour

    def test_modality_routing_maps(self):
        """With --moe modality a kind's gates depend on its modality alone: equal for every kind of one
        modality across tasks, and equal to PyTorch's gates with the modality embedding."""
        mod = os.path.join(self.tmp, "modality")
        run(TRAIN, "--mixture", "three", "--out", mod, *SMALL, "--moe", "modality", "--steps", 4, "--lr", 3e-3,
            env=self.env)
        maps = json.loads(run(ANALYZE, "gates", "--checkpoint", mod, "--mixture", "three", "--json",
                              env=self.env).stdout)
        ckpt = sorted(os.listdir(os.path.join(mod, "checkpoints")))[-1]
        P, _ = load(os.path.join(mod, "checkpoints", ckpt, "model.safetensors"))
        P = {k: v.double() for k, v in P.items()}
        by_modality = {}
        for t in maps["tasks"]:
            for k in t["kinds"]:
                text = (k["attr"] >> 5) & 1
                for g in k["gates"]:
                    prefix = f"blocks.{g['block']}.{PREFIX[g['gate']]}"
                    want = ref.gate(P, prefix, [k["attr"]], None, 2, 1e-5, renorm=True)[0]
                    self.assertLess(float((torch.tensor(g["values"], dtype=torch.float64) - want).abs().max()), 1e-5)
                    key = (text, g["block"], g["gate"])
                    by_modality.setdefault(key, set()).add(tuple(round(v, 6) for v in g["values"]))
        self.assertTrue(all(len(v) == 1 for v in by_modality.values()), by_modality)  # one gate per modality
        self.assertEqual({k[0] for k in by_modality}, {0, 1})  # image and text tokens both present

    def test_text_json_and_heat_map_agree(self):
        text = self.analyze("--task", "classification").stdout
        maps = json.loads(self.analyze("--task", "classification", "--json").stdout)
        kinds = maps["tasks"][0]["kinds"]
        rows = [l.split() for l in text.splitlines() if l.startswith("  input") or l.startswith("  target")]
        self.assertEqual(len(rows), len(kinds))
        for row, k in zip(rows, kinds):
            self.assertEqual([int(x) for x in row[-6:]], [g["top1"] for g in k["gates"]])
            self.assertIn(k["attributes"], row)
        png = os.path.join(self.tmp, "gates.png")
        p = self.analyze("--mixture", "three", "--plot", png)
        self.assertIn(f"heat map: {png}", p.stdout)
        with open(png, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

    def test_task_routing_maps(self):
        """Task routing: each task's gates read its own row of the task embedding (PyTorch's gate with the
        task's id from the checkpoint's table equals the map); task-specific weights map every token of a
        task to its own expert; a task the model never trained on has no map."""
        for moe in ("task", "task-specific"):
            ckpt = os.path.join(self.tmp, moe)
            run(TRAIN, "--mixture", "three", "--out", ckpt, *SMALL, "--moe", moe, "--steps", 4, "--lr", 3e-3,
                env=self.env)
            step = sorted(os.listdir(os.path.join(ckpt, "checkpoints")))[-1]
            with open(os.path.join(ckpt, "checkpoints", step, "state.json")) as f:
                names = json.load(f)["model"]["tasks"]
            P, _ = load(os.path.join(ckpt, "checkpoints", step, "model.safetensors"))
            P = {k: v.double() for k, v in P.items()}
            maps = json.loads(run(ANALYZE, "gates", "--checkpoint", ckpt, "--mixture", "three", "--json",
                                  env=self.env).stdout)
            tops = {}
            for t in maps["tasks"]:
                tid = names.index(t["task"]) + 1
                for k in t["kinds"]:
                    for g in k["gates"]:
                        prefix = f"blocks.{g['block']}.{PREFIX[g['gate']]}"
                        E = 3 if moe == "task-specific" else 4
                        want = ref.gate(P, prefix, [k["attr"]], None, 1 if E == 3 else 2, 1e-5, renorm=True,
                                        task=tid, experts=E)[0]
                        got = torch.tensor(g["values"], dtype=torch.float64)
                        self.assertLess(float((got - want).abs().max()), 1e-5, (moe, t["task"], prefix))
                        tops.setdefault(t["task"], set()).add(g["top1"])
            if moe == "task-specific":
                self.assertEqual(tops, {n: {i} for i, n in enumerate(names)})
            p = run(ANALYZE, "gates", "--checkpoint", ckpt, "--task", "image-text-retrieval", ok=False, env=self.env)
            self.assertEqual(p.returncode, 2)
            self.assertIn("task 'image-text-retrieval' was not met in training by this %s model (its tasks: mlm, "
                          "image-caption, classification)" % moe, p.stderr)

    def test_interference_equals_pytorchs(self):
        """upmoe-analyze interference (paper Eq. 1-2): the task x task matrix of the FFN blocks 1 and 2 equals the
        same quantity PyTorch computes from the checkpoint's weights on the very batches (the first pass dumped as
        step files; gradients by the reference model in float64): m_j = mean of task j's normalised FFN
        gradients, I(i, j) = mean over task i's batches of (m_j . g_i) / (m_i . g_i); the diagonal is 1; the same
        seed gives the same bytes. The checkpoint's weights are moved away from their collapsed start first (as the
        model oracle does: noise of std 0.1, LayerScale near 0.5), where a few steps leave features nearly equal
        and the gradients mostly cancellation, which float32 cannot resolve to a float64 reference."""
        import shutil
        from safetensors_io import save
        src = os.path.join(self.moe, "checkpoints", sorted(os.listdir(os.path.join(self.moe, "checkpoints")))[-1])
        ckpt = os.path.join(self.tmp, "perturbed", os.path.basename(src))
        os.makedirs(ckpt, exist_ok=True)
        shutil.copy(os.path.join(src, "state.json"), ckpt)
        P, meta = load(os.path.join(src, "model.safetensors"))
        g = torch.Generator().manual_seed(5)
        for k, v in P.items():
            if k != "logit_scale":
                v += 0.1 * torch.randn(v.shape, generator=g) + (0.5 if k.endswith((".ls1", ".ls2")) else 0.0)
        save(os.path.join(ckpt, "model.safetensors"), P, meta)
        dump = os.path.join(self.tmp, "interference")
        args = ["interference", "--checkpoint", ckpt, "--mixture", "three", "--layers", "1,2", "--batches", 2,
                "--image-size", 32, "--batch", 8, "--vocab-targets", "sampled:64", "--json"]
        p = run(ANALYZE, *args, "--dump", dump, env=self.env)
        doc = json.loads(p.stdout)
        self.assertEqual(doc["tasks"], ["mlm", "image-caption", "classification"])  # the plan's order
        self.assertEqual(run(ANALYZE, *args, env=self.env).stdout, p.stdout)  # deterministic
        import sqlite3  # stored next to the run: one row per block and task pair (the second call replaced the first's)
        con = sqlite3.connect(os.path.join(self.tmp, "catalog.db"))
        stored = con.execute("SELECT block, task_i, task_j, value, batches, step FROM interference WHERE checkpoint = ? "
                             "ORDER BY id", (doc["checkpoint"],)).fetchall()
        con.close()
        T = doc["tasks"]
        self.assertEqual([(r[0], r[1], r[2], r[4], r[5]) for r in stored],
                         [(l["block"], i, j, 2, 8) for l in doc["layers"] for i in T for j in T])
        for got, want in zip([r[3] for r in stored], [v for l in doc["layers"] for row in l["matrix"] for v in row]):
            self.assertAlmostEqual(got, want, places=12)  # the JSON's printing rounds the last digit
        import oracle_compare
        grads = {t: {1: [], 2: []} for t in doc["tasks"]}
        for f in sorted(os.listdir(dump)):
            tensors, meta = oracle_compare.load(os.path.join(dump, f))
            case = oracle_compare.build_passes(tensors, meta)
            _, g = ref.run(case["cfg"], P, case["formulation"], case["input"], case["target"], case["labels"],
                           case["weight"], torch.float64, case["read"], case["logq"])
            for b in (1, 2):
                names = [f"blocks.{b - 1}.mlp.{l}.{w}" for l in ("fc1", "fc2") for w in ("weight", "bias")]
                grads[meta["task"]][b].append(torch.cat([g[n].reshape(-1) for n in names]))
        for layer in doc["layers"]:
            b, T = layer["block"], doc["tasks"]
            self.assertEqual(layer["parameters"], grads[T[0]][b][0].numel())
            m = {t: torch.stack([x / x.norm() for x in grads[t][b]]).mean(0) for t in T}
            want = [[float(torch.stack([(m[j] @ x) / (m[i] @ x) for x in grads[i][b]]).mean()) for j in T] for i in T]
            got = layer["matrix"]
            for i in range(len(T)):
                self.assertAlmostEqual(got[i][i], 1.0, places=6)
                for j in range(len(T)):
                    self.assertLess(abs(got[i][j] - want[i][j]), 1e-3 * max(1.0, abs(want[i][j])),
                                    (b, T[i], T[j], got[i][j], want[i][j]))
        p = run(ANALYZE, "interference", "--checkpoint", self.moe, "--mixture", "images-only", "--layers", 1, ok=False,
                env=self.env)
        self.assertEqual(p.returncode, 2)
        self.assertIn("needs two or more", p.stderr)
        p = run(ANALYZE, "interference", "--checkpoint", self.moe, "--mixture", "three", "--layers", "3", ok=False,
                env=self.env)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--layers takes blocks 1..2", p.stderr)

    def test_token_routing_shares(self):
        """Token and context routing's gates read the data: gate maps are measured on batches, per task and side
        (input tokens; target tokens: label texts, captions' vocabulary entries), the share of tokens whose first
        choice is each expert at every routed block and gate (they sum to 1 over the experts, over the tokens
        seen); deterministic for a seed; --task and --plot are refused for it."""
        for moe in ("token", "context"):
            with self.subTest(moe=moe):
                self.token_shares(moe)

    def token_shares(self, moe):
        ckpt = os.path.join(self.tmp, moe)
        run(TRAIN, "--mixture", "three", "--out", ckpt, *SMALL, "--moe", moe, "--steps", 4, "--lr", 3e-3,
            env=self.env)
        args = ["gates", "--checkpoint", ckpt, "--mixture", "three", "--batches", 2, "--image-size", 32, "--batch", 8,
                "--vocab-targets", "sampled:64"]
        doc = json.loads(run(ANALYZE, *args, "--json", env=self.env).stdout)
        self.assertEqual((doc["routing"], doc["experts"], doc["batches"]), (moe, 4, 2))
        self.assertEqual(sorted(t["task"] for t in doc["tasks"]), ["classification", "image-caption", "mlm"])
        for t in doc["tasks"]:
            self.assertEqual([s["side"] for s in t["sides"]], ["input", "target"])
            for s in t["sides"]:
                self.assertEqual(len(s["gates"]), 2 * 3)  # 2 blocks x (attention, fc1, fc2)
                for g in s["gates"]:
                    self.assertGreater(g["tokens"], 0, (t["task"], s["side"], g))
                    self.assertAlmostEqual(sum(g["shares"]), 1.0, places=9)
                    self.assertTrue(all(0 <= x <= 1 for x in g["shares"]))
        self.assertEqual(json.loads(run(ANALYZE, *args, "--json", env=self.env).stdout), doc)
        text = run(ANALYZE, *args, env=self.env).stdout
        self.assertIn("(%s routing): share of tokens per expert" % moe, text)
        p = run(ANALYZE, "gates", "--checkpoint", ckpt, "--task", "classification", ok=False, env=self.env)
        self.assertEqual(p.returncode, 2)
        self.assertIn("measured on batches: give --mixture", p.stderr)

    def test_errors(self):
        dense = os.path.join(self.tmp, "dense")
        run(TRAIN, "--mixture", "images-only", "--out", dense, *SMALL, "--moe", "none", "--steps", 1, env=self.env)
        p = run(ANALYZE, "gates", "--checkpoint", dense, "--mixture", "three", ok=False, env=self.env)
        self.assertEqual(p.returncode, 2)
        self.assertIn("gate maps need a routed model, attribute, modality, task or task-specific (this one is none)",
                      p.stderr)
        p = self.analyze("--mixture", "nosuch", ok=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("nosuch", p.stderr)
        p = self.analyze(ok=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("either --mixture or --task", p.stderr)
        p = self.analyze("--task", "classification", "--plot", "x.pdf", ok=False)
        self.assertEqual(p.returncode, 2)
        p = run(ANALYZE, "interfere", ok=False, env=self.env)
        self.assertEqual(p.returncode, 2)
        self.assertIn("unknown command 'interfere'", p.stderr)


if __name__ == "__main__":
    unittest.main()
