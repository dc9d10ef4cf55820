"""Helpers for tests: data in the real file formats, and running the real CLI / torchrun as subprocesses."""

from __future__ import annotations

import gzip
import json
import socket
import os
import pickle
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
# A few logged steps of the default recipe on make_fashion_mnist data: enough to compare launchers step by step.
TINY_RUN = ["train.max_steps=6", "train.log_every=1", "train.eval_every=1000", "train.batch_size=16"]
# Long enough (300 steps of ~10-30 ms) to deliver a preemption signal mid-run; needs checkpoint.resume (auto).
PREEMPTIBLE_RUN = ["train.max_steps=300", "train.log_every=1", "train.eval_every=1000", "train.batch_size=16",
                   "checkpoint.resume=auto"]


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """An idx file as in Fashion-MNIST: magic (0, 0, type 0x08=ubyte, ndim), big-endian dims, then the bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def make_fashion_mnist(root: Path, n_train: int = 512, n_test: int = 128, seed: int = 0) -> Path:
    """Learnable fake Fashion-MNIST: each class is a noisy version of its own random template."""
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 256, size=(10, 28, 28))
    raw = Path(root) / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n)
        images = np.clip(templates[labels] + rng.normal(0, 60, size=(n, 28, 28)), 0, 255)
        write_idx(raw / f"{split}-images-idx3-ubyte", images)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    return Path(root)


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_cifar10(root: Path, n_per_batch: int = 64, n_test: int = 64, seed: int = 0) -> Path:
    """Learnable fake CIFAR-10 in the real python-pickle format (5 data batches, test batch, batches.meta):
    rows of 3072 uint8 (1024 red, 1024 green, 1024 blue), labels as a list; noisy per-class templates."""
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 256, size=(10, 3072))
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in [(f"data_batch_{i}", n_per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        labels = rng.integers(0, 10, size=n)
        data = np.clip(templates[labels] + rng.normal(0, 60, size=(n, 3072)), 0, 255).astype(np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": data, "labels": labels.tolist()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR10_CLASSES, "num_cases_per_batch": n_per_batch}, f)
    return Path(root)


def make_text(path: Path, n_chars: int = 6000, seed: int = 0) -> Path:
    """A UTF-8 text with learnable structure (repeated words, one non-ASCII character) for the char_lm recipe."""
    rng = np.random.default_rng(seed)
    words = ["the", "hacker", "kludge", "foo", "bar", "grok", "cruft", "naïve", "hack", "bogus"]
    out, size = [], 0
    while size < n_chars:
        w = words[int(rng.integers(len(words)))]
        out.append(w)
        size += len(w) + 1
    Path(path).write_text(" ".join(out) + "\n", encoding="utf-8")
    return Path(path)


def env(**extra) -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(REPO), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    e.setdefault("OMP_NUM_THREADS", "1")  # two ranks on two cores: one thread each, no oversubscription
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"):
        e.pop(k, None)
    e.update({k: str(v) for k, v in extra.items()})
    return e


def run_cli(*args, timeout: float = 300, check: bool = True, **env_extra) -> subprocess.CompletedProcess:
    """`python -m dist_train ARGS` in the repo root."""
    cmd = [sys.executable, "-m", "dist_train", *map(str, args)]
    return _run(cmd, timeout, check, env_extra)


def run_torchrun(nproc: int, *args, timeout: float = 300, check: bool = True, torchrun_args=(), **env_extra):
    """`torchrun --standalone --nproc-per-node N -m dist_train ARGS` (standalone picks a free port)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           *torchrun_args, "-m", "dist_train", *map(str, args)]
    return _run(cmd, timeout, check, env_extra)


def run_torchrun_script(nproc: int, script, *args, timeout: float = 300, check: bool = True, **env_extra):
    """`torchrun --standalone --nproc-per-node N SCRIPT ARGS`: a test's own worker under the real launcher."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           str(script), *map(str, args)]
    return _run(cmd, timeout, check, env_extra)


def run_command(cmd, timeout: float = 300, check: bool = True, **env_extra) -> subprocess.CompletedProcess:
    """Any command (e.g. another launcher) in the repo root with the test environment."""
    return _run([str(c) for c in cmd], timeout, check, env_extra)


def _run(cmd, timeout, check, env_extra) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=REPO, env=env(**env_extra), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"command failed ({result.returncode}): {' '.join(cmd)}\n--- stdout\n{result.stdout[-4000:]}"
            f"\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


def worker_of_rank(agent_pids, rank: int, timeout_s: float = 120) -> int:
    """The pid of the torchrun worker with RANK=rank among the children of the given agent pid(s), read from /proc."""
    agent_pids = [agent_pids] if isinstance(agent_pids, int) else list(agent_pids)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for agent_pid in agent_pids:
            try:
                children = Path(f"/proc/{agent_pid}/task/{agent_pid}/children").read_text().split()
            except OSError:
                continue
            for child in children:
                try:
                    environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                if f"RANK={rank}".encode() in environ:
                    return int(child)
        time.sleep(0.1)
    raise AssertionError(f"no worker with RANK={rank} under torchrun {agent_pids}")


def free_port() -> int:
    """A TCP port nothing listens on right now (bound and released), for launchers that need an explicit one."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_metrics(run_dir: Path) -> list[dict]:
    """Every record of a run's metrics.jsonl (strict: a malformed line fails the test)."""
    from dist_train.tracking.jsonl import read_records

    return read_records(Path(run_dir) / "metrics.jsonl", torn_tail="raise")


def train_losses(run_dir: Path) -> dict[int, float]:
    """step -> logged training loss."""
    return {r["step"]: r["loss"] for r in read_metrics(run_dir) if "loss" in r}


def assert_close_losses(a: dict, b: dict, rel: float) -> None:
    assert a.keys() == b.keys() and a, (sorted(a), sorted(b))
    for step in a:
        assert abs(a[step] - b[step]) <= rel * max(abs(a[step]), abs(b[step])), (step, a[step], b[step])


def read_wandb_records(path: Path) -> list:
    """The protobuf records of a W&B `.wandb` file (a LevelDB-style log: 7-byte file header, then 32 KiB blocks of
    chunks, each `crc32 (4) | length (2) | type (1) | payload`, types FULL=1 FIRST=2 MIDDLE=3 LAST=4), checksums
    verified, each payload parsed with wandb's own `Record` message."""
    import struct
    import zlib

    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:7] == b":W&B" + struct.pack("<HB", 0xBEE1, 0), f"{path}: not a .wandb file"
    block, pos, payloads, pending = 32768, 7, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too little room left for a chunk header: the block is padded
            pos += block - pos % block
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos: pos + 7])
        if kind == 0:
            break  # zero padding at the end of the written part
        payload = data[pos + 7: pos + 7 + length]
        assert zlib.crc32(payload, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == crc, f"{path}: bad checksum at {pos}"
        pos += 7 + length
        if kind == 1:
            payloads.append(payload)
        elif kind == 2:
            pending = payload
        elif kind == 3:
            pending += payload
        else:
            payloads.append(pending + payload)
    records = []
    for payload in payloads:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


def wandb_history(records) -> list[dict]:
    """{'_step': N, key: value, ...} per history record of `read_wandb_records`."""
    rows = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
            rows.append(row)
    return rows


def wandb_config(records) -> dict:
    """The run config of `read_wandb_records`: the run record's config, then later config updates."""
    config = {}
    for r in records:
        kind = r.WhichOneof("record_type")
        items = r.run.config.update if kind == "run" else r.config.update if kind == "config" else []
        for item in items:
            config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return config
