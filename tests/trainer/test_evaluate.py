"""upmoe-eval's full pass (the paper's protocol, trainer/evaluate.c): every sample of a dataset once, in
shard order, batched, with the metrics of its formulation. Checked on the trainer fixture's real shards
after a short training run: the sample count equals what `upmoe-catalog verify --store` counted
independently, two runs print the same bytes, --limit stops where asked, a mixture is evaluated dataset by
dataset in its order, the metrics are consistent (R@1 <= R@5 <= R@10, top-1 <= top-5, chance from the
label set and the gallery), the results land in the catalog (schema v7) as printed, with the checkpoint's
run and step, and bad requests fail with the CLI's exit statuses, nothing printed on standard output and
nothing stored. Learning under this protocol is checked in test_heldout.py."""
import json
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from train_fixture import BUILD, CAT, SHARD, TRAIN, build, run, testdata  # noqa: E402

EVAL = os.path.join(BUILD, "upmoe-eval")
SMALL = ["--dim", 32, "--layers", 2, "--heads", 2, "--experts", 4, "--batch", 8, "--image-size", 32,
         "--vocab-targets", "sampled:64", "--lr", 2e-3, "--threads", 2]


class EvaluateTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmpdir = tempfile.TemporaryDirectory(prefix="upmoe-evaluate-")
        cls.tmp = cls.tmpdir.name
        cls.env = build(cls.tmp)
        cls.run_dir = os.path.join(cls.tmp, "run")
        run(TRAIN, "--mixture", "four", "--out", cls.run_dir, *SMALL, "--steps", 12, "--quiet", env=cls.env)

    @classmethod
    def tearDownClass(cls):
        cls.tmpdir.cleanup()

    def evaluate(self, *args, ok=True):
        p = run(EVAL, "--checkpoint", self.run_dir, "--image-size", 32, *args, env=self.env, ok=ok)
        return p if not ok else (json.loads(p.stdout) if "--json" in args else p.stdout)

    def test_every_sample_once_as_verify_counts(self):
        run(CAT, "verify", "images", "--store", env=self.env)
        shown = json.loads(run(CAT, "show", "dataset", "images", "--json", env=self.env).stdout)
        self.assertGreater(shown["num_samples"], 100)
        res = self.evaluate("--dataset", "images", "--batch", 64, "--json")["datasets"]
        self.assertEqual(len(res), 1)
        r = res[0]
        self.assertEqual((r["dataset"], r["formulation"], r["skipped"]), ("images", "label", 0))
        self.assertEqual(r["samples"], shown["num_samples"])  # a last, shorter batch included
        self.assertEqual(r["scored"], r["samples"])
        with open(os.path.join(self.tmp, "data", "classes.txt"), encoding="utf-8") as f:
            labels = len([line for line in f if line.strip()])  # the label set as the shard builder wrote it
        self.assertAlmostEqual(r["chance"]["top1"], 1 / labels, places=6)
        self.assertAlmostEqual(r["chance"]["top5"], 5 / labels, places=6)
        self.assertLessEqual(r["metrics"]["top1"], r["metrics"]["top5"])
        self.assertGreater(r["loss"], 0)

    def test_two_runs_give_the_same_bytes(self):
        args = ["--dataset", "images", "--dataset", "retrieval", "--dataset", "captions", "--limit", 40, "--batch", 16,
                "--vocab-targets", "sampled:64", "--json"]
        a = run(EVAL, "--checkpoint", self.run_dir, "--image-size", 32, *args, env=self.env).stdout
        b = run(EVAL, "--checkpoint", self.run_dir, "--image-size", 32, *args, env=self.env).stdout
        self.assertEqual(a, b)
        self.assertEqual([r["samples"] for r in json.loads(a)["datasets"]], [40, 40, 40])

    def test_retrieval_over_the_whole_split(self):
        r = self.evaluate("--dataset", "retrieval", "--batch", 50, "--json")["datasets"][0]
        n = r["samples"]
        self.assertEqual((r["formulation"], r["scored"], r["loss"]), ("pair", n, None))
        m, c = r["metrics"], r["chance"]
        for d in ("i2t", "t2i"):
            self.assertLessEqual(m[f"{d}_r1"], m[f"{d}_r5"])
            self.assertLessEqual(m[f"{d}_r5"], m[f"{d}_r10"])
        # the gallery is the whole split, not a batch of 50: chance of R@1 is (ground truths) / n, at most
        # a few captions per image over the whole split
        self.assertLess(c["i2t_r1"], 5 / n)
        mean = sum(m[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10)) / 6
        self.assertAlmostEqual(m["recall_mean"], mean, places=5)

    def test_mixture_dataset_by_dataset_in_order(self):
        res = self.evaluate("--mixture", "four", "--limit", 24, "--batch", 8, "--vocab-targets", "sampled:64",
                            "--json")["datasets"]
        self.assertEqual([r["dataset"] for r in res], ["book", "captions", "images", "retrieval"])
        self.assertEqual([r["formulation"] for r in res], ["vocab-mlm", "vocab-caption", "label", "pair"])
        for r in res:
            self.assertEqual(r["samples"], 24)
            for v in r["metrics"].values():
                self.assertTrue(0 <= v <= 1, r)

    def test_full_vocabulary_gives_perplexity(self):
        r = self.evaluate("--dataset", "book", "--limit", 16, "--batch", 8, "--json")["datasets"][0]
        self.assertEqual(r["formulation"], "vocab-mlm")
        self.assertGreater(r["scored"], 0)
        import math
        self.assertAlmostEqual(r["metrics"]["perplexity"], math.exp(r["loss"]), delta=1e-3 * r["metrics"]["perplexity"])
        self.assertAlmostEqual(r["chance"]["token_accuracy"], 1 / 49411, places=6)

    def test_input_blind_baseline_counted_from_the_references(self):
        """The caption pass's input_blind_accuracy (tasks/blind_baseline.h) equals the best image-blind token
        accuracy counted here from the references it writes to --predictions: the most frequent token at each
        caption position (the caption's BPE ids, then <|endoftext|>), over all positions. MLM gets one too."""
        pred = os.path.join(self.tmp, "blind-predictions.jsonl")
        r = self.evaluate("--dataset", "captions", "--limit", 24, "--batch", 8, "--json", "--no-store",
                          "--predictions", pred)["datasets"][0]
        with open(pred, encoding="utf-8") as f:
            refs = [json.loads(line)["references"][0] for line in f]
        self.assertEqual(len(refs), 24)
        ids = run(os.path.join(BUILD, "upmoe-tokenize"), "--vocab", self.env["UPMOE_BPE_VOCAB"], "--no-specials", "-",
                  input="\n".join(refs) + "\n").stdout.splitlines()
        seqs = [[int(v) for v in line.split()] + [49407] for line in ids]
        counts = {}
        for t in seqs:
            for j, v in enumerate(t):
                counts.setdefault(j, {}).setdefault(v, 0)
                counts[j][v] += 1
        blind = sum(max(c.values()) for c in counts.values()) / sum(len(t) for t in seqs)
        self.assertEqual(r["scored"], sum(len(t) for t in seqs))
        self.assertAlmostEqual(r["metrics"]["input_blind_accuracy"], blind, places=6)
        m = self.evaluate("--dataset", "book", "--limit", 16, "--batch", 8, "--json", "--no-store")["datasets"][0]
        self.assertTrue(0 < m["metrics"]["input_blind_accuracy"] < 1, m)

    def test_text_output_and_limit(self):
        out = self.evaluate("--dataset", "images", "--limit", 10)
        self.assertIn("images (classification, label): 10 samples", out)
        self.assertRegex(out, r"top1 +[0-9.]+ +\(chance 0\.0833")

    def results(self, *args):
        return json.loads(run(CAT, "results", "--json", *args, env=self.env).stdout)

    def test_results_stored_in_the_catalog(self):
        before = len(self.results())
        out = self.evaluate("--dataset", "images", "--dataset", "retrieval", "--limit", 30, "--json")
        rows = self.results()[before:]
        # one row per dataset and metric, plus the label dataset's loss (pair has none)
        self.assertEqual(len(rows), 2 + 1 + 7)
        with open(os.path.join(out["checkpoint"], "state.json"), encoding="utf-8") as f:
            state = json.load(f)
        for r in rows:
            self.assertEqual((r["run"], r["step"], r["checkpoint"], r["samples"]),
                             (state["run_id"], state["step"], out["checkpoint"], 30))
        by = {(r["dataset"], r["metric"]): r for r in rows}
        for res in out["datasets"]:
            for name, value in res["metrics"].items():
                self.assertAlmostEqual(by[(res["dataset"], name)]["value"], value, places=6)
                self.assertEqual(by[(res["dataset"], name)]["formulation"], res["formulation"])
            for name, chance in res["chance"].items():
                self.assertAlmostEqual(by[(res["dataset"], name)]["chance"], chance, places=6)
        self.assertAlmostEqual(by[("images", "loss")]["value"], out["datasets"][0]["loss"], places=6)
        self.assertIsNone(by[("images", "loss")]["chance"])
        # filters, CSV and the table
        self.assertEqual({r["dataset"] for r in self.results("--dataset", "retrieval")}, {"retrieval"})
        self.assertEqual({r["run"] for r in self.results("--run", state["run_id"])}, {state["run_id"]})
        csv = run(CAT, "results", "--csv", "--dataset", "images", env=self.env).stdout.splitlines()
        self.assertEqual(csv[0], "run,step,dataset,task,metric,value,chance,samples,at")
        self.assertIn(f"{state['run_id']},{state['step']},images,classification,top1,", csv[-3] + csv[-2] + csv[-1])
        self.assertIn("top5", run(CAT, "results", env=self.env).stdout)
        # --no-store leaves the catalog as it was
        n = len(self.results())
        self.evaluate("--dataset", "images", "--limit", 8, "--no-store")
        self.assertEqual(len(self.results()), n)

    def test_checkpoint_as_a_job_id(self):
        jobs = os.path.join(BUILD, "upmoe-jobs")
        queued = run(jobs, "submit", "pretrain", "--mixture", "images-only", "--steps", 3, "--name", "not-run", "--",
                     *SMALL, env=self.env).stdout.strip()
        p = run(EVAL, "--checkpoint", queued, "--dataset", "images", "--limit", 8, env=self.env, ok=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn(f"job {queued} has no checkpoint yet (it is queued)", p.stderr)
        run(jobs, "cancel", queued, env=self.env)
        jid = run(jobs, "submit", "pretrain", "--mixture", "images-only", "--steps", 3, "--name", "eval-me", "--",
                  *SMALL, "--eval-every", 2, "--eval-dataset", "images", "--eval-limit", 8, env=self.env).stdout.strip()
        run(jobs, "worker", "--once", env=self.env, timeout=600)
        status = json.loads(run(jobs, "status", jid, "--json", env=self.env).stdout)
        self.assertEqual(status["state"], "succeeded")
        # the job evaluated itself at steps 2 and 3: status shows the newest, plot draws both
        self.assertEqual(status["eval"]["images"]["step"], 3)
        self.assertEqual(set(status["eval"]["images"]), {"step", "loss", "top1", "top5"})
        self.assertRegex(run(jobs, "status", jid, env=self.env).stdout, r"eval images \(step 3\): loss [0-9.]+, top1")
        png = os.path.join(self.tmp, "job.png")
        run(jobs, "plot", jid, "-o", png, env=self.env)
        with open(png, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        out = json.loads(run(EVAL, "--checkpoint", jid, "--dataset", "images", "--limit", 8, "--image-size", 32,
                             "--json", env=self.env).stdout)
        self.assertEqual(out["checkpoint"], status["last_checkpoint"])
        self.assertEqual(out["datasets"][0]["samples"], 8)
        p = run(EVAL, "--checkpoint", 9999, "--dataset", "images", env=self.env, ok=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("no job 9999", p.stderr)

    def test_novel_cloze_task_against_scikit_learn(self):
        """A task the model never saw, registered purely as catalog rows: a GLUE-style cloze over sentence
        pairs of a real book (does the second sentence follow the first?), read at the prompt's <|spe|>.
        Its accuracy, F1 of class 1 and Matthews' correlation, as stored in the catalog at full precision,
        equal scikit-learn's on the predictions upmoe-eval writes (to 1e-9)."""
        import io
        import random
        import tarfile
        from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
        from train_fixture import testdata
        with open(os.path.join(testdata(), "text", "pg1661.txt"), encoding="utf-8") as f:
            text = " ".join(f.read().split())
        sents = [x.strip() + "." for x in text.split(". ") if 20 < len(x) < 200][:400]
        rng = random.Random(3)
        tar = os.path.join(self.tmp, "nsp-000000.tar")
        with tarfile.open(tar, "w") as t:
            for i in range(90):
                a = rng.randrange(len(sents) - 1)
                follows = rng.random() < 0.5
                b = a + 1 if follows else rng.randrange(len(sents))
                doc = json.dumps({"sentence1": sents[a], "sentence2": sents[b], "label": int(follows)}).encode()
                info = tarfile.TarInfo(f"s{i:05d}.json")
                info.size = len(doc)
                t.addfile(info, io.BytesIO(doc))
        answers = os.path.join(self.tmp, "no-yes.txt")
        with open(answers, "w", encoding="utf-8") as f:
            f.write("no\nyes\n")
        c = lambda *a: run(CAT, *a, env=self.env)  # noqa: E731
        c("add", "labels", "no-yes", answers)
        c("add", "task", "next-sentence", "--formulation", "label", "--input", "json:sentence1=text", "--input",
          "json:sentence2=text", "--target", "json:label", "--labels", "no-yes", "--max-text-len", 96, "--prompt",
          "{json:sentence1} ? <|endoftext|> it is <|spe|> , {json:sentence2} <|endoftext|>")
        c("add", "dataset", "next-sentence", "--task", "next-sentence", "--split", "val", "--batch", 16, "--url", tar)
        preds = os.path.join(self.tmp, "nsp-predictions.jsonl")
        before = len(self.results("--dataset", "next-sentence"))
        out = self.evaluate("--dataset", "next-sentence", "--predictions", preds, "--json")["datasets"][0]
        self.assertEqual((out["samples"], out["scored"]), (90, 90))
        with open(preds, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        self.assertEqual([r["index"] for r in rows], list(range(90)))
        y, p = [r["label"] for r in rows], [r["prediction"] for r in rows]
        print(f"next-sentence: labels {sum(y)}/{len(y)} positive, predictions {sum(p)}/{len(p)} positive", file=sys.stderr)
        self.assertTrue(0 < sum(p) < len(p) and 0 < sum(y) < len(y))  # both classes on both sides: no 0/0
        stored = {r["metric"]: r["value"] for r in self.results("--dataset", "next-sentence")[before:]}
        self.assertEqual(set(stored), {"loss", "top1", "top5", "f1", "mcc"})
        self.assertAlmostEqual(stored["top1"], accuracy_score(y, p), delta=1e-9)
        self.assertAlmostEqual(stored["f1"], f1_score(y, p, zero_division=0), delta=1e-9)
        self.assertAlmostEqual(stored["mcc"], matthews_corrcoef(y, p), delta=1e-9)
        self.assertEqual(stored["top5"], 1.0)  # two classes
        # deterministic, and the predictions file is rewritten whole
        again = self.evaluate("--dataset", "next-sentence", "--predictions", preds, "--json", "--no-store")
        self.assertEqual(again["datasets"][0]["metrics"], out["metrics"])

    def test_evaluation_during_training(self):
        """upmoe-train --eval-every N --eval-dataset D: the full pass after every N steps and the last, stored
        with the run and step; side-effect free (the weights equal those of the same run without it)."""
        plain, evald = os.path.join(self.tmp, "plain"), os.path.join(self.tmp, "evald")
        common = ["--mixture", "four", *SMALL, "--steps", 10, "--checkpoint-every", 10, "--quiet"]
        run(TRAIN, "--out", plain, *common, env=self.env)
        run(TRAIN, "--out", evald, *common, "--eval-every", 4, "--eval-dataset", "images", "--eval-dataset",
            "retrieval", "--eval-limit", 24, env=self.env)
        def weights(d):
            with open(os.path.join(d, "checkpoints", "step-00000010", "model.safetensors"), "rb") as f:
                return f.read()
        self.assertEqual(weights(plain), weights(evald))
        with open(os.path.join(evald, "checkpoints", "step-00000010", "state.json"), encoding="utf-8") as f:
            run_id = json.load(f)["run_id"]
        rows = self.results("--run", run_id)
        self.assertEqual(sorted({(r["step"], r["dataset"]) for r in rows}),
                         [(s, d) for s in (4, 8, 10) for d in ("images", "retrieval")])
        for r in rows:
            self.assertEqual(r["samples"], 24)
            self.assertEqual(r["checkpoint"], os.path.join(evald, "checkpoints", "step-00000010") if r["step"] == 10
                             else evald)
        # the last step's numbers equal upmoe-eval's on the checkpoint
        mine = json.loads(run(EVAL, "--checkpoint", evald, "--dataset", "images", "--limit", 24, "--image-size", 32,
                              "--batch", 8, "--no-store", "--json", env=self.env).stdout)["datasets"][0]
        at10 = {r["metric"]: r["value"] for r in rows if r["step"] == 10 and r["dataset"] == "images"}
        self.assertAlmostEqual(at10["top1"], mine["metrics"]["top1"], places=6)
        self.assertAlmostEqual(at10["loss"], mine["loss"], places=5)
        # a dataset that cannot be evaluated stops the run before it starts
        p = run(TRAIN, "--out", os.path.join(self.tmp, "typo"), *common, "--eval-dataset", "imagez", env=self.env,
                ok=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("unknown dataset 'imagez'", p.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "typo", "checkpoints")))

    def test_several_captions_per_sample(self):
        """A retrieval split whose samples carry one to three captions, one per line of txt (the COCO
        convention): every caption joins the gallery. R@1 does not change when each caption is given twice
        (equal captions are one ground truth), while the gallery doubles."""
        import io
        import tarfile
        from train_fixture import testdata
        art = os.path.join(testdata(), "images", "art4apps")
        pics = sorted((c, f) for c in os.listdir(art) for f in os.listdir(os.path.join(art, c)))[::12][:40]

        def shard(name, captions_of):
            path = os.path.join(self.tmp, f"{name}-000000.tar")
            with tarfile.open(path, "w") as t:
                for i, (c, f) in enumerate(pics):
                    with open(os.path.join(art, c, f), "rb") as fp:
                        jpg = fp.read()
                    for ext, data in (("jpg", jpg), ("txt", "\n".join(captions_of(i, c, f)).encode() + b"\n")):
                        info = tarfile.TarInfo(f"p{i:04d}.{ext}")
                        info.size = len(data)
                        t.addfile(info, io.BytesIO(data))
            run(CAT, "add", "dataset", name, "--task", "image-text-retrieval", "--split", "test", "--batch", 16,
                "--url", path, env=self.env)
            return self.evaluate("--dataset", name, "--no-store", "--json")["datasets"][0]

        word = lambda f: os.path.splitext(f)[0].replace("_", " ")  # noqa: E731
        multi = shard("multi-captions", lambda i, c, f: [f"a picture of a {word(f)}", f"{c}: {word(f)}",
                                                         f"the {word(f)} again"][:1 + i % 3])
        self.assertEqual((multi["samples"], multi["captions"]), (40, sum(1 + i % 3 for i in range(40))))
        m = multi["metrics"]
        for d in ("i2t", "t2i"):
            self.assertTrue(0 <= m[f"{d}_r1"] <= m[f"{d}_r5"] <= m[f"{d}_r10"] <= 1, m)
        one = shard("one-caption", lambda i, c, f: [f"a picture of a {word(f)}"])
        two = shard("same-caption-twice", lambda i, c, f: [f"a picture of a {word(f)}"] * 2)
        self.assertEqual((one["captions"], two["captions"]), (40, 80))
        for k in ("i2t_r1", "t2i_r1"):
            self.assertAlmostEqual(one["metrics"][k], two["metrics"][k], places=6)
            self.assertAlmostEqual(one["chance"][k], two["chance"][k], places=6)

    def test_evaluation_as_a_job(self):
        """upmoe-jobs submit eval: queued, claimed and run by a worker like any job (upmoe-eval under the job's
        attempt), its results stored in the catalog; bad submissions are refused before anything is queued."""
        jobs = os.path.join(BUILD, "upmoe-jobs")
        before = len(self.results("--dataset", "retrieval"))
        jid = run(jobs, "submit", "eval", "--checkpoint", self.run_dir, "--dataset", "images", "--dataset",
                  "retrieval", "--limit", 20, "--name", "eval-two", "--", "--image-size", 32, env=self.env).stdout.strip()
        status = json.loads(run(jobs, "status", jid, "--json", env=self.env).stdout)
        self.assertEqual((status["state"], status["name"], status["kind"]), ("queued", "eval-two", "eval"))
        self.assertRegex(status["command"], r"/upmoe-eval --catalog \S+ --job \d+ --attempt 1 --checkpoint ")
        self.assertNotIn("--out", status["command"])
        run(jobs, "worker", "--once", env=self.env, timeout=600)
        status = json.loads(run(jobs, "status", jid, "--json", env=self.env).stdout)
        self.assertEqual(status["state"], "succeeded", status)
        self.assertEqual(status["attempt"], 1)
        rows = self.results("--dataset", "retrieval")[before:]
        self.assertEqual({(r["metric"], r["samples"]) for r in rows},
                         {(m, 20) for m in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "recall_mean")})
        with open(status["log"], encoding="utf-8") as f:
            log = f.read()
        self.assertIn("upmoe-eval --catalog", log)
        self.assertIn(f"--job {jid} --attempt 1", log)
        for argv, msg in ((["--dataset", "images"], "needs --checkpoint"),
                          (["--checkpoint", self.run_dir], "one of --mixture or --dataset"),
                          (["--checkpoint", os.path.join(self.tmp, "nope"), "--dataset", "images"], "no checkpoint"),
                          (["--checkpoint", self.run_dir, "--dataset", "images", "--time", "10"],
                           "need --backend slurm"),
                          (["--checkpoint", self.run_dir, "--dataset", "images", "--backend", "pbs"],
                           "--backend must be local or slurm")):
            p = run(jobs, "submit", "eval", *argv, env=self.env, ok=False)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn(msg, p.stderr)
        p = run(jobs, "submit", "eval", "--checkpoint", self.run_dir, "--dataset", "books-wiki", env=self.env, ok=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("no shard URL", p.stderr)

    def test_migration_to_evaluation_jobs(self):
        """A catalog of schema version 7 (jobs.kind CHECK 'pretrain' only) takes evaluation jobs after its
        first write open: the CHECK is widened in place, existing jobs and their events stay, the file passes
        SQLite's integrity check, and other kinds are still refused."""
        import sqlite3
        sys.path.insert(0, os.path.join(HERE, "..", "support"))
        import old_catalog
        old = os.path.join(self.tmp, "v7.db")
        old_catalog.make(os.path.join(self.tmp, "catalog.db"), old, 7)  # jobs.kind CHECK 'pretrain' only
        con = sqlite3.connect(old)
        try:
            self.assertIn("CHECK (kind IN ('pretrain'))", con.execute(
                "SELECT sql FROM sqlite_schema WHERE name = 'jobs'").fetchone()[0])
            jobs_before = con.execute("SELECT count(*) FROM jobs").fetchone()[0]
            events_before = con.execute("SELECT count(*) FROM job_events").fetchone()[0]
        finally:
            con.close()
        env = dict(self.env, UPMOE_CATALOG=old)
        jid = run(os.path.join(BUILD, "upmoe-jobs"), "submit", "eval", "--checkpoint", self.run_dir, "--dataset",
                  "images", env=env).stdout.strip()
        con = sqlite3.connect(old)
        try:
            self.assertEqual(con.execute("PRAGMA user_version").fetchone()[0], 11)  # and on to the newest
            self.assertEqual([r[1] for r in con.execute("PRAGMA table_info(metrics)")][-2:], ["balance_loss", "dropped"])
            self.assertEqual(con.execute("PRAGMA integrity_check").fetchone()[0], "ok")
            self.assertEqual(con.execute("SELECT kind FROM jobs WHERE id = ?", (int(jid),)).fetchone()[0], "eval")
            self.assertEqual(con.execute("SELECT count(*) FROM jobs").fetchone()[0], jobs_before + 1)
            self.assertGreaterEqual(con.execute("SELECT count(*) FROM job_events").fetchone()[0], events_before)
            with self.assertRaises(sqlite3.IntegrityError):
                con.execute("INSERT INTO jobs (name, kind, argv, out_dir) VALUES ('x', 'bogus', '[]', '/tmp')")
        finally:
            con.close()

    def test_video_views_are_averaged(self):
        """A video label task (real videos of eight codecs and containers, three classes): each video is
        scored once (samples = videos), from 3 crops x 1 clip by default; other view counts change the
        scores but not the count; the same views give the same bytes; bad view options exit 2. (The
        views themselves are checked in test_collate.c, the probability averaging in
        test_label_metrics.c.)"""
        td = testdata()
        vids = os.path.join(self.tmp, "videos")
        for cls, files in (("bird", ["cockatoo.mp4"]), ("short", ["realshort.mp4"]),
                           ("codec", ["codecs/" + f for f in sorted(os.listdir(os.path.join(td, "video", "codecs")))])):
            os.makedirs(os.path.join(vids, cls), exist_ok=True)
            for f in files:  # one member name for all: FFmpeg finds the container from the bytes
                os.symlink(os.path.join(td, "video", f),
                           os.path.join(vids, cls, os.path.basename(f).rsplit(".", 1)[0] + ".mp4"))
        out = os.path.join(self.tmp, "video-shards")
        run(SHARD, "folder", vids, "--kind", "video-class", "--out", out, "--prefix", "videos",
            "--write-classes", os.path.join(out, "classes.txt"))
        c = lambda *a: run(CAT, *a, env=self.env)  # noqa: E731
        c("add", "labels", "video-classes", os.path.join(out, "classes.txt"))
        c("add", "task", "codec-classification", "--formulation", "label", "--input", "mp4=video", "--target", "cls",
          "--labels", "video-classes")
        c("add", "dataset", "videos", "--task", "codec-classification", "--batch", 4, "--url",
          os.path.join(out, "videos-000000.tar"))
        nvid = sum(len(fs) for _, _, fs in os.walk(vids))
        self.assertEqual(nvid, 8)

        def ev(*views):
            r = self.evaluate("--dataset", "videos", "--json", "--no-store", *views)["datasets"][0]
            self.assertEqual((r["samples"], r["scored"], r["skipped"]), (nvid, nvid, 0), views)
            return r

        one, default, six = ev("--video-crops", 1, "--video-clips", 1), ev(), ev("--video-crops", 3, "--video-clips", 2)
        self.assertEqual(default, ev("--video-crops", 3, "--video-clips", 1))
        self.assertEqual(six, ev("--video-crops", 3, "--video-clips", 2))
        self.assertNotEqual(one["loss"], default["loss"])
        self.assertNotEqual(default["loss"], six["loss"])
        for r in (one, default, six):
            self.assertLessEqual(r["metrics"]["top1"], r["metrics"]["top5"])
            self.assertAlmostEqual(r["chance"]["top1"], 1 / 3, places=6)
        for bad in (["--video-crops", 2], ["--video-clips", 0], ["--video-clips", 17]):
            p = self.evaluate("--dataset", "videos", *bad, ok=False)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn(str(bad[0]), p.stderr)

    def test_bad_data(self):
        """A label set that lacks classes of the data, a split with no sample, and a checkpoint whose weights
        are of another model size than its configuration: clear errors, exit 1, nothing stored."""
        stored = len(self.results())
        url = json.loads(run(CAT, "show", "dataset", "images", "--json", env=self.env).stdout)["url"]
        short = os.path.join(self.tmp, "short.txt")
        with open(os.path.join(self.tmp, "data", "classes.txt"), encoding="utf-8") as f, \
                open(short, "w", encoding="utf-8") as g:
            g.writelines(f.readlines()[:5])
        run(CAT, "add", "labels", "five-classes", short, env=self.env)
        run(CAT, "add", "dataset", "images-five", "--task", "classification", "--labels", "five-classes", "--batch", 16,
            "--url", url, env=self.env)
        p = self.evaluate("--dataset", "images-five", ok=False)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertRegex(p.stderr, r"label '\d+' is not a class index in 0\.\.4 \(the label set of task classification "
                                   r"has 5 classes\)")
        import tarfile
        empty = os.path.join(self.tmp, "empty-000000.tar")
        tarfile.open(empty, "w").close()  # a valid tar without members
        run(CAT, "add", "dataset", "images-empty", "--task", "classification", "--batch", 16, "--url", empty,
            env=self.env)
        p = self.evaluate("--dataset", "images-empty", ok=False)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("dataset images-empty: no usable sample to evaluate (empty split?)", p.stderr)
        self.assertEqual(p.stdout, "")
        # a checkpoint whose weights are another model size's (dim 64) than its state.json says (dim 32)
        import glob
        import shutil
        other = os.path.join(self.tmp, "other-size")
        run(TRAIN, "--mixture", "images-only", "--out", other, *SMALL, "--dim", 64, "--steps", 1, "--quiet",
            env=self.env)
        mixed = os.path.join(self.tmp, "mixed-ckpt")
        shutil.copytree(sorted(glob.glob(os.path.join(self.run_dir, "checkpoints", "step-*")))[-1], mixed)
        shutil.copy(os.path.join(sorted(glob.glob(os.path.join(other, "checkpoints", "step-*")))[-1],
                                 "model.safetensors"), mixed)
        p = run(EVAL, "--checkpoint", mixed, "--dataset", "images", "--image-size", 32, env=self.env, ok=False)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("has another dtype or shape (this model's configuration differs)", p.stderr)
        self.assertEqual(p.stdout, "")
        self.assertEqual(len(self.results()), stored)

    def test_bad_requests(self):
        cases = [
            (["--dataset", "books-wiki"], 1, "no shard URL"),      # a preset placeholder
            (["--dataset", "nope"], 1, "unknown dataset 'nope'"),
            (["--dataset", "images", "--steps", 2], 2, "--steps goes with --mixture"),
            (["--dataset", "images", "--limit", "x"], 2, "--limit needs a non-negative integer"),
            (["--mixture", "four", "--dataset", "images"], 2, "one of --mixture or --dataset"),
            (["--mixture", "nope"], 1, "nope"),
        ]
        stored = len(self.results())
        for args, code, msg in cases:
            p = self.evaluate(*args, ok=False)
            self.assertEqual(p.returncode, code, (args, p.stderr))
            self.assertIn(msg, p.stderr)
            self.assertEqual(p.stdout, "")
        self.assertEqual(len(self.results()), stored)  # nothing stored by a failed evaluation


if __name__ == "__main__":
    unittest.main()
