"""The Slurm test fixture really works: a private slurmctld + slurmd + munged
under a temp dir runs batch jobs, shows them in squeue, cancels them (SIGKILL
after KillWait), delivers --signal / scancel --signal to job steps, requeues
with SLURM_RESTART_COUNT and one appended log, launches 2-task pmix steps,
fakes GPUs with gres, and leaves no process behind.

Run: cd tests/jobs && python3 -m unittest -v test_slurm_fixture
Skips (with the reason) where Slurm/munge are not installed or not root."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import slurm_fixture  # noqa: E402

REASON = slurm_fixture.available()
PY = sys.executable or "/usr/bin/python3"

# A step task that reports USR1: writes `ready`, then on USR1 writes the
# marker (with the time it arrived) and exits 0.
TRAP_PY = textwrap.dedent("""\
    import os, signal, sys, time
    marker, ready = sys.argv[1], sys.argv[2]
    def on_usr1(signum, frame):
        with open(marker + ".tmp", "w") as f:
            f.write("USR1 %f rank=%s\\n" % (time.time(), os.environ.get("SLURM_PROCID")))
        os.rename(marker + ".tmp", marker)
        sys.exit(0)
    signal.signal(signal.SIGUSR1, on_usr1)
    with open(ready, "w") as f:
        f.write("%f\\n" % time.time())
    for _ in range(600):
        time.sleep(0.5)
    sys.exit(3)
""")

MPI_HELLO_C = textwrap.dedent("""\
    #include <mpi.h>
    #include <stdio.h>
    int main(int argc, char **argv) {
        int rank, size, sum = 0, one = 1;
        MPI_Init(&argc, &argv);
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        MPI_Comm_size(MPI_COMM_WORLD, &size);
        MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
        printf("rank %d of %d sum %d\\n", rank, size, sum);
        MPI_Finalize();
        return 0;
    }
""")


def wait_for(pred, timeout, interval=0.2, what="condition"):
    """Poll pred() until it returns a true value; return it, or fail.
    `what` may be a callable, evaluated only for the failure message."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what() if callable(what) else what))
        time.sleep(interval)


