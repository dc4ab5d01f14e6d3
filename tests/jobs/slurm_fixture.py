"""A throw-away single-node Slurm cluster on localhost, for tests.

Dependency-free (Python 3 standard library only).  Everything the cluster
needs lives under one directory: slurm.conf (+ gres.conf, plugstack.conf),
state and spool directories, logs, pid files, and a private munged with its
own key and socket.  Nothing under /etc/slurm or /run/munge is read or
written; clients find the cluster through ``SLURM_CONF`` (see ``env()``), and
Slurm finds the private munged through ``AuthInfo=socket=...`` in slurm.conf.

Usage::

    import slurm_fixture
    reason = slurm_fixture.available()     # None, or why the tests must skip
    with slurm_fixture.Slurm(tmpdir) as cluster:
        subprocess.run(["sbatch", "--wrap", "hostname"], env=cluster.env())

Requirements (Debian 12): the packages ``slurm-wlm`` (pulls in slurmctld,
slurmd, slurm-client, slurm-wlm-basic-plugins) and ``munge``; running as
root (SlurmUser=root, SlurmdUser=root; slurmd must be able to start jobs).
munged refuses a socket below a directory that others cannot search (e.g.
a 0700 ``tempfile.mkdtemp()``); the fixture runs it with ``--force``, which
turns that into a warning (only root talks to this munged anyway).

Configuration (facts measured for Slurm 22.05 in a container): the cgroup
plugins do not work, so ProctrackType=proctrack/linuxproc and
TaskPlugin=task/none; no slurmdbd, so no sacct (follow jobs with squeue /
scontrol); ports are picked free at start, so two instances or a system
Slurm do not collide.  The daemons get SIGTERM if the test process dies
(PR_SET_PDEATHSIG); job steps of a killed test run are then left to
themselves -- ``stop()`` is what cancels jobs and kills stray slurmstepds.
"""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import time

__all__ = ["Slurm", "available", "SlurmError"]

_REQUIRED = ("slurmctld", "slurmd", "munged", "munge", "unmunge", "sbatch",
             "squeue", "scancel", "scontrol", "sinfo", "srun")


class SlurmError(RuntimeError):
    """The cluster could not be started (message carries the log tails)."""


def available():
    """Return None if a private cluster can be started here, else a reason."""
    missing = [p for p in _REQUIRED if shutil.which(p) is None]
    if missing:
        return ("Slurm/munge not installed (missing %s; Debian packages "
                "slurm-wlm munge)" % ", ".join(missing))
    if os.geteuid() != 0:
        return "the Slurm test cluster needs root (SlurmdUser=root)"
    return None


def _free_ports(n):
    """n distinct TCP ports that are free right now on all interfaces."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _parent_death_signal():
    """preexec_fn: the daemon gets SIGTERM if the test process dies (even by
    SIGKILL, when atexit cannot run).  Linux only; a no-op elsewhere."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
    except (ImportError, OSError):
        return None
    pr_set_pdeathsig = 1

    def preexec():
        libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    return preexec


def _tail(path, lines=25):
    try:
        with open(path, "rb") as f:
            data = f.read().decode("utf-8", "replace").splitlines()
    except OSError as e:
        return "(%s)" % e
    return "\n".join(data[-lines:])


