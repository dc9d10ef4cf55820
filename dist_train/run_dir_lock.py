"""One run per run_dir: an exclusive lock that rank 0 holds for the whole run.

Two runs writing one run_dir (a mistake, or a requeued job whose old copy still runs) interleave metrics.jsonl and
delete each other's checkpoint saves. `flock` does not help: it is advisory per host and unreliable on the network
file systems run_dirs live on. The lock is a file, `run_dir/run.lock`, created with O_CREAT|O_EXCL (atomic on local
file systems and on NFSv3+), holding who took it (host, pid, SLURM job, start time) as JSON. A daemon thread touches
its mtime every `heartbeat` seconds, so a lock whose heartbeat stopped is recognisably stale from any host.

A second run meets the lock and stops with one line naming the holder (exit 2). It takes the lock over, saying so,
only when the holder cannot be running any more:
- an earlier attempt of the same job: same SLURM cluster and job id with a lower SLURM_RESTART_COUNT (a requeue;
  rank 0 may now be on another node). The same job id at the same attempt is another run in that job: refused;
- a process that is gone on this host (same host and pid namespace; a reused pid is told apart by its start time,
  a reboot by the boot id);
- a heartbeat older than `run_dir_lock.stale_after` seconds (a holder on another host that died, or a file left
  half-written by a crash while taking the lock).
Takeovers are serialised by a second O_EXCL file, so two runs finding the same stale lock cannot both win.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dist_train.errors import RunError, UsageError, key_text

LOCK_NAME = "run.lock"
TAKEOVER_SUFFIX = ".takeover"
HALF_WRITTEN_S = 10.0  # a lock file that is not valid JSON this long after its creation was left by a crash
PATIENCE_S = HALF_WRITTEN_S + 5  # how long to retry a lock that keeps changing before giving up


@dataclass
class Holder:
    host: str
    pid: int
    started: str  # ISO 8601, local time with its offset
    token: str  # unique per acquisition: release and heartbeat touch the lock only while it is still this one
    slurm_job_id: str | None = None
    slurm_cluster: str | None = None
    slurm_restart_count: int = 0
    pid_start: str | None = None  # the process's start time in clock ticks since boot (/proc/<pid>/stat)
    pid_namespace: str | None = None  # pids are comparable only within one pid namespace (containers)
    boot_id: str | None = None

    @classmethod
    def this_process(cls) -> "Holder":
        e = os.environ
        return cls(
            host=socket.gethostname(), pid=os.getpid(), token=uuid.uuid4().hex,
            started=datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
            slurm_job_id=e.get("SLURM_JOB_ID"), slurm_cluster=e.get("SLURM_CLUSTER_NAME"),
            slurm_restart_count=_int(e.get("SLURM_RESTART_COUNT")),
            pid_start=_process_start(os.getpid()), pid_namespace=_pid_namespace(), boot_id=_boot_id(),
        )

    @classmethod
    def parse(cls, data: bytes) -> "Holder | None":
        """The record of a lock file, or None when it is not one (half-written, or not ours to trust)."""
        try:
            fields = json.loads(data.decode("utf-8"))
            holder = cls(**{k: v for k, v in fields.items() if k in cls.__dataclass_fields__})
        except (ValueError, TypeError, AttributeError):
            return None
        ints = (holder.pid, holder.slurm_restart_count)
        texts = (holder.slurm_job_id, holder.slurm_cluster, holder.pid_start, holder.pid_namespace, holder.boot_id)
        if not (isinstance(holder.host, str) and all(type(v) is int for v in ints)
                and all(v is None or isinstance(v, str) for v in texts)):
            return None
        return holder

    def describe(self) -> str:
        job = f", SLURM job {self.slurm_job_id}" if self.slurm_job_id else ""
        if self.slurm_job_id and self.slurm_restart_count:
            job += f" (attempt {self.slurm_restart_count})"
        return f"host {key_text(self.host, 60)}, pid {self.pid}{job}, started {key_text(str(self.started), 40)}"


class RunDirLock:
    """A held lock: heartbeats until `release()`."""

    def __init__(self, path: Path, holder: Holder, heartbeat_s: float, created_dir: bool = False):
        self.path, self.holder, self.heartbeat_s = path, holder, heartbeat_s
        self.created_dir = created_dir  # run_dir did not exist: a run that wrote nothing leaves nothing behind
        self.lost: str = ""  # set when another run took the lock over while this one still ran
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="run-dir-lock-heartbeat", daemon=True)
        self._thread.start()

    def _still_mine(self) -> bool:
        try:
            current = Holder.parse(self.path.read_bytes())
        except FileNotFoundError:
            current = None
        except OSError:
            return True  # a file-system hiccup says nothing about who holds it
        if current is not None and current.token == self.holder.token:
            return True
        if not self.lost:
            self.lost = current.describe() if current else "nobody (the lock file is gone)"
            print(f"run_dir lock: {self.path} is now held by {self.lost}; this run no longer holds its run_dir",
                  flush=True)
        return False

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                if not self._still_mine():
                    return
                os.utime(self.path)
            except OSError:
                pass  # a file-system hiccup: the next beat tries again; stale_after leaves room for several

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            if self._still_mine():
                self.path.unlink()
            if self.created_dir and not any(self.path.parent.iterdir()):
                self.path.parent.rmdir()
        except OSError:
            pass  # gone already, or the file system went away: nothing left to release


def acquire(run_dir: str | Path, stale_after: float, env) -> RunDirLock | None:
    """Rank 0 takes the lock of `run_dir`; every rank learns the outcome, so all of them stop alike when it is
    held elsewhere. Returns the lock on rank 0, None on the other ranks."""
    outcome: list[Any] = [("ok", "")]
    lock = None
    if env.is_main:
        try:
            lock = take(Path(run_dir), stale_after)
        except UsageError as e:
            outcome[0] = ("usage", str(e))
        except BaseException as e:
            outcome[0] = ("failed", f"rank 0 could not lock run_dir: {type(e).__name__}")
            _tell_others(outcome, env)
            raise
    _tell_others(outcome, env)
    status, message = outcome[0]
    if status == "usage":
        raise UsageError(message)
    if status == "failed":
        raise RunError(message)
    return lock


def _tell_others(outcome: list, env) -> None:
    if env.is_distributed:
        import torch.distributed as dist

        dist.broadcast_object_list(outcome, src=0)


def take(run_dir: Path, stale_after: float) -> RunDirLock:
    """Create run_dir/run.lock for this process, taking over a stale one; UsageError naming a live holder."""
    where = key_text(str(run_dir), 200)
    created_dir = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"run_dir: cannot create '{where}': {e.strerror}") from None
    path = run_dir / LOCK_NAME
    me = Holder.this_process()
    record = json.dumps(asdict(me), indent=1).encode()
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline:
        try:
            _create_exclusive(path, record)
            heartbeat_s = max(0.25, min(30.0, stale_after / 4))
            return RunDirLock(path, me, heartbeat_s=heartbeat_s, created_dir=created_dir)
        except FileExistsError:
            pass
        except OSError as e:
            raise UsageError(f"run_dir: cannot write the lock file {key_text(str(path), 200)}: {e.strerror}") from None
        try:
            seen, age = path.read_bytes(), time.time() - path.stat().st_mtime
        except FileNotFoundError:
            continue  # released between our create and our read: try again
        except OSError as e:
            raise UsageError(f"run_dir: cannot read the lock file {key_text(str(path), 200)}: {e.strerror}") from None
        holder = Holder.parse(seen)
        if holder is None and age < HALF_WRITTEN_S:
            time.sleep(0.05)  # created this instant, its record not written yet
            continue
        reason = stale_reason(holder, age, me, stale_after)
        if reason is None:
            raise UsageError(
                f"run_dir: '{where}' is in use by another run ({holder.describe()}, heartbeat {max(age, 0):.0f} s "
                "ago); "
                f"wait for it to end or give another run_dir (a lock is taken over once its process is gone from "
                f"this host, or its heartbeat is older than run_dir_lock.stale_after={stale_after:g} s)"
            )
        if _remove_if_unchanged(path, seen):
            who = holder.describe() if holder else "an unreadable lock file"
            print(f"run_dir lock: taking over {path} from {who}: {reason}", flush=True)
        else:
            time.sleep(0.05)
    raise UsageError(f"run_dir: the lock file {key_text(str(path), 200)} keeps changing (several runs starting on "
                     "this run_dir at once?); start one run per run_dir")


def stale_reason(holder: Holder | None, age: float, me: Holder, stale_after: float) -> str | None:
    """Why the holder cannot be running any more, or None when it may be."""
    if holder is None:
        return f"it is not a valid lock record and {age:.0f} s old (left by a crash while taking the lock)"
    same_job = holder.slurm_job_id and (holder.slurm_job_id, holder.slurm_cluster) == (me.slurm_job_id,
                                                                                        me.slurm_cluster)
    if same_job and holder.slurm_restart_count < me.slurm_restart_count:
        return f"it is an earlier attempt of this SLURM job (requeued: attempt {me.slurm_restart_count})"
    if holder.host == me.host and holder.boot_id and me.boot_id and holder.boot_id != me.boot_id:
        return "this host has rebooted since it was taken"
    if holder.host == me.host and holder.pid_namespace == me.pid_namespace and not _running(holder):
        return f"process {holder.pid} is no longer running on this host"
    if age > stale_after:
        return f"its heartbeat is {age:.0f} s old (run_dir_lock.stale_after={stale_after:g} s)"
    return None


def _create_exclusive(path: Path, record: bytes) -> None:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        os.write(fd, record)
        os.fsync(fd)  # on a network file system, others read the record from the server
    except OSError:
        os.close(fd)
        path.unlink(missing_ok=True)  # never leave a half-written lock behind (a full disk, say)
        raise
    os.close(fd)


def _remove_if_unchanged(path: Path, seen: bytes) -> bool:
    """Delete the stale lock `seen`, unless another run replaced it meanwhile. Serialised by an O_EXCL file, so of
    two runs judging the same stale lock only one removes it (and the other then finds the winner's lock)."""
    mutex = path.with_name(path.name + TAKEOVER_SUFFIX)
    try:
        fd = os.open(mutex, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        try:
            if time.time() - mutex.stat().st_mtime > HALF_WRITTEN_S:
                mutex.unlink()  # a takeover interrupted by a crash
        except OSError:
            pass
        return False
    try:
        if path.read_bytes() != seen:
            return False  # replaced by a run that got there first: look again
        path.unlink()
        return True
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)
        mutex.unlink(missing_ok=True)


def _running(holder: Holder) -> bool:
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    except (OverflowError, ValueError):
        return False  # not a pid at all
    start = _process_start(holder.pid)
    if holder.pid_start and start and start != holder.pid_start:
        return False  # the pid now belongs to another process
    return _process_state(holder.pid) != "Z"


def _proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()  # after "pid (comm) ": comm may hold spaces and parentheses


def _process_start(pid: int) -> str | None:
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None  # field 22 of proc(5), counted after comm


def _process_state(pid: int) -> str | None:
    fields = _proc_stat(pid)
    return fields[0] if fields else None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _int(text: str | None) -> int:
    try:
        return int(text) if text else 0
    except ValueError:
        return 0
