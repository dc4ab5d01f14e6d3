"""Data-parallel upmoe-train under Open MPI's mpirun (docs/distributed.md), on real data: 2 ranks x batch B
train like 1 rank x batch 2B on the same samples; each rank draws its own task sequence by the weights;
a 2-rank run resumed from a checkpoint equals an uninterrupted one bit for bit, and resumes with another
world size after a warning; a killed or hung rank stops the job within the bound, naming the rank."""
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import unittest

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from train_fixture import CAT, TRAIN, build, mpi_env, query, run, sanitized, testdata  # noqa: E402
from safetensors_io import load  # noqa: E402

MPIRUN = shutil.which("mpirun")
SMALL = ["--dim", 32, "--layers", 2, "--heads", 2, "--experts", 4, "--batch", 8, "--image-size", 32,
         "--vocab-targets", "sampled:64", "--lr", 2e-3, "--threads", 1, "--loader-threads", 1]
# One task (GLUE SST-2 as a cloze label task), no per-step randomness in the model, one reader, no
# shuffle: the 1-rank batch of 2B is exactly rank 0's B samples followed by rank 1's.
# Independently drawn experts: with experts as copies (the default since issue 13) the gates' gradient is
# zero in exact arithmetic at the start (<W_e, dW> is the same for every expert): in float32, rounding noise
# and any two summation orders differ there; the two noise floors compared below then swap places (measured:
# 2 ranks 2.09e-5 vs rows reordered 1.38e-5 of the update, against 6.1e-6 vs 7.0e-6 with independent experts).
EQUIV = ["--mixture", "sst-only", "--dim", 32, "--layers", 2, "--heads", 2, "--experts", 4, "--threads", 1,
         "--loader-threads", 1, "--shuffle-block", 1, "--drop-path", 0, "--gate-noise", 0, "--lr", 1e-3,
         "--layerscale", 1, "--expert-init", "independent", "--quiet"]
SST_SHARDS, SST_PER_SHARD = 40, 4


def rank_pid(out_dir, rank, timeout=60):
    """The pid of rank `rank` of the job writing to out_dir (from the ranks' environment)."""
    end = time.time() + timeout
    while time.time() < end:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
                if not cmd or not cmd[0].endswith(b"upmoe-train") or out_dir.encode() not in cmd:
                    continue
                with open(f"/proc/{pid}/environ", "rb") as f:
                    env = dict(x.split(b"=", 1) for x in f.read().split(b"\0") if b"=" in x)
                if env.get(b"OMPI_COMM_WORLD_RANK") == str(rank).encode():
                    return int(pid)
            except OSError:
                continue
        time.sleep(0.05)
    raise AssertionError(f"rank {rank} of the job in {out_dir} did not appear")