@unittest.skipIf(REASON is not None, REASON)
class SlurmFixtureTest(unittest.TestCase):
    cluster = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="upmoe-slurm-test-")
        cls.cluster = slurm_fixture.Slurm(os.path.join(cls.tmp, "cluster"))
        t = time.monotonic()
        cls.cluster.start()
        cls.start_s = time.monotonic() - t
        cls.work = os.path.join(cls.tmp, "work")
        os.makedirs(cls.work)

    @classmethod
    def tearDownClass(cls):
        if cls.cluster is None:
            return
        cls.cluster.stop()
        cls.cluster.stop()                      # idempotent
        left = cls.cluster.pids()
        if left:
            raise AssertionError("processes left behind: %s" % left)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.jobs = []

    def tearDown(self):
        for j in self.jobs:                     # never leave a job running
            self.slurm("scancel", j)

    # -- helpers ----------------------------------------------------------
    def slurm(self, *argv, timeout=30, check=False):
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=self.cluster.env(), cwd=self.work, timeout=timeout)
        if check and p.returncode != 0:
            self.fail("%s failed (%d): %s%s\n%s" % (" ".join(argv), p.returncode, p.stdout, p.stderr,
                                                    self.cluster.log_tails()))
        return p

    def sbatch(self, *args):
        out = self.slurm("sbatch", "--parsable", *args, check=True).stdout.strip()
        job = out.split(";")[0]
        self.assertRegex(job, r"^\d+$")
        self.jobs.append(job)
        return job

    def state(self, job):
        """'STATE|REASON' from squeue, or '' once Slurm forgot the job."""
        return self.slurm("squeue", "-h", "-t", "all", "-j", job, "-o", "%T|%r").stdout.strip()

    def show(self, job):
        return self.slurm("scontrol", "show", "job", job).stdout

    def wait_state(self, job, states, timeout):
        return wait_for(lambda: (lambda s: s if s.split("|")[0] in states else None)(self.state(job)),
                        timeout, what=lambda: "job %s in %s (now %r)" % (job, sorted(states), self.state(job)))

    def path(self, name):
        return os.path.join(self.work, name)

    def read(self, name):
        """The file's text, or '' while it does not exist yet."""
        try:
            with open(self.path(name)) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def script(self, name, body):
        p = self.path(name)
        with open(p, "w") as f:
            f.write("#!/bin/bash\n" + textwrap.dedent(body))
        os.chmod(p, 0o755)
        return p

    def gone(self, pidfile):
        """True once the pid written in pidfile is dead (or a zombie)."""
        with open(self.path(pidfile)) as f:
            pid = int(f.read().split()[0])
        try:
            with open("/proc/%d/stat" % pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            return True

    # -- tests ------------------------------------------------------------
    def test_1_batch_job_runs_and_shows_in_squeue(self):
        self.assertLess(self.start_s, 60)
        job = self.sbatch("--output", self.path("hello.out"), "--wrap", "echo hello; sleep 3")
        running = self.wait_state(job, {"RUNNING"}, 30)
        self.assertEqual(running, "RUNNING|None")
        def done():
            s = self.state(job)
            return (s or "gone") if s.split("|")[0] in ("COMPLETED", "") else None
        self.assertIn(wait_for(done, 30, what="job %s done" % job), ("COMPLETED|None", "gone"))
        self.assertEqual(self.read("hello.out"), "hello\n")
        info = self.show(job)
        self.assertIn("JobState=COMPLETED", info)      # MinJobAge keeps it visible
        self.assertIn("ExitCode=0:0", info)

    def test_2a_scancel_ends_running_job(self):
        job = self.sbatch("--output", self.path("cancel.out"),
                          "--wrap", "/bin/sleep 300 & echo $! > %s; wait" % self.path("cancel.pid"))
        self.wait_state(job, {"RUNNING"}, 30)
        wait_for(lambda: os.path.exists(self.path("cancel.pid")) and os.path.getsize(self.path("cancel.pid")),
                 10, what="pid file")
        t = time.monotonic()
        self.slurm("scancel", job, check=True)
        self.wait_state(job, {"CANCELLED"}, slurm_fixture.Slurm.KILL_WAIT + 5)
        wait_for(lambda: self.gone("cancel.pid"), slurm_fixture.Slurm.KILL_WAIT + 5, what="sleep gone")
        self.assertLess(time.monotonic() - t, slurm_fixture.Slurm.KILL_WAIT + 5)

    def test_2b_scancel_kills_term_ignoring_job_after_killwait(self):
        kw = slurm_fixture.Slurm.KILL_WAIT
        job = self.sbatch("--output", self.path("stubborn.out"), "--wrap",
                          "trap '' TERM; /bin/sleep 300 & echo $! > %s; wait; wait; wait" % self.path("stubborn.pid"))
        self.wait_state(job, {"RUNNING"}, 30)
        wait_for(lambda: os.path.exists(self.path("stubborn.pid")) and os.path.getsize(self.path("stubborn.pid")),
                 10, what="pid file")
        t = time.monotonic()
        self.slurm("scancel", job, check=True)
        wait_for(lambda: self.gone("stubborn.pid"), kw + 5, what="TERM-ignoring sleep killed")
        took = time.monotonic() - t
        self.assertGreaterEqual(took, kw - 1.5, "killed before KillWait: SIGTERM was not ignored?")
        self.assertLess(took, kw + 5)
        self.wait_state(job, {"CANCELLED"}, 10)

    def _signal_job(self, name, *sbatch_args):
        """A batch job whose single srun step traps USR1; returns job id."""
        with open(self.path(name + ".py"), "w") as f:
            f.write(TRAP_PY)
        batch = self.script(name + ".sh", """\
            srun %s %s %s %s &
            wait
            echo "step exit $?"
            """ % (PY, self.path(name + ".py"), self.path(name + ".marker"), self.path(name + ".ready")))
        return self.sbatch("--output", self.path(name + ".out"), *sbatch_args, batch)

    def test_3a_time_limit_signal_reaches_step(self):
        # --time=1 --signal=USR1@50: due ~10 s after start; slurmctld checks
        # time limits only periodically, so it comes a few seconds later
        # (12-15 s measured); it must come before the 60 s limit ends the job.
        job = self._signal_job("sig", "--time=1", "--signal=USR1@50")
        self.wait_state(job, {"RUNNING"}, 30)
        wait_for(lambda: os.path.exists(self.path("sig.ready")), 20, what="step ready")
        t = time.monotonic()
        marker = wait_for(lambda: self.read("sig.marker"), 60,
                          interval=0.5, what="USR1 marker")
        took = time.monotonic() - t
        print("\n  [--signal=USR1@50 with --time=1 arrived %.1f s after the step started]" % took, file=sys.stderr)
        self.assertIn("USR1", marker)
        self.assertIn("rank=0", marker)
        self.wait_state(job, {"COMPLETED"}, 20)
        self.assertIn("step exit 0", self.read("sig.out"))

    def test_3b_scancel_signal_reaches_step(self):
        job = self._signal_job("ssig")
        self.wait_state(job, {"RUNNING"}, 30)
        wait_for(lambda: os.path.exists(self.path("ssig.ready")), 20, what="step ready")
        self.slurm("scancel", "--signal=USR1", job, check=True)
        marker = wait_for(lambda: self.read("ssig.marker"), 10,
                          what="USR1 marker")
        self.assertIn("USR1", marker)
        self.wait_state(job, {"COMPLETED"}, 20)
        self.assertIn("step exit 0", self.read("ssig.out"))

    def test_4_requeue_restarts_with_restart_count_and_one_log(self):
        batch = self.script("requeue.sh", """\
            echo "run restart=${SLURM_RESTART_COUNT:-unset}"
            exec /bin/sleep 300
            """)
        job = self.sbatch("--requeue", "--open-mode=append", "--output", self.path("requeue.out"), batch)
        self.wait_state(job, {"RUNNING"}, 30)
        wait_for(lambda: "restart=" in self.read("requeue.out"), 10, what="first run logged")
        self.slurm("scontrol", "requeue", job, check=True)
        self.wait_state(job, {"PENDING"}, slurm_fixture.Slurm.KILL_WAIT + 15)
        self.assertIn("Restarts=1", self.show(job))

        # A requeued job may not start before cred_expire (120 s) passes: skip that wait.
        def release():
            if self.state(job).startswith("RUNNING"):
                return True
            self.slurm("scontrol", "update", "jobid=" + job, "StartTime=now")
            return False
        wait_for(release, 30, interval=1, what="requeued job running again")
        wait_for(lambda: self.read("requeue.out").count("run restart=") >= 2, 15, what="second run logged")
        self.assertEqual(re.findall(r"run restart=(\S+)", self.read("requeue.out")), ["unset", "1"])

    def test_5_srun_mpi_pmix_two_tasks(self):
        listing = self.slurm("srun", "--mpi=list")
        out = listing.stdout + listing.stderr
        if not re.search(r"^\s*pmix\s*$", out, re.M):
            self.skipTest("srun --mpi=list has no pmix: %r" % out)
        p = self.slurm("srun", "--mpi=pmix", "-n", "2", "bash", "-c",
                       'echo "pmix_rank=$PMIX_RANK procid=$SLURM_PROCID"', timeout=60, check=True)
        lines = sorted(l for l in p.stdout.splitlines() if l.startswith("pmix_rank="))
        self.assertEqual(lines, ["pmix_rank=0 procid=0", "pmix_rank=1 procid=1"], p.stdout + p.stderr)

    def mpi_hello(self):
        """A tiny Open MPI program (MPI_Init + MPI_Allreduce), built once."""
        exe = self.path("mpi_hello")
        if os.path.exists(exe):
            return exe
        mpicc = shutil.which("mpicc")
        if mpicc is None:
            self.skipTest("mpicc (Debian libopenmpi-dev) not installed")
        src = self.path("mpi_hello.c")
        with open(src, "w") as f:
            f.write(MPI_HELLO_C)
        subprocess.run([mpicc, "-o", exe, src], check=True)
        return exe

    def test_6_open_mpi_program_under_srun_pmix(self):
        """A real MPI_Init/MPI_Allreduce with Debian's Open MPI, launched by srun --mpi=pmix."""
        p = self.slurm("srun", "--mpi=pmix", "-n", "2", self.mpi_hello(), timeout=90)
        lines = sorted(l for l in p.stdout.splitlines() if l.startswith("rank "))
        self.assertEqual(lines, ["rank 0 of 2 sum 2", "rank 1 of 2 sum 2"],
                         "rc=%d\n%s\n%s" % (p.returncode, p.stdout, p.stderr))

    def test_7_second_cluster_with_fake_gpus_and_mpi_default_pmix(self):
        """A second cluster beside the first: own ports, fake GPUs, MpiDefault=pmix."""
        exe = self.mpi_hello() if shutil.which("mpicc") else None
        with slurm_fixture.Slurm(os.path.join(self.tmp, "gpu-cluster"), gpus=2, mpi="pmix") as gpu:
            self.assertFalse({gpu.ctld_port, gpu.slurmd_port} & {self.cluster.ctld_port, self.cluster.slurmd_port})
            p = subprocess.run(["srun", "--gres=gpu:1", "printenv", "CUDA_VISIBLE_DEVICES"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=gpu.env(), timeout=60)
            self.assertEqual(p.stdout.strip(), "0", p.stderr + gpu.log_tails())
            p = subprocess.run(["srun", "--gres=gpu:2", "printenv", "CUDA_VISIBLE_DEVICES"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=gpu.env(), timeout=60)
            self.assertEqual(p.stdout.strip(), "0,1", p.stderr)
            if exe:   # MpiDefault=pmix: plain srun launches an Open MPI program
                p = subprocess.run(["srun", "-n", "2", exe], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, env=gpu.env(), timeout=90)
                self.assertEqual(sorted(p.stdout.splitlines()), ["rank 0 of 2 sum 2", "rank 1 of 2 sum 2"],
                                 p.stderr)
            # the first cluster is untouched
            self.assertEqual(self.slurm("sinfo", "-h", "-o", "%T").stdout.split(), ["idle"])
        self.assertEqual(gpu.pids(), [])


if __name__ == "__main__":
    unittest.main()
