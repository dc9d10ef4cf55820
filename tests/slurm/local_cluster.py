"""A real SLURM cluster on this machine for the tests: munged + slurmctld + two slurmd ("nodes" n1 and n2 on
127.0.0.1, different ports), all from Debian's slurm-wlm, with every path (state, spool, logs, pids, munge socket and
key) inside one temp directory, so nothing outside it is touched except /etc/hosts entries for n1/n2 when missing.
Measured facts and the config this follows: ../shared/reference/slurm-local-cluster.md.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

NODES = ("n1", "n2")
PACKAGES = ("slurm-wlm", "munge")


class SetupError(Exception):
    """The machine cannot run the daemons (not root, apt failed, a daemon did not start): tests skip with this."""


def ensure_installed() -> None:
    if all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged")):
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]):
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as e:
            raise SetupError(f"`{' '.join(cmd)}` failed: {e}") from None
        if done.returncode:
            raise SetupError(f"`{' '.join(cmd)}` failed ({done.returncode}): {done.stderr.strip()[-300:]}")


def ensure_hosts(names=NODES) -> list[str]:
    """The simulated node names must resolve (torchrun's rendezvous and our SLURM env use the first hostname)."""
    missing = []
    for name in names:
        try:
            socket.gethostbyname(name)
        except OSError:
            missing.append(name)
    if missing:
        with open("/etc/hosts", "a") as f:
            f.write(f"127.0.0.1 {' '.join(missing)}  # added by dist_train tests (simulated SLURM nodes)\n")
    return missing


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def slurm_conf(d: Path, ctld_port: int, node_ports: list[int]) -> str:
    host = socket.gethostname()
    nodes = "\n".join(f"NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={p} CPUs=2 RealMemory=2000"
                      for n, p in zip(NODES, node_ports, strict=True))
    return f"""ClusterName=disttrain
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire=10 + fast scheduler passes: a requeued job reruns in ~10 s instead of ~2 min 40 s.
AuthInfo=socket={d}/munge/munge.sock,cred_expire=10
SchedulerParameters=bf_interval=1,sched_interval=2
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
# Job ids (and so the rendezvous ports derived from them) differ between clusters started side by side on one machine.
FirstJobId={random.randint(1000, 900000)}
KillWait=10
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/d-%n
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd-%n.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd-%n.log
{nodes}
# Jobs of `urgent` preempt jobs of `debug`: SIGTERM to the steps, 30 s of grace, then SLURM requeues the job.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
PartitionName=debug Nodes={','.join(NODES)} Default=YES State=UP MaxTime=INFINITE PriorityTier=1 GraceTime=30
PartitionName=urgent Nodes={','.join(NODES)} State=UP MaxTime=INFINITE PriorityTier=2 PreemptMode=OFF
"""


class LocalSlurm:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.conf = self.root / "slurm.conf"
        self.pid_files: list[Path] = []

    @property
    def env(self) -> dict:
        return {"SLURM_CONF": str(self.conf)}

    def start(self, timeout_s: float = 60) -> None:
        d = self.root
        d.chmod(0o755)
        for sub in ("munge", "state", *(f"d-{n}" for n in NODES)):
            (d / sub).mkdir(mode=0o755, exist_ok=True)
        ctld_port, *node_ports = free_ports(1 + len(NODES))
        self.conf.write_text(slurm_conf(d, ctld_port, node_ports))
        m = d / "munge"
        self._run(["mungekey", "--create", f"--keyfile={m}/munge.key"])
        self._daemon(["munged", "--force", f"--socket={m}/munge.sock", f"--key-file={m}/munge.key",
                      f"--log-file={m}/munged.log", f"--pid-file={m}/munged.pid", f"--seed-file={m}/seed"],
                     m / "munged.pid")
        self._daemon(["slurmctld", "-f", str(self.conf), "-c"], d / "slurmctld.pid")
        for n in NODES:
            self._daemon(["slurmd", "-f", str(self.conf), "-N", n], d / f"slurmd-{n}.pid")
        deadline = time.monotonic() + timeout_s
        states = ""
        while time.monotonic() < deadline:
            states = self.cli("sinfo", "-h", "-N", "-p", "debug", "-o", "%N %t", check=False).stdout
            if states.split()[1::2] == ["idle"] * len(NODES):
                return
            time.sleep(0.3)
        raise SetupError(f"SLURM nodes not idle after {timeout_s:g} s: {states!r}; logs in {d}")

    def _run(self, cmd) -> None:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if done.returncode:
            raise SetupError(f"`{' '.join(cmd)}` failed: {done.stderr.strip()}")

    def _daemon(self, cmd, pid_file: Path) -> None:
        """Start a daemon (each forks into the background and writes its pid file) and remember it for stop()."""
        self._run(cmd)
        deadline = time.monotonic() + 20
        while not (pid_file.exists() and pid_file.read_text().strip()):
            if time.monotonic() > deadline:
                raise SetupError(f"{cmd[0]} wrote no pid file {pid_file}")
            time.sleep(0.05)
        self.pid_files.append(pid_file)

    def stop(self) -> None:
        for pid_file in reversed(self.pid_files):  # slurmd, then slurmctld, then munged
            try:
                pid = int(pid_file.read_text().strip())
                os.kill(pid, signal.SIGTERM)
            except (OSError, ValueError):
                continue
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.1)
        self.pid_files = []

    def cli(self, *args, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        done = subprocess.run(list(args), env=dict(os.environ, **self.env), capture_output=True, text=True,
                              timeout=timeout)
        if check and done.returncode:
            raise AssertionError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done

    def job_fields(self, job_id: str) -> dict:
        """`scontrol show job`'s KEY=VALUE fields (JobState, Restarts, ExitCode, ...)."""
        out = self.cli("scontrol", "show", "job", job_id, check=False).stdout
        return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)

    def job_state(self, job_id: str) -> str:
        return self.job_fields(job_id).get("JobState", "UNKNOWN")

    def wait_job(self, job_id: str, timeout_s: float = 300, until=("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT",
                                                                     "NODE_FAIL", "OUT_OF_MEMORY")) -> str:
        """The job's final state, once its processes are gone too (a cancelled job is CANCELLED at once, while its
        workers may still be saving)."""
        deadline = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < deadline:
            state = self.job_state(job_id)
            active = self.cli("squeue", "-h", "-j", job_id, "-o", "%t", check=False).stdout.strip()
            if state in until and active in ("", "CD", "F", "CA", "TO"):
                return state
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} still {state} after {timeout_s:g} s")


def _alive(pid: int) -> bool:
    """Running and not a zombie (a stopped daemon can linger as <defunct> until its parent reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