@unittest.skipUnless(MPIRUN, "mpirun not found: tools/setup installs Debian's openmpi-bin")
class DistributedTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmpdir = tempfile.TemporaryDirectory(prefix="upmoe-dist-")
        cls.tmp = cls.tmpdir.name
        cls.env = mpi_env(build(cls.tmp))
        cls.db = os.path.join(cls.tmp, "catalog.db")
        cls.build_sst()

    @classmethod
    def tearDownClass(cls):
        cls.tmpdir.cleanup()

    @classmethod
    def build_sst(cls):
        """Real sentences (UCI sentiment, IMDb part) as glue-sst2 shards of exactly SST_PER_SHARD samples."""
        with open(os.path.join(testdata(), "sentiment", "imdb.json")) as f:
            recs = [r for r in json.load(f) if r.get("class") is not None]
        random.Random(5).shuffle(recs)
        out = os.path.join(cls.tmp, "sst")
        os.makedirs(out)
        for s in range(SST_SHARDS):
            with tarfile.open(os.path.join(out, f"sst-{s:06d}.tar"), "w") as t:
                for i in range(SST_PER_SHARD):
                    r = recs[s * SST_PER_SHARD + i]
                    data = json.dumps({"sentence": r["text"].strip(), "label": r["class"]}).encode()
                    ti = tarfile.TarInfo(f"{s:04d}{i:02d}.json")
                    ti.size = len(data)
                    t.addfile(ti, io.BytesIO(data))
        c = lambda *a: run(CAT, *a, env=cls.env)  # noqa: E731
        c("add", "dataset", "sst", "--task", "glue-sst2", "--batch", SST_PER_SHARD, "--weight", 1,
          "--url", os.path.join(out, "sst-{000000..%06d}.tar" % (SST_SHARDS - 1)))
        c("mixture", "create", "sst-only")
        c("mixture", "add", "sst-only", "sst")

    def mpirun(self, n, *argv, ok=True, timeout=900, **kw):
        return run(MPIRUN, "-np", n, "--oversubscribe", "--bind-to", "none", TRAIN, *argv, ok=ok, timeout=timeout,
                   env=self.env, **kw)

    def train(self, *argv, ok=True):
        return run(TRAIN, *argv, ok=ok, env=self.env, timeout=900)

    def out(self, name):
        return os.path.join(self.tmp, name)

    def ckpt(self, out, step):
        return os.path.join(self.tmp, out, "checkpoints", f"step-{step:08d}")

    def sql(self, q, *args):
        return query(self.db, q, *args)

    def metrics(self, name):
        return self.sql("SELECT m.step, m.task, m.dataset, m.loss, m.weighted_loss, m.accuracy, m.samples, m.lr, "
                        "m.grad_norm, m.ranks FROM metrics m JOIN runs r ON r.id = m.run_id WHERE r.name = ? "
                        "ORDER BY m.step, m.task", name)

    def weights(self, out, step, kind="model"):
        return load(os.path.join(self.ckpt(out, step), f"{kind}.safetensors"))[0]

    # ---- equivalence ----

    def test_two_ranks_equal_one_rank_with_twice_the_batch(self):
        """20 steps of 2 ranks x batch 4 == 1 rank x batch 8 on the same samples: every step's loss within
        1e-5 relative, all weights within 1e-5 (relative, as one vector); and no further apart (as one vector
        and per tensor) than the same 1-rank run with its batch rows in another order, which is the float32
        noise floor under AdamW (small gradients are normalised by their own size, so their rounding
        differences show at full scale; see docs/distributed.md). The floor comes from four pure
        reorderings of every step's rows (--readers 2 interleaves the same two shards; shuffle blocks of 2,
        4 and 8 permute within the step): one reordering alone is one draw of that noise. Measured on this
        task (issue 15 reads the answer at the prompt's <|spe|>): 2 ranks 5.45e-6 of the update; seven
        reorderings 4.3e-6 to 6.4e-6 (readers 2: 4.3e-6, the only reference before, 7.0e-6 when the answer
        was read at position 0). Like the per-tensor check below, the bound is the largest reordering plus the
        reorderings' spread (one more draw of the floor may land there)."""
        steps = 20
        self.mpirun(2, *EQUIV, "--steps", steps, "--batch", 4, "--readers", 1, "--out", self.out("eq2"),
                    "--name", "eq2")
        self.train(*EQUIV, "--steps", steps, "--batch", 8, "--readers", 1, "--out", self.out("eq1"), "--name", "eq1")
        self.train(*EQUIV, "--steps", steps, "--batch", 8, "--readers", 2, "--out", self.out("eq1r"),
                   "--name", "eq1r")
        for k in (2, 4, 8):  # the same rows of every step, permuted within shuffle blocks of k
            block = [k if EQUIV[i - 1] == "--shuffle-block" else a for i, a in enumerate(EQUIV)]
            self.train(*block, "--steps", steps, "--batch", 8, "--readers", 1, "--out", self.out(f"eq1b{k}"),
                       "--name", f"eq1b{k}")
        self.train(*EQUIV, "--steps", 1, "--batch", 8, "--lr", 0, "--out", self.out("eq0"), "--name", "eq0")
        m1, m2 = self.metrics("eq1"), self.metrics("eq2")
        self.assertEqual(len(m1), steps)
        self.assertEqual(len(m2), steps)
        for a, b in zip(m1, m2):
            self.assertEqual(a[6], 8)
            self.assertEqual(b[6], 8)
            self.assertEqual(b[9], "0 1")  # both ranks trained the task
            self.assertLessEqual(abs(a[3] - b[3]), 1e-5 * abs(a[3]), f"step {a[0]}: loss {a[3]} vs {b[3]}")
        w0, w1, w2 = self.weights("eq0", 1), self.weights("eq1", steps), self.weights("eq2", steps)
        reordered = [self.weights(name, steps) for name in ("eq1r", "eq1b2", "eq1b4", "eq1b8")]

        def dist(a, b):
            return sum(((a[k].double() - b[k].double()) ** 2).sum().item() for k in a) ** 0.5

        norm = dist(w1, {k: 0 * v for k, v in w1.items()})
        update = dist(w1, w0)
        orders = [dist(w1, wr) for wr in reordered]
        d_ranks, d_order = dist(w1, w2), max(orders)
        print("reorderings:", " ".join("%.3g" % (d / update) for d in orders))
        print(f"\n|w1 - w2| / |w1| = {d_ranks / norm:.3g}; relative to the 20 updates: 2 ranks {d_ranks / update:.3g}, "
              f"rows reordered {d_order / update:.3g}")
        self.assertGreater(update, 0)
        self.assertLessEqual(d_ranks / norm, 1e-5)
        # The floor is a distribution, and four reorderings are four draws of it: a fifth draw may exceed their
        # largest by their spread. Measured when the expert mixing changed its rounding (issue 18): 2 ranks 5.99e-6
        # before and 6.04e-6 after, while the reorderings moved from 4.58-6.28e-6 to 4.63-5.87e-6.
        self.assertLessEqual(d_ranks, d_order + (d_order - min(orders)))

        def worst(a, b):
            return max((a[k].double() - b[k].double()).abs().max().item() / max(a[k].abs().max().item(), 1e-30)
                       for k in a)

        # Per tensor the floor is an extreme value (the worst of 68 tensors) and some tensors never move under a
        # reordering (the attribute gates' norms see the same rows per pattern in any order) but do under the
        # ranks' two-halves average: one more draw may exceed the largest of four by their spread. Measured:
        # 2 ranks 2.75e-5 (blocks.0.mlp.fc1.bias); reorderings 1.56e-5, 2.27e-5, 2.72e-5 (seven: 1.56e-5 to 2.72e-5).
        floors = [worst(w1, wr) for wr in reordered]
        print(f"per tensor, worst: 2 ranks {worst(w1, w2):.3g}; reorderings {', '.join(f'{f:.3g}' for f in floors)}")
        self.assertLessEqual(worst(w1, w2), max(floors) + (max(floors) - min(floors)))

    def test_task_routed_experts_reduce_where_ranks_train_different_tasks(self):
        """Task routing and task-specific weights (issue 18) on 2 ranks that draw their tasks each on its own:
        a rank's step uses its task's experts only, so the reduction skips the experts no rank used; the run
        must equal, bit for bit, the same run reducing every expert (--reduce-all-experts), and the ranks must
        have trained different tasks in some steps (else nothing was skipped that the other rank needed).
        Token and context routing too, where any token of any rank may pick any expert."""
        for moe in ("task", "task-specific", "token", "context"):
            runs = {}
            for mode in ("skip", "all"):
                name = f"dp-{moe}-{mode}"
                self.mpirun(2, "--mixture", "three", "--out", self.out(name), "--name", name, "--steps", 6,
                            "--moe", moe, "--dim", 16, "--layers", 2, "--heads", 1, "--batch", 2, "--image-size", 32,
                            "--vocab-targets", "sampled:8", "--threads", 1, "--loader-threads", 1, "--quiet",
                            "--checkpoint-every", 6, *(["--reduce-all-experts"] if mode == "all" else []))
                runs[mode] = self.weights(name, 6)
            for k in runs["skip"]:
                self.assertTrue(torch.equal(runs["skip"][k], runs["all"][k]), f"{moe}: {k} differs")
            split = [s for s, in self.sql("SELECT m.step FROM metrics m JOIN runs r ON r.id = m.run_id WHERE "
                                          "r.name = ? AND m.ranks != '0 1'", f"dp-{moe}-skip")]
            self.assertTrue(split, f"{moe}: the ranks trained the same task in every step")

    # ---- per-rank task sampling ----

    def test_each_rank_draws_its_own_tasks_by_weight(self):
        """1,000 steps of 2 ranks on a three-task mixture (weights 0.4, 0.3, 0.3): each rank's task sequence
        (from the metrics rows' ranks) passes a chi-square test against the weights, the two sequences
        differ, and every row holds its task's loss over the ranks that trained it."""
        steps = 1000
        self.mpirun(2, "--mixture", "three", "--out", self.out("tasks"), "--name", "tasks", "--steps", steps,
                    "--dim", 16, "--layers", 1, "--heads", 1, "--experts", 2, "--batch", 2, "--image-size", 32,
                    "--vocab-targets", "sampled:8", "--threads", 1, "--loader-threads", 1, "--quiet",
                    "--checkpoint-every", 0)
        rows = self.metrics("tasks")
        seq = {0: {}, 1: {}}
        for step, task, dataset, loss, wl, acc, samples, lr, gn, ranks in rows:
            self.assertIsNotNone(loss)
            self.assertTrue(loss == loss and loss > 0, f"step {step} {task}: loss {loss}")
            rs = [int(r) for r in ranks.split()]
            self.assertEqual(samples, 2 * len(rs))
            for r in rs:
                self.assertNotIn(step, seq[r], f"rank {r} trained two tasks in step {step}")
                seq[r][step] = task
        weights = {"classification": 0.4, "image-caption": 0.3, "mlm": 0.3}
        for r in (0, 1):
            self.assertEqual(sorted(seq[r]), list(range(steps)), f"rank {r} is missing steps")
            counts = {t: 0 for t in weights}
            for t in seq[r].values():
                counts[t] += 1
            chi2 = sum((counts[t] - steps * w) ** 2 / (steps * w) for t, w in weights.items())
            print(f"\nrank {r}: {counts}, chi-square {chi2:.2f}")
            self.assertLess(chi2, 13.82)  # 2 degrees of freedom, p = 0.001
        same = sum(seq[0][s] == seq[1][s] for s in range(steps))
        self.assertLess(same, 0.5 * steps)  # independent draws agree on 0.4^2 + 2 * 0.3^2 = 34 %

    # ---- resume ----

    def test_resume_is_bit_exact_and_other_world_sizes_resume_with_a_warning(self):
        """2 ranks: 12 steps straight == 5 steps, a crash, --resume to 12 (weights, moments and every
        metrics row identical); the 2-rank checkpoint also resumes on 1 and on 4 ranks, with a warning."""
        common = ["--mixture", "three", *SMALL, "--steps", 12]
        self.mpirun(2, *common, "--out", self.out("straight"), "--name", "straight", "--checkpoint-every", 100)
        self.mpirun(2, *common, "--out", self.out("split"), "--name", "split", "--checkpoint-every", 5,
                    "--keep", 10)
        with open(os.path.join(self.ckpt("split", 5), "state.json")) as f:
            state = json.load(f)
        self.assertEqual(state["world"], 2)
        self.assertEqual([c["rank"] for c in state["cursors"]], [0, 1])
        for other in (1, 4):  # copies of the step-5 checkpoint for the world-size changes
            os.makedirs(os.path.join(self.out(f"w{other}"), "checkpoints"))
            shutil.copytree(self.ckpt("split", 5), self.ckpt(f"w{other}", 5))
        shutil.rmtree(self.ckpt("split", 10))
        shutil.rmtree(self.ckpt("split", 12))
        p = self.mpirun(2, "--resume", self.out("split"), "--mixture", "three", *SMALL, "--steps", 12)
        self.assertNotIn("warning", p.stderr)
        for kind in ("model", "optim"):
            with open(os.path.join(self.ckpt("straight", 12), f"{kind}.safetensors"), "rb") as f:
                a = f.read()
            with open(os.path.join(self.ckpt("split", 12), f"{kind}.safetensors"), "rb") as f:
                b = f.read()
            self.assertEqual(a, b, f"{kind}.safetensors differs after the resume")
        self.assertEqual(self.metrics("straight"), self.metrics("split"))

        # Another world size: the run goes on from step 5 with a warning that the data order changes.
        p = self.train("--resume", self.out("w1"), "--mixture", "three", *SMALL, "--steps", 8)
        self.assertIn("warning", p.stderr)
        self.assertIn("written by 2 ranks and this run has 1", p.stderr)
        self.assertIn("data order differs", p.stderr)
        p = self.mpirun(4, "--resume", self.out("w4"), "--mixture", "three", *SMALL, "--steps", 8)
        self.assertIn("written by 2 ranks and this run has 4", p.stderr)
        with open(os.path.join(self.ckpt("w4", 8), "state.json")) as f:
            state = json.load(f)
        self.assertEqual((state["step"], state["world"], len(state["cursors"])), (8, 4, 4))

    # ---- faults ----

    def start(self, name, *extra):
        out = self.out(name)
        cmd = [MPIRUN, "-np", "2", "--oversubscribe", "--bind-to", "none", TRAIN, "--mixture", "three", "--out", out,
               "--name", name, *[str(a) for a in SMALL], "--steps", "100000", "--checkpoint-every", "20",
               "--log-every", "1000", *[str(a) for a in extra]]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env,
                                start_new_session=True)
        end = time.time() + 600
        while not os.path.isdir(self.ckpt(name, 20)):  # a checkpoint to resume from, then the fault
            self.assertIsNone(proc.poll(), "the job ended early")
            self.assertLess(time.time(), end, "no checkpoint after 600 s")
            time.sleep(0.05)
        return out, proc

    def finish(self, proc, t0, bound):
        try:
            stdout, stderr = proc.communicate(timeout=bound + 30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
        took = time.time() - t0
        self.assertNotEqual(proc.returncode, 0)
        self.assertLess(took, bound, f"the job took {took:.1f} s to stop")
        return stdout + stderr, took

    def test_a_killed_rank_stops_the_job_and_it_resumes(self):
        """SIGKILL rank 1 mid-run: the job exits non-zero within 60 s, rank 0 saying it was waiting for rank
        1; the run then resumes from its last checkpoint."""
        out, proc = self.start("killed")
        t0 = time.time()
        os.kill(rank_pid(out, 1), signal.SIGKILL)
        text, took = self.finish(proc, t0, 60)
        print(f"\nkilled rank 1: the job stopped after {took:.1f} s")
        self.assertRegex(text, r"rank 1\b")
        steps = sorted(os.listdir(os.path.join(out, "checkpoints")))
        last = int(steps[-1].split("-")[1])
        p = self.mpirun(2, "--resume", out, "--mixture", "three", *SMALL, "--steps", last + 3)
        self.assertIn(f"steps {last}..{last + 3}", p.stdout)
        self.assertEqual(self.sql("SELECT state, step FROM runs WHERE name = 'killed'"), [("finished", last + 3)])

    def test_a_hung_rank_stops_the_job_within_the_timeout(self):
        """SIGSTOP rank 1 (a hang): rank 0 gives up after --comm-timeout 3 s naming rank 1, the job exits
        non-zero, and the catalog says why."""
        out, proc = self.start("hung", "--comm-timeout", 3)
        pid = rank_pid(out, 1)
        t0 = time.time()
        os.kill(pid, signal.SIGSTOP)
        try:
            text, took = self.finish(proc, t0, 30)
        finally:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        print(f"\nhung rank 1: the job stopped after {took:.1f} s")
        self.assertIn("for rank 1", text)
        self.assertIn("died or was stopped", text)
        state, message = self.sql("SELECT state, message FROM runs WHERE name = 'hung'")[0]
        self.assertEqual(state, "failed")
        self.assertIn("for rank 1", message)

    def test_a_slow_rank_is_not_a_dead_one(self):
        """With --comm-timeout 0.2 s, steps where one rank scores against the full vocabulary (~1 s) while
        the other classifies still run: the slow rank's heartbeats show it alive, and the others wait up to
        a few of the longest steps seen (upm_comm_set_patience) before calling it hung. Under the sanitizers a
        sample of 8,192 words makes the same ~1 s step (with the whole vocabulary this test took 138 s there)."""
        words = "sampled:8192" if sanitized() else "full"
        p = self.mpirun(2, "--mixture", "three", "--out", self.out("slow"), *SMALL, "--vocab-targets", words,
                        "--steps", 6, "--comm-timeout", 0.2, "--log-every", 1)
        m = re.search(r"waiting for slower ranks ([0-9.]+) ms", p.stdout)
        self.assertIsNotNone(m, p.stdout)
        self.assertGreater(float(m.group(1)), 200, "no step made rank 0 wait longer than the timeout")
        self.assertEqual(self.sql("SELECT state, step FROM runs WHERE name = 'slow'"), [("finished", 6)])

    def test_sigusr1_to_mpirun_stops_every_rank_after_a_checkpoint(self):
        """SIGUSR1 to mpirun reaches every rank: they agree on the step, rank 0 checkpoints, all exit 0,
        and the run is 'interrupted', with every rank's cursor in the checkpoint."""
        out, proc = self.start("usr1")
        os.kill(proc.pid, signal.SIGUSR1)
        stdout, stderr = proc.communicate(timeout=300)
        self.assertEqual(proc.returncode, 0, stdout + stderr)
        m = re.search(r"stopped at step (\d+) after a checkpoint", stdout)
        self.assertIsNotNone(m, stdout + stderr)
        step = int(m.group(1))
        with open(os.path.join(self.ckpt("usr1", step), "state.json")) as f:
            self.assertEqual(len(json.load(f)["cursors"]), 2)
        self.assertEqual(self.sql("SELECT state, step FROM runs WHERE name = 'usr1'"), [("interrupted", step)])

    def test_the_debug_backend_trains_the_same_bits(self):
        """On the debug backend (memory the host cannot dereference, docs/model.md) 2 ranks train to the same
        weights and moments, bit for bit, as on the CPU backend: the gradient buckets go through the backend's
        pack / unpack_scale ops and a host staging buffer instead of being reduced in place. 1 rank too."""
        for n in (1, 2):
            runs = {}
            for backend in ("cpu", "debug"):
                name = f"be-{backend}-{n}"
                p = self.mpirun(n, "--mixture", "three", "--out", self.out(name), *SMALL, "--steps", 4,
                                "--backend", backend, "--name", name)
                self.assertIn(f"{backend} backend", p.stdout)
                runs[backend] = (self.weights(name, 4), self.weights(name, 4, "optim"))
            for kind in (0, 1):
                a, b = runs["cpu"][kind], runs["debug"][kind]
                self.assertEqual(sorted(a), sorted(b))
                for k in a:
                    self.assertTrue(torch.equal(a[k], b[k]), (n, k))

    def test_usage(self):
        """A local communicator under mpirun -np 2 is refused; single-process runs need no launcher; NCCL (the
        gradients summed in device memory) is refused on a backend without a device stream, on every rank,
        before any step."""
        p = self.mpirun(2, "--mixture", "three", "--out", self.out("usage"), "--comm", "local", *SMALL, "--steps", 1,
                        ok=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("--comm mpi", p.stderr)
        p = self.train("--mixture", "three", "--out", self.out("usage"), "--comm", "gloo", ok=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--comm must be auto, local, mpi or nccl", p.stderr)
        p = self.mpirun(2, "--mixture", "three", "--out", self.out("usage-nccl"), "--comm", "nccl", *SMALL, "--steps",
                        1, ok=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertRegex(p.stderr, r"--comm nccl sums gradients in device memory: it needs --backend cuda \(this run "
                                   r"computes on (cpu|debug)\)")  # the sanitizer pass runs on the debug backend
        p = self.train("--mixture", "three", "--out", self.out("usage"), "--comm-timeout", "0", ok=False)
        self.assertEqual(p.returncode, 2)
        p = self.train("--mixture", "three", "--out", self.out("usage"), "--backend", "cuda", ok=False)
        self.assertEqual(p.returncode, 2)
        # why it cannot run depends on the machine (no module in this build, no driver, no device): said so,
        # with the backends that can
        self.assertRegex(p.stderr, r"backend 'cuda' \(NVIDIA GPUs[^)]*\): (not part of this build|no NVIDIA driver|"
                                   r"no usable CUDA device|no CUDA device)[^\n]*; backends here: cpu, debug")


if __name__ == "__main__":
    unittest.main()
