"""upmoe-jobs on real data (docs/jobs.md): a submitted pretraining job runs under a local worker and its
status answers from the catalog; a killed worker or trainer loses nothing (the job resumes from its last
checkpoint, its weights equal an uninterrupted run's, every step's metrics row exists once); several
workers never run a job twice; cancel stops a running job with a checkpoint; bad commands change nothing."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "trainer"))
from train_fixture import BUILD, build, mpi_env, query, run  # noqa: E402

JOBS = os.path.join(BUILD, "upmoe-jobs")
TINY = ["--dim", 32, "--layers", 2, "--heads", 2, "--experts", 4, "--batch", 8, "--image-size", 32,
        "--vocab-targets", "sampled:64", "--threads", 1, "--loader-threads", 1]


class JobsFixture(unittest.TestCase):
    """A catalog with real shards (train_fixture.build) and helpers; no tests of its own."""

    @classmethod
    def setUpClass(cls):
        cls.tmpdir = tempfile.TemporaryDirectory(prefix="upmoe-jobs-")
        cls.tmp = cls.tmpdir.name
        cls.env = build(cls.tmp)
        cls.db = os.path.join(cls.tmp, "catalog.db")

    @classmethod
    def tearDownClass(cls):
        cls.tmpdir.cleanup()

    def jobs(self, *argv, ok=True):
        return run(JOBS, *argv, ok=ok, env=self.env, timeout=600)

    def submit(self, name, steps, *extra, attempts=3):
        p = self.jobs("submit", "pretrain", "--mixture", "three", "--steps", steps, "--name", name, "--max-attempts",
                      attempts, "--", *TINY, "--checkpoint-every", 5, "--keep", 100, *extra)
        return int(p.stdout.strip())

    def sql(self, q, *args):
        return query(self.db, q, *args)

    def job(self, jid):
        return json.loads(self.jobs("status", jid, "--json").stdout)

    def weights(self, jid, step):
        with open(os.path.join(self.tmp, "runs", f"job-{jid}", "checkpoints", f"step-{step:08d}", "model.safetensors"),
                  "rb") as f:
            return f.read()

    def metric_rows(self, jid):
        return self.sql("SELECT m.step, m.task, m.loss FROM metrics m JOIN jobs j ON j.run_id = m.run_id "
                        "WHERE j.id = ? ORDER BY m.step, m.task", jid)

    def run_until(self, worker, jid, step, timeout=300):
        """Waits until job jid has a checkpoint of at least `step`."""
        end = time.time() + timeout
        ck = os.path.join(self.tmp, "runs", f"job-{jid}", "checkpoints", f"step-{step:08d}")
        while not os.path.isdir(ck):
            if worker.poll() is not None:
                self.fail(f"the worker ended: {worker.communicate()}")
            self.assertLess(time.time(), end)
            time.sleep(0.02)

    def worker(self, *extra):
        return subprocess.Popen([JOBS, "worker", "--lease", "3", *extra], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=self.env)


class JobsTest(JobsFixture):
    def test_a_job_runs_and_reports(self):
        """submit -> worker --once -> status: succeeded, step 20/20, a loss per task, the last checkpoint,
        one attempt, the exact command; --dry-run prints that command and queues nothing; the job carries
        the submitter's BPE vocabulary, so the worker's environment does not matter."""
        before = self.sql("SELECT count(*) FROM jobs")[0][0]
        p = self.jobs("submit", "pretrain", "--mixture", "three", "--steps", 20, "--name", "dry", "--dry-run", "--",
                      *TINY)
        self.assertIn("upmoe-train --catalog", p.stdout)
        self.assertIn("--mixture three", p.stdout)
        self.assertEqual(self.sql("SELECT count(*) FROM jobs")[0][0], before)
        jid = self.submit("first", 20)
        self.assertEqual(self.job(jid)["state"], "queued")
        # the submitter's UPMOE_BPE_VOCAB went into the job: a worker without it runs the job alike
        bare = {k: v for k, v in self.env.items() if k != "UPMOE_BPE_VOCAB"}
        p = run(JOBS, "worker", "--once", env=bare, timeout=600)
        self.assertIn(f"job {jid} attempt 1: finished", p.stdout)
        st = self.job(jid)
        self.assertEqual((st["state"], st["step"], st["total_steps"], st["attempt"]), ("succeeded", 20, 20, 1))
        self.assertEqual(sorted(st["loss"]), ["classification", "image-caption", "mlm"])
        self.assertTrue(st["last_checkpoint"].endswith("step-00000020"))
        self.assertGreater(st["samples_per_s"], 0)
        self.assertIn("--job %d --attempt 1" % jid, st["command"])
        self.assertIn("--bpe-vocab " + os.path.realpath(self.env["UPMOE_BPE_VOCAB"]), st["command"])
        text = self.jobs("status", jid).stdout
        self.assertIn("succeeded", text)
        self.assertIn("step 20 / 20", text)
        self.assertIn("checkpoint step 20", self.jobs("logs", jid).stdout)
        self.assertIn("first", self.jobs("list").stdout)
        events = [e for (e,) in self.sql("SELECT event FROM job_events WHERE job_id = ? ORDER BY rowid", jid)]
        self.assertEqual(events, ["submitted", "started", "succeeded"])
        # metrics: every step once, as the catalog has them; filters; CSV and JSON
        rows = [json.loads(x) for x in self.jobs("metrics", jid, "--json").stdout.splitlines()]
        self.assertEqual(sorted({r["step"] for r in rows}), list(range(20)))
        self.assertEqual(len(rows), len(self.metric_rows(jid)))
        mlm = [json.loads(x) for x in self.jobs("metrics", jid, "--json", "--task", "mlm", "--since", 10).stdout.split()]
        self.assertTrue(all(r["task"] == "mlm" and r["step"] >= 10 for r in mlm))
        csv = self.jobs("metrics", jid, "--csv").stdout.splitlines()
        self.assertEqual(csv[0], "step,task,dataset,loss,accuracy,samples,lr,grad_norm,samples_per_s,ranks,"
                                 "balance_loss,dropped")
        self.assertEqual(len(csv) - 1, len(rows))
        # plot: real PNG and SVG files from gnuplot
        png, svg = os.path.join(self.tmp, "loss.png"), os.path.join(self.tmp, "loss.svg")
        self.jobs("plot", jid, "-o", png)
        self.jobs("plot", jid, "-o", svg)
        with open(png, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        with open(svg) as f:
            text = f.read()
        self.assertIn("<svg", text)
        for name in ("classification", "image-caption", "mlm", "learning rate"):
            self.assertIn(name, text)
        self.assertEqual(self.jobs("plot", jid, "-o", os.path.join(self.tmp, "x.gif"), ok=False).returncode, 2)

    def test_bad_commands_change_nothing(self):
        """Unknown ids, bad states and bad options: a clear error, exit 1 or 2, and the catalog unchanged."""
        jid = self.submit("to-cancel", 5)
        self.jobs("cancel", jid)
        dump = self.sql("SELECT * FROM jobs ORDER BY id"), self.sql("SELECT * FROM job_events ORDER BY rowid")
        for argv, code, says in [
            (["status", "9999"], 1, "no job 9999"),
            (["cancel", str(jid)], 1, "is cancelled"),
            (["resume", "9999"], 1, "no job 9999"),
            (["submit", "pretrain", "--mixture", "nope"], 1, "nope"),
            (["submit", "pretrain", "--mixture", "uniperceiver-moe-pretrain"], 1, "without shard URLs"),
            (["submit", "pretrain", "--model", "xl"], 2, "--model must be"),
            (["submit", "pretrain", "--steps", "0"], 2, "--steps needs"),
            (["submit", "pretrain", "--mixture", "three", "--", "--out", "x"], 2, "set by the worker"),
            (["submit", "train"], 2, "pretrain"),
            (["frobnicate"], 2, "unknown command"),
            (["status", "abc"], 2, "status ID"),
        ]:
            p = self.jobs(*argv, ok=False)
            self.assertEqual(p.returncode, code, f"{argv}: {p.stderr}")
            self.assertIn(says, p.stderr, argv)
        self.assertEqual((self.sql("SELECT * FROM jobs ORDER BY id"), self.sql("SELECT * FROM job_events ORDER BY rowid")),
                         dump)

    def test_killed_workers_and_trainers_lose_nothing(self):
        """An uninterrupted 400-step job, then the same job while its worker or its trainer is SIGKILLed at
        12 random moments: the job completes, its weights equal the uninterrupted run's bit for bit, and no
        metrics row is missing or doubled. (A killed worker's trainer checkpoints on its parent-death signal;
        the lease then expires and the next worker resumes it. A killed trainer is retried by its worker.)"""
        steps = 400
        ref = self.submit("ref", steps)
        self.jobs("worker", "--once")
        self.assertEqual(self.job(ref)["state"], "succeeded")
        rng = random.Random(7)
        jid = self.submit("killed", steps, attempts=100)
        kills = 0
        while kills < 12 and self.job(jid)["state"] != "succeeded":
            w = self.worker()
            self.addCleanup(lambda w=w: w.poll() is None and (w.kill(), w.communicate()))
            time.sleep(rng.uniform(0.3, 3.0))
            if self.job(jid)["state"] == "succeeded":
                break
            if rng.random() < 0.5:
                w.kill()
                w.communicate()
            else:
                pid = self.sql("SELECT pid FROM jobs WHERE id = ? AND state = 'running'", jid)
                if pid and pid[0][0]:
                    try:
                        os.killpg(pid[0][0], signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.5)
                w.send_signal(signal.SIGTERM)
                w.communicate(timeout=120)
            kills += 1
        end = time.time() + 300
        while self.job(jid)["state"] != "succeeded":  # finish, waiting out any expired lease
            self.assertLess(time.time(), end, self.job(jid))
            self.jobs("worker", "--once", "--lease", 3)
            time.sleep(0.5)
        st = self.job(jid)
        events = self.sql("SELECT event, count(*) FROM job_events WHERE job_id = ? GROUP BY event ORDER BY event", jid)
        print(f"\n{kills} kills, {st['attempt']} attempts, events {events}")
        self.assertGreaterEqual(kills, 10)
        self.assertGreater(st["attempt"], 5)
        self.assertEqual(self.weights(jid, steps), self.weights(ref, steps))
        rows = self.metric_rows(jid)
        self.assertEqual(len({(s, t) for s, t, _ in rows}), len(rows), "a metrics row is doubled")
        self.assertEqual(sorted({s for s, _, _ in rows}), list(range(steps)), "a step has no metrics row")
        self.assertEqual(rows, self.metric_rows(ref))

    @unittest.skipUnless(shutil.which("mpirun"), "mpirun not found: tools/setup installs Debian's openmpi-bin")
    def test_a_two_rank_job(self):
        """--ranks 2: the worker runs the trainer under mpirun; the job succeeds as a data-parallel run."""
        p = self.jobs("submit", "pretrain", "--mixture", "three", "--steps", 10, "--name", "two-ranks", "--ranks", 2,
                      "--", *TINY)
        jid = int(p.stdout.strip())
        run(JOBS, "worker", "--once", env=mpi_env(self.env), timeout=600)
        st = self.job(jid)
        self.assertEqual((st["state"], st["step"]), ("succeeded", 10), st)
        log = self.jobs("logs", jid).stdout
        self.assertIn("mpirun -np 2", log)
        self.assertIn("data parallel: 2 ranks", log)
        ranks = {r for (r,) in self.sql("SELECT m.ranks FROM metrics m JOIN jobs j ON j.run_id = m.run_id "
                                        "WHERE j.id = ?", jid)}
        self.assertTrue(ranks <= {"0", "1", "0 1"} and ranks & {"1", "0 1"}, ranks)

    def test_three_workers_run_each_job_once(self):
        """30 short jobs, 3 workers: every job succeeds, each started exactly once."""
        ids = [self.submit(f"race-{i}", 2) for i in range(30)]
        ws = [self.worker() for _ in range(3)]
        for w in ws:
            self.addCleanup(lambda w=w: w.poll() is None and (w.kill(), w.communicate()))
        end = time.time() + 600
        while any(self.job(i)["state"] != "succeeded" for i in ids[-3:]) or \
                self.sql("SELECT count(*) FROM jobs WHERE id >= ? AND state != 'succeeded'", ids[0])[0][0]:
            self.assertLess(time.time(), end)
            time.sleep(0.5)
        for w in ws:
            w.send_signal(signal.SIGTERM)
            w.communicate(timeout=60)
        starts = self.sql("SELECT job_id, count(*) FROM job_events WHERE event = 'started' AND job_id >= ? "
                          "GROUP BY job_id", ids[0])
        self.assertEqual(sorted(starts), [(i, 1) for i in ids])

    def test_cancel_a_running_job_then_resume_it(self):
        """cancel of a running job: the trainer checkpoints and stops (SIGUSR1 from the worker), the job is
        cancelled with its run interrupted; a second cancel is refused; resume queues it again, and a cancel
        of the queued job takes effect at once."""
        jid = self.submit("cancel-me", 100000)
        w = self.worker()
        self.addCleanup(lambda: w.poll() is None and (w.kill(), w.communicate()))
        self.run_until(w, jid, 5)
        self.jobs("cancel", jid)
        end = time.time() + 120
        while self.job(jid)["state"] != "cancelled":
            self.assertLess(time.time(), end)
            time.sleep(0.1)
        st = self.job(jid)
        self.assertTrue(st["last_checkpoint"])
        self.assertEqual(st["run_state"], "interrupted")
        p = self.jobs("cancel", jid, ok=False)
        self.assertEqual(p.returncode, 1)
        w.send_signal(signal.SIGTERM)
        w.communicate(timeout=60)
        self.jobs("resume", jid)
        self.assertEqual(self.job(jid)["state"], "queued")
        self.jobs("cancel", jid)  # a queued job is cancelled at once (and leaves the queue to the other tests)
        self.assertEqual(self.job(jid)["state"], "cancelled")


if __name__ == "__main__":
    unittest.main()
