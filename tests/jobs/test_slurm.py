"""upmoe-jobs --backend slurm against a real single-node Slurm (slurmctld + slurmd + munged started on
localhost by slurm_fixture, then stopped): sbatch runs the job's batch step, which claims the job, starts
the trainer (srun --mpi=pmix for several ranks) and records its end; a time limit makes the trainer
checkpoint and the job requeue and resume to the same weights as an uninterrupted run; a preempted
(requeued) job resumes; cancel uses scancel; a job cancelled behind upmoe-jobs' back is followed;
names and options never reach a shell; an evaluation job runs upmoe-eval the same way."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "trainer"))
sys.path.insert(0, HERE)
import slurm_fixture  # noqa: E402
from train_fixture import BUILD, build, mpi_env, query, run, sanitized  # noqa: E402

JOBS = os.path.join(BUILD, "upmoe-jobs")
TINY = ["--dim", 32, "--layers", 2, "--heads", 2, "--experts", 4, "--batch", 8, "--image-size", 32,
        "--vocab-targets", "sampled:64", "--threads", 1, "--loader-threads", 1]
REASON = slurm_fixture.available()
# A job still running well after step 150, when the tests preempt or cancel it (the requeue or cancel lands
# within a second): ~13 ms a step leaves ~11 s after step 150, ~60 ms under the sanitizers ~25 s.
LONG_JOB = 600 if sanitized() else 1000


@unittest.skipIf(REASON is not None, REASON)
class SlurmJobsTest(unittest.TestCase):
    cluster = None

    @classmethod
    def setUpClass(cls):
        cls.tmpdir = tempfile.TemporaryDirectory(prefix="upmoe-slurm-jobs-")
        cls.tmp = cls.tmpdir.name
        env = build(cls.tmp)
        # 4 CPUs advertised on this 2-core machine: a 2-rank job and a 1-rank job fit side by side
        cls.cluster = slurm_fixture.Slurm(os.path.join(cls.tmp, "cluster"), cpus=4)
        cls.cluster.start()
        cls.env = mpi_env(dict(env, SLURM_CONF=cls.cluster.conf))
        cls.db = os.path.join(cls.tmp, "catalog.db")

    @classmethod
    def tearDownClass(cls):
        if cls.cluster is not None:
            cls.cluster.stop()
        cls.tmpdir.cleanup()

    def jobs(self, *argv, ok=True):
        return run(JOBS, *argv, ok=ok, env=self.env, timeout=300)

    def submit(self, name, steps, *opts, extra=()):
        p = self.jobs("submit", "pretrain", "--mixture", "three", "--steps", steps, "--name", name, "--backend",
                      "slurm", *opts, "--", *TINY, "--log-every", 1000, *extra)
        return int(p.stdout.strip())

    def sql(self, q, *args):
        return query(self.db, q, *args)

    def job(self, jid):
        return json.loads(self.jobs("status", jid, "--json").stdout)

    def slurm_id(self, jid):
        return self.sql("SELECT slurm_job FROM jobs WHERE id = ?", jid)[0][0]

    def squeue(self, sid):
        p = subprocess.run(["squeue", "-h", "-t", "all", "-j", str(sid), "-o", "%T|%r"], env=self.env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return p.stdout.strip()

    def events(self, jid):
        return [e for (e,) in self.sql("SELECT event FROM job_events WHERE job_id = ? ORDER BY rowid", jid)]

    def wait_end(self, jid, timeout=900):
        """Waits for the job to end (status follows Slurm, so a Slurm job that failed ends it too). A requeued
        Slurm job's ~2 min start delay is skipped (StartTime=now) once it has been pending for 3 s: started
        within a second of its requeue, slurmd may still hold the old credential as revoked and Slurm
        kills the job ("Job credential revoked"), which a real requeue delay never does."""
        end, pending_since = time.time() + timeout, None
        while time.time() < end:
            state = self.job(jid)["state"]
            if state in ("succeeded", "failed", "cancelled"):
                return state
            sid = self.slurm_id(jid)
            if sid and self.squeue(sid).startswith("PENDING|BeginTime"):
                pending_since = pending_since or time.time()
                if time.time() - pending_since > 3:
                    subprocess.run(["scontrol", "update", f"jobid={sid}", "StartTime=now"], env=self.env,
                                   check=True)
                    pending_since = None
            else:
                pending_since = None
            time.sleep(0.5)
        self.fail(f"job {jid} did not end within {timeout} s:\n{self.log(jid)}\n{self.cluster.log_tails()}")

    def slurm_says(self, jid, sid, state, timeout=60):
        """status's report of Slurm's own state once Slurm has caught up: the batch step records the job's end
        in the catalog before its script exits, so Slurm may still say RUNNING for a moment after."""
        end = time.time() + timeout
        while True:
            said = self.job(jid)["slurm"]
            if f"Slurm job {sid}: {state}" in said or time.time() > end:
                return said
            time.sleep(0.5)

    def wait_step(self, jid, step, timeout=300):
        end = time.time() + timeout
        while time.time() < end:
            st = self.job(jid)
            if st.get("step", 0) >= step and st["state"] == "running":
                return
            self.assertIn(st["state"], ("queued", "running"), st)
            time.sleep(0.2)
        self.fail(f"job {jid} did not reach step {step}")

    def log(self, jid):
        try:
            with open(os.path.join(self.tmp, "runs", f"job-{jid}", "train.log")) as f:
                return f.read()
        except OSError as e:
            return str(e)

    def weights(self, jid, step):
        with open(os.path.join(self.tmp, "runs", f"job-{jid}", "checkpoints", f"step-{step:08d}", "model.safetensors"),
                  "rb") as f:
            return f.read()

    def metric_keys(self, jid):
        return self.sql("SELECT m.step, m.task FROM metrics m JOIN jobs j ON j.run_id = m.run_id WHERE j.id = ? "
                        "ORDER BY m.step, m.task", jid)

    def test_a_two_rank_job_runs_under_sbatch_and_srun(self):
        """A 2-rank job: sbatch runs the constant batch script, srun --mpi=pmix starts the ranks, the job
        succeeds with every step's metrics; status follows Slurm's state; --dry-run prints the sbatch
        command and queues nothing."""
        before = self.sql("SELECT count(*) FROM jobs")[0][0]
        p = self.jobs("submit", "pretrain", "--mixture", "three", "--steps", 12, "--backend", "slurm", "--ranks", 2,
                      "--time", "10:00", "--partition", self.cluster.partition, "--dry-run", "--", *TINY)
        self.assertIn("sbatch --parsable", p.stdout)
        for opt in ("--ntasks=2", "--requeue", "--signal=B:USR1@120", "--open-mode=append", "--time=10:00",
                    f"--partition={self.cluster.partition}", "slurm-run ID"):
            self.assertIn(opt, p.stdout)
        self.assertEqual(self.sql("SELECT count(*) FROM jobs")[0][0], before)
        jid = self.submit("two", 12, "--ranks", 2, extra=("--checkpoint-every", 5))
        sid = self.slurm_id(jid)
        self.assertTrue(sid.isdigit(), sid)
        self.assertEqual(self.wait_end(jid), "succeeded", self.log(jid))
        st = self.job(jid)
        self.assertEqual((st["step"], st["total_steps"], st["attempt"]), (12, 12, 1))
        self.assertEqual(st["slurm_job"], sid)
        self.assertIn(f"Slurm job {sid}: COMPLETED", self.slurm_says(jid, sid, "COMPLETED"))
        self.assertEqual(sorted({s for s, _ in self.metric_keys(jid)}), list(range(12)))
        log = self.log(jid)
        self.assertIn("srun --ntasks=2 --mpi=pmix", log)
        self.assertIn("data parallel: 2 ranks (mpi)", log)
        self.assertEqual(self.events(jid), ["submitted", "submitted to Slurm", "started", "succeeded"])
        with open(os.path.join(self.tmp, "runs", f"job-{jid}", "job.sbatch")) as f:
            self.assertEqual(f.read().splitlines()[-1], 'exec "$@"')
        self.assertIn(f"Slurm job {sid}", self.jobs("status", jid).stdout)

    def test_time_limit_checkpoints_requeues_and_resumes_to_the_same_weights(self):
        """--time 1 --signal-lead 59: Slurm sends USR1 to the batch step long before the job can finish;
        the trainer checkpoints, the job is requeued (scontrol requeue) and resumes, again and again; the
        final weights equal an uninterrupted local run's byte for byte, every (step, task) row once."""
        # ~40 s of training (the sanitizer build is ~5x slower): Slurm's timer (every ~30 s) fires at least once
        steps = 800 if sanitized() else 4000
        extra = ("--checkpoint-every", 100, "--keep", 1000)
        ref = int(self.jobs("submit", "pretrain", "--mixture", "three", "--steps", steps, "--name", "ref", "--",
                            *TINY, "--log-every", 1000, *extra).stdout.strip())
        local = threading.Thread(target=lambda: run(JOBS, "worker", "--once", env=self.env, timeout=1500))
        local.start()  # the reference runs on the other core meanwhile
        jid = self.submit("limited", steps, "--time", "1", "--signal-lead", "59", extra=extra)
        self.assertEqual(self.wait_end(jid, timeout=1500), "succeeded", self.log(jid))
        local.join()
        self.assertEqual(self.job(ref)["state"], "succeeded")
        events = self.events(jid)
        print(f"\n{steps} steps, {events.count('requeued')} requeues at the time limit, {events.count('started')} "
              "attempts; weights and metrics compared with the uninterrupted local run")
        self.assertGreaterEqual(events.count("requeued"), 1, events)
        log = self.log(jid)
        self.assertIn("checkpointed before the time limit", log)
        self.assertIn("requeued", log)
        self.assertEqual(self.weights(jid, steps), self.weights(ref, steps))
        keys = self.metric_keys(jid)
        self.assertEqual(len(keys), len(set(keys)))
        self.assertEqual(keys, self.metric_keys(ref))
        st = self.job(jid)
        self.assertEqual(st["attempt"], events.count("started"))
        self.assertIn("Slurm stopped the job", " ".join(d or "" for (d,) in self.sql(
            "SELECT detail FROM job_events WHERE job_id = ? AND event = 'requeued'", jid)))

    def test_a_preempted_job_resumes(self):
        """scontrol requeue of a running job (what preemption with PreemptMode=REQUEUE does): SIGTERM, the
        trainer checkpoints, the job goes back to the queue, Slurm restarts the batch step and the trainer
        resumes from the checkpoint to the end."""
        jid = self.submit("preempted", LONG_JOB, extra=("--checkpoint-every", 100))
        self.wait_step(jid, 150)
        subprocess.run(["scontrol", "requeue", self.slurm_id(jid)], env=self.env, check=True)
        self.assertEqual(self.wait_end(jid), "succeeded", self.log(jid))
        self.assertIn("requeued", self.events(jid))
        runs = [line for line in self.log(jid).splitlines() if line.startswith("run ")]
        self.assertEqual(len(runs), 2, runs)
        self.assertIn(f"steps 0..{LONG_JOB}", runs[0])
        self.assertNotIn("steps 0..", runs[1])  # resumed from its checkpoint
        self.assertEqual(self.job(jid)["step"], LONG_JOB)

    def test_cancel_uses_scancel(self):
        """cancel: a pending job leaves Slurm at once; a running one checkpoints and stops (run
        'interrupted'), and resume submits it again and it finishes from its checkpoint."""
        pending = self.submit("pending", 100, "--sbatch-arg=--begin=now+3600")
        sid = self.slurm_id(pending)
        self.assertEqual(self.squeue(sid), "PENDING|BeginTime")
        self.jobs("cancel", pending)
        self.assertEqual(self.job(pending)["state"], "cancelled")
        self.assertTrue(self.squeue(sid).startswith("CANCELLED"), self.squeue(sid))
        p = self.jobs("cancel", pending, ok=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("only a queued or running job can be cancelled", p.stderr)

        jid = self.submit("running", LONG_JOB, extra=("--checkpoint-every", 100))
        self.wait_step(jid, 150)
        self.jobs("cancel", jid)
        self.assertEqual(self.wait_end(jid), "cancelled")
        self.assertEqual(self.sql("SELECT r.state FROM runs r JOIN jobs j ON j.run_id = r.id WHERE j.id = ?", jid),
                         [("interrupted",)])
        first = self.slurm_id(jid)
        self.jobs("resume", jid)
        self.assertNotEqual(self.slurm_id(jid), first)
        self.assertEqual(self.wait_end(jid), "succeeded", self.log(jid))
        self.assertEqual(self.job(jid)["step"], LONG_JOB)

    def test_a_job_cancelled_behind_our_back_is_followed(self):
        """scancel outside upmoe-jobs: the next status/list records the job as cancelled, naming Slurm's
        state; resume brings it back."""
        jid = self.submit("outside", 20, "--sbatch-arg=--begin=now+3600")
        subprocess.run(["scancel", self.slurm_id(jid)], env=self.env, check=True)
        st = self.job(jid)
        self.assertEqual(st["state"], "cancelled")
        self.assertIn("ended as CANCELLED", st["message"])
        self.assertIn("outside", self.jobs("list", "--state", "cancelled").stdout)

    def test_names_and_options_never_reach_a_shell(self):
        """A job name and sbatch options full of shell syntax run as plain text: nothing is executed, the
        catalog keeps the name, Slurm's job name is sanitized, the batch script is the constant one."""
        mark = os.path.join(self.tmp, "pwned")
        name = f"x$(touch {mark})`touch {mark}`;touch {mark}'\"\n"
        jid = self.submit(name, 3, f"--sbatch-arg=--comment=$(touch {mark})")
        self.assertEqual(self.wait_end(jid), "succeeded", self.log(jid))
        self.assertFalse(os.path.exists(mark))
        self.assertEqual(self.sql("SELECT name FROM jobs WHERE id = ?", jid)[0][0], name)
        p = subprocess.run(["squeue", "-h", "-t", "all", "-j", self.slurm_id(jid), "-o", "%j|%k"], env=self.env,
                           text=True, stdout=subprocess.PIPE, check=True)
        jobname, comment = p.stdout.strip().split("|", 1)
        self.assertTrue(jobname.startswith(f"upmoe-{jid}-x__touch_"), jobname)
        self.assertEqual(comment, f"$(touch {mark})")
        self.assertIn("'" + f"x$(touch {mark})", self.job(jid)["command"])  # shown quoted

    def test_an_evaluation_job_runs_under_sbatch(self):
        """submit eval --backend slurm: sbatch runs the batch step, which claims the job and runs upmoe-eval's
        full pass under the job's attempt; the results land in the catalog, the job succeeds and its log is
        Slurm's output file; --time reaches sbatch."""
        ckpt = os.path.join(self.tmp, "eval-ckpt")
        run(os.path.join(BUILD, "upmoe-train"), "--mixture", "three", "--steps", 2, "--out", ckpt, *TINY, "--quiet",
            env=self.env)
        before = self.sql("SELECT count(*) FROM eval_results WHERE dataset = 'images'")[0][0]
        p = self.jobs("submit", "eval", "--checkpoint", ckpt, "--dataset", "images", "--limit", 24, "--name",
                      "eval-slurm", "--backend", "slurm", "--time", "10:00", "--", "--image-size", 32, "--batch", 8)
        jid = int(p.stdout.strip())
        self.assertIn("is Slurm job", p.stderr)
        sid = self.slurm_id(jid)
        self.assertTrue(sid.isdigit(), sid)
        self.assertEqual(self.wait_end(jid), "succeeded", self.log(jid))
        st = self.job(jid)
        self.assertEqual((st["kind"], st["attempt"], st["slurm_job"]), ("eval", 1, sid))
        self.assertIn(f"Slurm job {sid}: COMPLETED", self.slurm_says(jid, sid, "COMPLETED"))
        self.assertEqual(self.events(jid), ["submitted", "submitted to Slurm", "started", "succeeded"])
        rows = self.sql("SELECT metric, samples FROM eval_results WHERE dataset = 'images' ORDER BY rowid")[before:]
        self.assertEqual({m for m, _ in rows}, {"top1", "top5", "loss"})
        self.assertEqual({n for _, n in rows}, {24})
        with open(st["log"], encoding="utf-8") as f:
            log = f.read()
        self.assertIn("upmoe-eval --catalog", log)
        self.assertIn(f"--job {jid} --attempt 1", log)
        tl = subprocess.run(["scontrol", "show", "job", sid], env=self.env, text=True, stdout=subprocess.PIPE)
        self.assertIn("TimeLimit=00:10:00", tl.stdout)

    def test_gpus_per_rank_reach_sbatch(self):
        """--gpus-per-rank N asks Slurm for N GPUs per task and has the ranks compute on the cuda backend (the
        batch step's environment); out of range it is a usage error, and it needs --backend slurm."""
        p = self.jobs("submit", "pretrain", "--mixture", "three", "--ranks", 4, "--backend", "slurm",
                      "--gpus-per-rank", 1, "--dry-run")
        self.assertIn("--gpus-per-task=1", p.stdout)
        self.assertIn("--export=ALL,UPMOE_BACKEND=cuda", p.stdout)
        self.assertIn("--ntasks=4", p.stdout)
        p = self.jobs("submit", "pretrain", "--mixture", "three", "--backend", "slurm", "--gpus-per-rank", 0,
                      "--dry-run", ok=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--gpus-per-rank needs an integer in [1, 64], not '0'", p.stderr)
        p = self.jobs("submit", "pretrain", "--mixture", "three", "--gpus-per-rank", 1, ok=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--gpus-per-rank and --sbatch-arg need --backend slurm", p.stderr)

    def test_bad_slurm_options_change_nothing(self):
        """Slurm-only options without --backend slurm, a malformed --time and an sbatch that refuses the job
        (unknown partition) exit non-zero with a clear message and leave no job behind."""
        before = self.sql("SELECT count(*) FROM jobs")[0][0]
        p = self.jobs("submit", "pretrain", "--mixture", "three", "--time", "10", ok=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("need --backend slurm", p.stderr)
        p = self.jobs("submit", "pretrain", "--mixture", "three", "--backend", "slurm", "--time", "1h; rm", ok=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--time needs a Slurm time limit", p.stderr)
        p = self.jobs("submit", "pretrain", "--mixture", "three", "--backend", "slurm", "--partition", "nosuch",
                      ok=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("sbatch failed", p.stderr)
        self.assertIn("partition", p.stderr.lower())
        self.assertEqual(self.sql("SELECT count(*) FROM jobs")[0][0], before)
        p = self.jobs("slurm-run", 1, ok=False)  # outside a batch job
        self.assertEqual(p.returncode, 2)
        self.assertIn("SLURM_JOB_ID is not set", p.stderr)


if __name__ == "__main__":
    unittest.main()
