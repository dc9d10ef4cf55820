"""One run per run_dir (dist_train/run_dir_lock.py): a second run is refused with one line naming the holder, a lock
whose holder is gone (dead process on this host, stale heartbeat, earlier attempt of a requeued SLURM job) is taken
over with a message, and of several processes racing for one stale lock exactly one wins. Real processes: `dist-train
train` runs where the run matters, small Python processes holding or racing for a lock where only the lock does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dist_train import run_dir_lock
from dist_train.errors import UsageError
from support import REPO, RECIPES, env, run_cli

SMALL = ["dataset.n_train=64", "dataset.n_eval=16", "dataset.in_features=4", "model.hidden=8", "train.batch_size=16",
         "train.max_steps=8", "train.log_every=1", "train.eval_every=1000", "checkpoint.every=4"]
GATED = "recipe=tests/gated_recipe.py:GatedMLPRegression"


def train(run_dir: Path, *extra, check=False, **env_extra):
    return run_cli("train", RECIPES / "mlp_regression.yaml", f"run_dir={run_dir}", *SMALL, *extra, check=check,
                   **env_extra)


def start_gated(run_dir: Path, gate: Path) -> subprocess.Popen:
    """A run that takes the lock, then waits in build_datasets until `gate` exists."""
    cmd = [sys.executable, "-m", "dist_train", "train", str(RECIPES / "mlp_regression.yaml"), f"run_dir={run_dir}",
           *SMALL, GATED, f"gate.file={gate}"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    waiting = gate.with_name(gate.name + ".waiting")
    deadline = time.monotonic() + 120
    while not waiting.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the gated run never reached build_datasets"
        time.sleep(0.05)
    return proc


def error_lines(result) -> list[str]:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr.strip().splitlines()


def test_second_run_is_refused_while_the_first_finishes_intact(tmp_path):
    run, gate = tmp_path / "run", tmp_path / "gate"
    holder = start_gated(run, gate)
    record = json.loads((run / "run.lock").read_text())
    assert record["pid"] == holder.pid and record["host"] and record["started"]

    second = train(run)
    assert second.returncode == 2
    [line] = error_lines(second)
    assert line.startswith(f"dist-train: error: run_dir: '{run}' is in use by another run (host {record['host']}, "
                           f"pid {holder.pid}, started {record['started']}, heartbeat ")
    assert sorted(p.name for p in run.iterdir()) == ["run.lock"]  # the refused run wrote nothing

    gate.touch()
    out, err = holder.communicate(timeout=300)
    assert holder.returncode == 0, err[-3000:]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 9))  # one run's records, each once
    assert not (run / "run.lock").exists()  # released at the end


DIES_HOLDING = """
import os, signal, sys
from pathlib import Path
from dist_train import run_dir_lock
run_dir_lock.take(Path(sys.argv[1]), stale_after=600)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_lock_of_a_process_gone_from_this_host_is_taken_over_at_once(tmp_path):
    run = tmp_path / "run"
    dead = subprocess.run([sys.executable, "-c", DIES_HOLDING, str(run)], cwd=REPO, env=env())
    assert dead.returncode == -signal.SIGKILL
    record = json.loads((run / "run.lock").read_text())
    resumed = train(run, check=True)
    assert f"run_dir lock: taking over {run / 'run.lock'} from host {record['host']}, pid {record['pid']}" \
        in resumed.stdout
    assert f"process {record['pid']} is no longer running on this host" in resumed.stdout
    assert "done: 8 steps" in resumed.stdout and not (run / "run.lock").exists()


def lock_record(run: Path, age_s: float = 0.0, **fields) -> Path:
    """A lock as another process would have left it."""
    record = {"host": "other-node", "pid": 4242, "started": "2026-01-01T00:00:00+00:00", "token": "x" * 32, **fields}
    run.mkdir(parents=True, exist_ok=True)
    path = run / "run.lock"
    path.write_text(json.dumps(record))
    os.utime(path, (time.time() - age_s, time.time() - age_s))
    return path


