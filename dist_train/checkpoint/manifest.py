"""checkpoint.json: what makes a step_<N> folder a complete, verifiable checkpoint.

The manifest is written last, after every rank's files are on disk, and lists each file with its size and SHA-256;
a folder without one is not a checkpoint. It also carries what must be known *before* loading anything: the step,
the recipe and the shape of every model tensor (to refuse another model's checkpoint with the keys that differ),
the world size and global batch it was saved with (to keep the global batch on another world size), the strategy
that wrote it and the resolved config (so `dist-train export` can rebuild the model).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

MANIFEST = "checkpoint.json"
FORMAT_VERSION = 2  # 2: trainer state in trainer_state.pt (TrainState), strategy state in strategy_state.pt


class InvalidCheckpoint(Exception):
    """A folder that is not a complete, intact checkpoint; the message says why."""


@dataclass
class Manifest:
    step: int
    recipe: str
    model: dict[str, list[int]]  # tensor name -> shape, from the unwrapped model's state_dict
    world_size: int
    batch_size: int
    grad_accum: int
    global_batch: int
    strategy: str
    config: dict[str, Any]
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # relative path -> {"size", "sha256"}
    format_version: int = FORMAT_VERSION

    def write(self, directory: Path) -> None:
        part = directory / (MANIFEST + ".part")
        with open(part, "w", encoding="utf-8") as f:
            json.dump(dataclasses.asdict(self), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, directory / MANIFEST)

    @classmethod
    def read(cls, directory: Path) -> "Manifest":
        path = Path(directory) / MANIFEST
        if not path.is_file():
            raise InvalidCheckpoint(f"no {MANIFEST} (an unfinished save, or not a checkpoint folder)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            manifest = cls(**data)
        except (ValueError, TypeError, UnicodeDecodeError) as e:
            raise InvalidCheckpoint(f"{MANIFEST} is unreadable ({type(e).__name__}: {e})") from None
        if manifest.format_version != FORMAT_VERSION:
            raise InvalidCheckpoint(f"{MANIFEST} has format {manifest.format_version}, this version reads {FORMAT_VERSION}")
        return manifest


def sha256_file(path: Path, sync: bool = False) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
        if sync:
            os.fsync(f.fileno())
    return h.hexdigest()


def describe_files(directory: Path) -> dict[str, dict[str, Any]]:
    """Size and checksum of every file under `directory` (fsynced on the way: the rename that commits the
    checkpoint must not reach the disk before the data it vouches for)."""
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST):
        rel = path.relative_to(directory).as_posix()
        files[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path, sync=True)}
    return files


def verify(directory: Path) -> Manifest:
    """The manifest of an intact checkpoint; InvalidCheckpoint naming the first file that is missing, truncated or
    altered otherwise."""
    manifest = Manifest.read(directory)
    for rel, expected in manifest.files.items():
        path = directory / rel
        if not path.is_file():
            raise InvalidCheckpoint(f"file {rel} is missing")
        size = path.stat().st_size
        if size != expected["size"]:
            raise InvalidCheckpoint(f"file {rel} has {size} bytes, the manifest says {expected['size']} (truncated?)")
        if sha256_file(path) != expected["sha256"]:
            raise InvalidCheckpoint(f"file {rel} does not match its SHA-256 checksum (altered or corrupted)")
    return manifest


def model_signature(model: nn.Module) -> dict[str, list[int]]:
    return {name: list(t.shape) for name, t in model.state_dict().items()}


def signature_diff(saved: dict[str, list[int]], current: dict[str, list[int]], limit: int = 4) -> str:
    """'' when equal, else which keys are missing/unexpected/reshaped (the first few of each)."""
    def show(items):
        items = list(items)
        return ", ".join(items[:limit]) + (f" (+{len(items) - limit} more)" if len(items) > limit else "")

    parts = []
    missing = [k for k in current if k not in saved]
    unexpected = [k for k in saved if k not in current]
    reshaped = [f"{k} {tuple(saved[k])} vs {tuple(current[k])}" for k in current if k in saved and saved[k] != current[k]]
    if missing:
        parts.append(f"keys not in the checkpoint: {show(missing)}")
    if unexpected:
        parts.append(f"keys only in the checkpoint: {show(unexpected)}")
    if reshaped:
        parts.append(f"shapes differ (checkpoint vs model): {show(reshaped)}")
    return "; ".join(parts)
