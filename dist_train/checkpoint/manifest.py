"""checkpoint.json: what makes a step_<N> folder a complete, verifiable checkpoint.

The manifest is written last, after every rank's files are on disk, and lists each file with its size and SHA-256;
a folder without one is not a checkpoint. It also carries what must be known *before* loading anything: the step,
the recipe and the shape of every model tensor (to refuse another model's checkpoint with the keys that differ),
the world size and global batch it was saved with (to keep the global batch on another world size), the strategy
that wrote it and the resolved config (so `dist-train export` can rebuild the model).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any

from torch import nn

MANIFEST = "checkpoint.json"
FORMAT_VERSION = 2  # 2: trainer state in trainer_state.pt (TrainState), strategy state in strategy_state.pt
MAX_BYTES = 64 << 20  # a manifest of thousands of files is < 1 MB; bigger is not one of ours (and not read)
STRATEGY_NAMES = ("single", "ddp", "fsdp", "deepspeed")


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
    path: Any = field(default=None, repr=False, compare=False)  # where it was read from (not written)

    def to_json(self) -> bytes:
        data = {k: v for k, v in dataclasses.asdict(self).items() if k != "path"}
        return json.dumps(data, indent=1).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> "Manifest":
        """A manifest whose every field has the type and range dist_train writes; InvalidCheckpoint naming the
        first field that does not (a manifest is as untrusted as the rest of the folder)."""
        if len(data) > MAX_BYTES:
            raise InvalidCheckpoint(f"{MANIFEST} has {len(data)} bytes, more than any manifest dist_train writes")
        try:
            raw = json.loads(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise InvalidCheckpoint(f"{MANIFEST} is unreadable ({type(e).__name__}: {_short(e)})") from None
        if not isinstance(raw, dict):
            raise InvalidCheckpoint(f"{MANIFEST} is not a JSON object (got {type(raw).__name__})")
        names = [f.name for f in dataclasses.fields(cls) if f.name != "path"]
        unknown = sorted(set(raw) - set(names))
        missing = [n for n in names if n not in raw and n not in ("files", "format_version")]
        if unknown or missing:
            what = f"unknown keys {_short(unknown)}" if unknown else f"missing keys {missing}"
            raise InvalidCheckpoint(f"{MANIFEST} has {what}")
        version = raw.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION or isinstance(version, bool):
            raise InvalidCheckpoint(f"{MANIFEST} has format {_short(version)}, this version reads {FORMAT_VERSION}")
        _count("step", raw["step"], 0)
        for key in ("world_size", "batch_size", "grad_accum", "global_batch"):
            _count(key, raw[key], 1)
        if raw["global_batch"] != raw["batch_size"] * raw["grad_accum"] * raw["world_size"]:
            raise InvalidCheckpoint(
                f"{MANIFEST}: global_batch {raw['global_batch']} is not batch_size x grad_accum x world_size "
                f"({raw['batch_size']} x {raw['grad_accum']} x {raw['world_size']})")
        if not isinstance(raw["recipe"], str) or not raw["recipe"]:
            _bad("recipe", raw["recipe"], "a recipe name or path/to/file.py:ClassName")
        if raw["strategy"] not in STRATEGY_NAMES:
            _bad("strategy", raw["strategy"], f"one of {', '.join(STRATEGY_NAMES)}")
        if not isinstance(raw["config"], dict):
            _bad("config", raw["config"], "a mapping of config keys")
        _check_model(raw["model"])
        _check_files(raw.get("files", {}))
        return cls(**raw)


def _short(value, limit: int = 80) -> str:
    text = repr(value) if not isinstance(value, BaseException) else str(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bad(key: str, value, valid: str):
    raise InvalidCheckpoint(f"{MANIFEST}: {key} is {_short(value)}, expected {valid}")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _count(key: str, value, low: int) -> None:
    if not _is_int(value) or value < low:
        _bad(key, value, f"an integer >= {low}")


def _check_model(model) -> None:
    if not isinstance(model, dict) or not model:
        _bad("model", model, "a mapping of tensor names to shapes")
    for name, shape in model.items():
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            _bad(f"model[{_short(name, 40)}]", shape, "a list of non-negative integers (a tensor shape)")


def _check_files(files) -> None:
    if not isinstance(files, dict) or not files:
        _bad("files", files, "a mapping of file names to their size and sha256")
    for rel, entry in files.items():
        parts = rel.split("/")
        if not rel or rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in parts) or rel == MANIFEST:
            _bad("files", rel, "paths inside the checkpoint folder")
        if (not isinstance(entry, dict) or set(entry) != {"size", "sha256"} or not _is_int(entry["size"])
                or entry["size"] < 0 or not isinstance(entry["sha256"], str) or not _HEX64.fullmatch(entry["sha256"])):
            _bad(f"files[{_short(rel, 40)}]", entry, "{\"size\": bytes, \"sha256\": 64 hex digits}")


_HEX64 = re.compile(r"[0-9a-f]{64}")


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
