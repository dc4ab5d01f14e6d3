"""The communicator (trainer/comm.h) on its own, through upmoe-comm-ranks (tests/support/comm_ranks.c): every
collective (all-reduce sum and mean, non-blocking all-reduces in flight together, 64-bit max, broadcast,
barrier, all-gather of equal and of different sizes) gives the known result in one process without MPI and
on 2, 3 and 4 ranks under Open MPI's mpirun; a rank that stops (silent) or stays alive but never arrives is
named by the others, which give up within the bound the options set."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from train_fixture import BUILD, mpi_env  # noqa: E402

RANKS = os.path.join(BUILD, "upmoe-comm-ranks")
MPIRUN = shutil.which("mpirun")
LINE = re.compile(r"^rank (\d+) of (\d+) \(local (\d+) of (\d+)\) via (\w+): ok, (\d+) checks$", re.M)


def launch(*argv, n=None, timeout=300, extra_env=None):
    """upmoe-comm-ranks argv, alone or under mpirun -np n; (returncode, stdout, stderr, seconds). The job runs
    in its own session and is killed whole if it outlives the timeout (a stopped rank must not linger)."""
    cmd = [RANKS, *argv]
    if n:
        cmd = [MPIRUN, "-np", str(n), "--oversubscribe", "--bind-to", "none", *cmd]
    env = mpi_env(os.environ)
    for k in [k for k in env if k.startswith(("OMPI_COMM_WORLD", "PMIX_", "PMI_"))]:
        del env[k]  # not itself started by a launcher
    env.update(extra_env or {})
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # ranks left behind (a stopped one ignores mpirun's SIGTERM)
        except ProcessLookupError:
            pass
        if p.poll() is None:
            p.communicate()
    return p.returncode, out, err, time.time() - t0


@unittest.skipUnless(os.access(RANKS, os.X_OK), f"{RANKS} not built")
class CommTest(unittest.TestCase):
    def check_world(self, world, out, name):
        lines = sorted((tuple(int(x) for x in m.groups()[:4]), m.group(5), int(m.group(6)))
                       for m in LINE.finditer(out))
        self.assertEqual([l[0][:2] for l in lines], [(r, world) for r in range(world)], out)
        for (r, w, lr, lw), via, checks in lines:
            self.assertEqual(via, name)
            self.assertEqual((lr, lw), (r, w))  # one machine: the local ranks are the ranks
            self.assertGreater(checks, 3 * 1000)  # every element of the reductions was compared

    def test_one_process_needs_no_launcher(self):
        rc, out, err, _ = launch()
        self.assertEqual(rc, 0, err)
        self.check_world(1, out, "local")

    @unittest.skipUnless(MPIRUN, "mpirun not found: tools/setup installs Debian's openmpi-bin")
    def test_every_collective_on_2_3_and_4_ranks(self):
        for n in (2, 3, 4):
            with self.subTest(ranks=n):
                rc, out, err, took = launch(n=n)
                print(f"\n{n} ranks: all collectives checked in {took:.1f} s")
                self.assertEqual(rc, 0, out + err)
                self.check_world(n, out, "mpi")

    @unittest.skipUnless(MPIRUN, "mpirun not found: tools/setup installs Debian's openmpi-bin")
    def test_a_stopped_rank_is_named_within_the_timeout(self):
        """Rank 1 is SIGSTOPped before a barrier: its heartbeats stop, and after --timeout 2 s of silence the
        others give up naming it and abort the job."""
        rc, out, err, took = launch("--timeout", "2", "--stall", "1:stop", n=3, timeout=120)
        print(f"\nstopped rank 1: the job ended after {took:.1f} s")
        self.assertNotEqual(rc, 0)
        self.assertIn("rank 1: stalling (stop)", out)
        self.assertRegex(err, r"rank [02]: waited \d+ s in the stall check \(barrier\) for rank 1 \(silent for \d+ s, "
                              r"never reached this collective\), which died or was stopped")
        self.assertNotRegex(err, r"for rank [02] ")
        self.assertLess(took, 30)

    @unittest.skipUnless(MPIRUN, "mpirun not found: tools/setup installs Debian's openmpi-bin")
    def test_a_live_rank_that_never_arrives_is_named_after_the_patience(self):
        """Rank 1 sleeps instead of entering a barrier: its heartbeats go on, so the others wait the patience
        (4 s, above the 2 s timeout), then give up naming it as alive but stuck."""
        rc, out, err, took = launch("--timeout", "2", "--patience", "4", "--stall", "1:sleep", n=2, timeout=120)
        print(f"\nsleeping rank 1: the job ended after {took:.1f} s")
        self.assertNotEqual(rc, 0)
        m = re.search(r"rank 0: waited (\d+) s in the stall check \(barrier\) for rank 1 \(1 collective behind for "
                      r"\d+ s\), which is alive but made no progress", err)
        self.assertIsNotNone(m, err)
        self.assertGreaterEqual(int(m.group(1)), 4)  # not given up on before the patience
        self.assertLess(took, 30)

    @unittest.skipUnless(MPIRUN, "mpirun not found: tools/setup installs Debian's openmpi-bin")
    def test_a_live_rank_that_is_working_is_waited_for_beyond_the_patience(self):
        """Rank 1 computes (its work count moving, as the encoder's block passes move it) for 3 x the
        patience (2 s) before it enters the barrier: the others wait for it, and every check passes. A
        rank slower than any step seen so far, e.g. the first full-vocabulary step, is not a hung one."""
        rc, out, err, took = launch("--timeout", "1", "--patience", "2", "--stall", "1:work", n=2, timeout=120)
        print(f"\nworking rank 1: the barrier completed after {took:.1f} s")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("rank 1: stalling (work)", out)
        self.check_world(2, out, "mpi")
        self.assertGreater(took, 6)

    def test_the_device_communicator_bootstraps_over_this_one(self):
        """The NCCL bootstrap (trainer/devcomm.c) with a stand-in module (tests/support/fake_devcomm.c): on 3
        ranks rank 0's id reaches every rank through the broadcast; when one rank's module refuses, or rank 0
        cannot make the id, every rank returns the same error naming the ranks that failed and why, and the
        job ends (no rank waits for the others); a missing module is a clear error on every rank."""
        fake = {"UPMOE_COMM_NCCL": os.path.join(BUILD, "libupmoe-fake-devcomm.so")}
        rc, out, err, _ = launch("--devcomm", n=3, extra_env=fake)
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(sorted(re.findall(r"^rank (\d): devcomm fake ok$", out, re.M)), ["0", "1", "2"], out)
        ids = re.findall(r"fake devcomm: rank (\d) of 3 joined with id ([0-9a-f]{64})", err)
        self.assertEqual(sorted(r for r, _ in ids), ["0", "1", "2"], err)
        self.assertEqual(len({i for _, i in ids}), 1, err)  # one id, rank 0's, everywhere
        rc, out, err, _ = launch("--devcomm", n=3, extra_env=dict(fake, FAKE_DEVCOMM_FAIL_RANK="1"))
        self.assertNotEqual(rc, 0)
        msgs = re.findall(r"^rank (\d): error: (.*)$", out, re.M)
        self.assertEqual(sorted(r for r, _ in msgs), ["0", "1", "2"], out + err)
        for _, m in msgs:
            self.assertEqual(m, "the device communicator could not start on rank 1 (rank 1: fake devcomm: rank 1 "
                                "refused (as asked))")
        rc, out, err, _ = launch("--devcomm", n=2, extra_env=dict(fake, FAKE_DEVCOMM_FAIL_ID="1"))
        self.assertNotEqual(rc, 0)
        self.assertEqual(len(re.findall(r"^rank \d: error: the device communicator could not start on ranks 0, 1 "
                                        r"\(rank 0: fake devcomm: no id \(as asked\)\)$", out, re.M)), 2, out + err)
        rc, out, err, _ = launch("--devcomm", n=2, extra_env={"UPMOE_COMM_NCCL": "/nonexistent/libupmoe-comm-nccl.so"})
        self.assertNotEqual(rc, 0)
        self.assertEqual(len(re.findall(r"could not start on ranks 0, 1 \(rank 0: the NCCL communicator is not part "
                                        r"of this build \(no /nonexistent/libupmoe-comm-nccl.so", out)), 2, out + err)

    def test_usage(self):
        for argv in (["--timeout", "0"], ["--stall", "1:nap"], ["--bogus"], ["--stall", "1:stop"], ["--stall", "0:work"]):
            rc, out, err, _ = launch(*argv)
            self.assertEqual(rc, 2, argv)
            self.assertIn("usage: upmoe-comm-ranks", err)


if __name__ == "__main__":
    unittest.main()