def _hardware():
    """Node values from `slurmd -C`, e.g. {'NodeName': 'vm', 'CPUs': '2', ...}."""
    out = subprocess.run(["slurmd", "-C"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, check=True,
                         env=dict(os.environ, SLURM_CONF="/dev/null")).stdout
    line = next(l for l in out.splitlines() if l.startswith("NodeName="))
    return dict(kv.split("=", 1) for kv in line.split())


class Slurm:
    """A private slurmctld + slurmd + munged under ``tmpdir``.

    ``cpus``: CPUs to advertise (default: what ``slurmd -C`` finds; more than
    that is allowed, via SlurmdParameters=config_overrides).  ``gpus``: number
    of fake GPUs (gres/gpu backed by character devices such as /dev/zero;
    ``--gres=gpu:N`` then sets CUDA_VISIBLE_DEVICES), at most 4.  ``mpi``:
    MpiDefault, "none" (srun of an Open MPI program then needs
    ``--mpi=pmix``) or "pmix" (plain ``srun`` launches MPI programs).
    Attributes after construction: ``dir``, ``conf`` (slurm.conf path),
    ``node`` (node name), ``partition``, ``log_dir``, ``ctld_port``,
    ``slurmd_port`` (ports are chosen again at each ``start``).
    """

    KILL_WAIT = 5          # seconds between SIGTERM and SIGKILL on scancel
    MIN_JOB_AGE = 3600     # finished jobs stay visible in squeue/scontrol
    _GPU_DEVICES = ("/dev/zero", "/dev/full", "/dev/null", "/dev/urandom")

    def __init__(self, tmpdir, cpus=None, gpus=0, mpi="none"):
        self.dir = os.path.abspath(tmpdir)
        self.conf = os.path.join(self.dir, "slurm.conf")
        self.log_dir = os.path.join(self.dir, "log")
        self.partition = "debug"
        self._munge_dir = os.path.join(self.dir, "munge")
        self.munge_socket = os.path.join(self._munge_dir, "munge.socket")
        self._procs = {}            # name -> Popen
        self._hw = _hardware()
        self.node = self._hw["NodeName"]
        self.cpus = int(cpus or self._hw["CPUs"])
        if gpus > len(self._GPU_DEVICES):
            raise ValueError("at most %d fake GPUs" % len(self._GPU_DEVICES))
        self.gpus = gpus
        self.mpi = mpi
        self.ctld_port = self.slurmd_port = None
        for sub in ("state", "spool", "log", "run", "tmp", "munge", "munge/key"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        # munged: socket dir o+x (ancestors too, else --force), key private.
        os.chmod(self._munge_dir, 0o755)
        os.chmod(os.path.join(self._munge_dir, "key"), 0o700)
        self._write_config()

    # -- configuration ----------------------------------------------------
    def _write_config(self):
        d = self.dir
        if self.ctld_port is None:
            self.ctld_port, self.slurmd_port = _free_ports(2)
        hw = self._hw
        node = ["NodeName=%s" % self.node, "NodeAddr=127.0.0.1",
                "CPUs=%d" % self.cpus]
        if self.cpus == int(hw["CPUs"]):
            node += ["%s=%s" % (k, hw[k]) for k in
                     ("Boards", "SocketsPerBoard", "CoresPerSocket",
                      "ThreadsPerCore") if k in hw]
        node.append("RealMemory=%s" % hw.get("RealMemory", "1"))
        if self.gpus:
            node.append("Gres=gpu:%d" % self.gpus)
        node.append("State=UNKNOWN")
        lines = [
            "# generated by tests/jobs/slurm_fixture.py",
            "ClusterName=upmoetest",
            "SlurmctldHost=localhost",
            "SlurmUser=root",
            "SlurmdUser=root",
            "SlurmctldPort=%d" % self.ctld_port,
            "SlurmdPort=%d" % self.slurmd_port,
            "AuthType=auth/munge",
            "CredType=cred/munge",
            "AuthInfo=socket=%s" % self.munge_socket,
            "StateSaveLocation=%s/state" % d,
            "SlurmdSpoolDir=%s/spool" % d,
            "SlurmctldPidFile=%s/run/slurmctld.pid" % d,
            "SlurmdPidFile=%s/run/slurmd.pid" % d,
            "SlurmctldLogFile=%s/log/slurmctld.log" % d,
            "SlurmdLogFile=%s/log/slurmd.log" % d,
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "PlugStackConfig=%s/plugstack.conf" % d,
            "MailProg=/bin/true",
            "TmpFS=%s/tmp" % d,
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SwitchType=switch/none",
            "MpiDefault=%s" % self.mpi,
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "ReturnToService=2",
            "JobRequeue=1",
            "KillWait=%d" % self.KILL_WAIT,
            "MinJobAge=%d" % self.MIN_JOB_AGE,
            "InactiveLimit=0",
            "Waittime=0",
        ]
        if self.cpus != int(hw["CPUs"]):
            lines.append("SlurmdParameters=config_overrides")
        if self.gpus:
            lines.append("GresTypes=gpu")
        lines += [" ".join(node),
                  "PartitionName=%s Nodes=ALL Default=YES MaxTime=INFINITE "
                  "State=UP" % self.partition]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(os.path.join(d, "plugstack.conf"), "w") as f:
            f.write("")
        gres = os.path.join(d, "gres.conf")
        if self.gpus:
            with open(gres, "w") as f:
                for dev in self._GPU_DEVICES[:self.gpus]:
                    f.write("NodeName=%s Name=gpu File=%s\n" % (self.node, dev))
        elif os.path.exists(gres):
            os.unlink(gres)

    # -- public API -------------------------------------------------------
    def env(self):
        """os.environ plus SLURM_CONF: for sbatch/squeue/scancel/srun and
        for programs that call them.  (libmunge has no socket variable; all
        Slurm commands take the munge socket from slurm.conf's AuthInfo.)"""
        e = dict(os.environ)
        for k in list(e):   # do not leak an enclosing job into this cluster
            if k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_",
                             "SQUEUE_")):
                del e[k]
        e["SLURM_CONF"] = self.conf
        return e

    def start(self, timeout=60):
        """Start munged, slurmctld and slurmd; return once the node is idle.

        Raises SlurmError (with the daemons' log tails) on failure, after
        stopping whatever it had started."""
        if self._procs:
            raise SlurmError("already started")
        self.ctld_port = None          # fresh ports on every start
        self._write_config()
        deadline = time.monotonic() + timeout
        atexit.register(self.stop)
        try:
            self._start_munge(deadline)
            self._spawn("slurmctld", ["slurmctld", "-D", "-c", "-i"])
            self._spawn("slurmd", ["slurmd", "-D", "-N", self.node])
            self._wait_idle(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        """Cancel all jobs, stop every daemon this object started, and kill
        any job or slurmstepd left over from this cluster.  Idempotent."""
        if not self._procs:
            return
        try:
            if self._alive("slurmctld") and self._alive("slurmd"):
                self._cancel_all_jobs()
        finally:
            for name in ("slurmd", "slurmctld"):
                self._terminate(name)
            self._kill_leftovers()
            self._terminate("munged")
            self._procs.clear()
            try:
                atexit.unregister(self.stop)
            except Exception:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def log_tails(self, lines=25):
        """The last lines of every daemon log, for error messages."""
        parts = []
        for name in ("munged", "slurmctld", "slurmd"):
            # slurm*.log is the daemon's log file; *.out its stdout/stderr
            # (munged -F logs there; slurm daemons print early fatal errors
            # there before they open the log file).
            for ext in (".log", ".out"):
                p = os.path.join(self.log_dir, name + ext)
                if os.path.exists(p) and os.path.getsize(p):
                    parts.append("--- %s ---\n%s" % (p, _tail(p, lines)))
                    break
        return "\n".join(parts)

    # -- internals --------------------------------------------------------
    def _spawn(self, name, argv):
        out = open(os.path.join(self.log_dir, name + ".out"), "ab")
        try:
            self._procs[name] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, env=self.env(), cwd=self.dir,
                start_new_session=True, preexec_fn=_parent_death_signal())
        finally:
            out.close()

    def _alive(self, name):
        p = self._procs.get(name)
        return p is not None and p.poll() is None

    def _fail(self, what):
        raise SlurmError("%s\n%s" % (what, self.log_tails()))

    def _start_munge(self, deadline):
        key = os.path.join(self._munge_dir, "key", "munge.key")
        if not os.path.exists(key):
            with open(key, "wb") as f:
                f.write(os.urandom(1024))
            os.chmod(key, 0o400)
        for stale in (self.munge_socket, self.munge_socket + ".lock"):
            if os.path.exists(stale):
                os.unlink(stale)
        self._spawn("munged", [
            "munged", "--foreground", "--force", "-S", self.munge_socket,
            "--key-file=" + key,
            "--pid-file=" + os.path.join(self.dir, "run", "munged.pid"),
            "--seed-file=" + os.path.join(self._munge_dir, "key", "seed"),
            "--num-threads=4"])
        while True:
            if not self._alive("munged"):
                self._fail("munged exited with %s" % self._procs["munged"].poll())
            if os.path.exists(self.munge_socket):
                enc = subprocess.run(["munge", "-n", "-S", self.munge_socket],
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
                if enc.returncode == 0:
                    dec = subprocess.run(["unmunge", "-S", self.munge_socket],
                                         input=enc.stdout,
                                         stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE)
                    if dec.returncode == 0:
                        return
            if time.monotonic() > deadline:
                self._fail("munged did not answer on %s" % self.munge_socket)
            time.sleep(0.1)

    def _run(self, argv, timeout=30):
        return subprocess.run(argv, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env=self.env(), timeout=timeout)

    def _wait_idle(self, deadline):
        last = ""
        while True:
            for name in ("slurmctld", "slurmd"):
                if not self._alive(name):
                    self._fail("%s exited with status %s during start"
                               % (name, self._procs[name].poll()))
            try:
                r = self._run(["sinfo", "-h", "-N", "-n", self.node,
                               "-o", "%T"], timeout=10)
                last = (r.stdout + r.stderr).strip()
                if r.returncode == 0 and r.stdout.strip() == "idle":
                    return
            except subprocess.TimeoutExpired:
                last = "sinfo timed out"
            if time.monotonic() > deadline:
                self._fail("node %s not idle in time (sinfo: %r)"
                           % (self.node, last))
            time.sleep(0.25)

    def _cancel_all_jobs(self, timeout=None):
        """scancel everything and wait (up to KillWait + 10 s) until no job
        is running or completing, so slurmd can clean its steps up."""
        timeout = self.KILL_WAIT + 10 if timeout is None else timeout
        try:
            self._run(["scancel", "--partition", self.partition],
                      timeout=10)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                r = self._run(["squeue", "-h", "-t",
                               "RUNNING,COMPLETING,SUSPENDED,CONFIGURING,"
                               "STOPPED,SIGNALING", "-o", "%i"], timeout=10)
                if r.returncode == 0 and not r.stdout.strip():
                    return
                time.sleep(0.25)
        except (subprocess.TimeoutExpired, OSError):
            pass

    def _terminate(self, name, grace=10):
        p = self._procs.get(name)
        if p is None:
            return
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            except ProcessLookupError:
                p.wait()
        try:   # helpers in the daemon's own session (e.g. slurmscriptd)
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass

    def pids(self):
        """Pids of every live process of this cluster: the daemons it started
        and any slurmstepd or job process whose environment carries this
        cluster's SLURM_CONF (slurmd and slurmstepd set it, sbatch passes it
        on) -- never this process or its ancestors.  Zombies are left out."""
        daemons = {p.pid for p in self._procs.values() if p.poll() is None}
        return sorted(daemons | set(self._job_pids()))

    def _job_pids(self):
        found = set()
        mine = ("SLURM_CONF=" + self.conf).encode()
        spare = set()
        pid = os.getpid()
        while pid > 1:
            spare.add(pid)
            try:
                with open("/proc/%d/stat" % pid) as f:
                    pid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                break
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in spare:
                continue
            try:
                with open("/proc/%s/stat" % entry, "rb") as f:
                    if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                        continue
                with open("/proc/%s/environ" % entry, "rb") as f:
                    env = f.read().split(b"\0")
                with open("/proc/%s/comm" % entry, "rb") as f:
                    comm = f.read().strip()
            except (OSError, IndexError):
                continue
            if mine in env and (comm == b"slurmstepd" or any(
                    v.startswith(b"SLURM_JOB_ID=") for v in env)):
                found.add(int(entry))
        return sorted(found)

    def _kill_leftovers(self):
        """SIGKILL slurmstepd and job processes of this cluster."""
        for _ in range(5):
            victims = self._job_pids()
            if not victims:
                return
            for v in victims:
                try:
                    os.kill(v, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.2)