def test_a_requeued_slurm_job_takes_over_its_earlier_attempts_lock(tmp_path, monkeypatch):
    """SLURM requeues a job with the same id and SLURM_RESTART_COUNT + 1; rank 0 may land on another node, and the
    old attempt's lock still has a fresh heartbeat. The same job at the same attempt is another run: refused."""
    run = tmp_path / "run"
    lock_record(run, slurm_job_id="77", slurm_restart_count=0)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    with pytest.raises(UsageError, match="SLURM job 77"):
        run_dir_lock.take(run, stale_after=600)
    requeued = train(run, SLURM_JOB_ID="77", SLURM_RESTART_COUNT="1", check=True)
    assert "it is an earlier attempt of this SLURM job (requeued: attempt 1)" in requeued.stdout
    assert "done: 8 steps" in requeued.stdout


def test_another_hosts_lock_is_taken_over_only_once_its_heartbeat_is_stale(tmp_path, capsys):
    run = tmp_path / "run"
    lock_record(run, age_s=30)
    with pytest.raises(UsageError) as e:
        run_dir_lock.take(run, stale_after=60)
    assert "in use by another run (host other-node, pid 4242, started 2026-01-01T00:00:00+00:00, heartbeat 30 s ago)" \
        in str(e.value) and "run_dir_lock.stale_after=60 s" in str(e.value)
    lock = run_dir_lock.take(run, stale_after=20)
    assert "its heartbeat is 30 s old (run_dir_lock.stale_after=20 s)" in capsys.readouterr().out
    assert json.loads((run / "run.lock").read_text())["pid"] == os.getpid()
    lock.release()
    assert not (run / "run.lock").exists()


def test_heartbeat_keeps_the_lock_fresh_and_a_taken_over_lock_is_not_released(tmp_path, capsys):
    run = tmp_path / "run"
    lock = run_dir_lock.take(run, stale_after=1)  # heartbeat every 0.25 s
    path = run / "run.lock"
    os.utime(path, (time.time() - 100, time.time() - 100))
    deadline = time.monotonic() + 10
    while time.time() - path.stat().st_mtime > 50:
        assert time.monotonic() < deadline, "no heartbeat"
        time.sleep(0.05)
    lock_record(run, host="requeued-node")  # another run took it over meanwhile
    lock.release()
    assert json.loads(path.read_text())["host"] == "requeued-node"  # its lock stays
    assert "is now held by host requeued-node" in capsys.readouterr().out


def test_an_unreadable_lock_is_taken_over_once_old_enough(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.lock").write_text("")  # a crash between creating the file and writing its record
    os.utime(run / "run.lock", (time.time() - 60, time.time() - 60))
    run_dir_lock.take(run, stale_after=600).release()


RACER = """
import sys, time
from pathlib import Path
from dist_train import run_dir_lock
from dist_train.errors import UsageError
run, gate = Path(sys.argv[1]), Path(sys.argv[2])
while not gate.with_name("go").exists():
    time.sleep(0.001)
try:
    lock = run_dir_lock.take(run, stale_after=60)
except UsageError:
    sys.exit(2)
print("won", flush=True)
while not gate.exists():
    time.sleep(0.01)
lock.release()
"""


def test_of_several_runs_racing_for_one_stale_lock_exactly_one_wins(tmp_path):
    run, gate = tmp_path / "run", tmp_path / "gate"
    lock_record(run, age_s=3600)
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(run), str(gate)], cwd=REPO, env=env(),
                               stdout=subprocess.PIPE, text=True) for _ in range(4)]
    (tmp_path / "go").touch()
    deadline = time.monotonic() + 60
    while sum(r.poll() is not None for r in racers) < 3:
        assert time.monotonic() < deadline, [r.poll() for r in racers]
        time.sleep(0.05)
    gate.touch()
    codes = sorted(r.wait(timeout=60) for r in racers)
    assert codes == [0, 2, 2, 2]
    assert sum("won" in r.stdout.read() for r in racers) == 1
