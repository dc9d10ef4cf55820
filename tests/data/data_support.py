"""Helpers for the data tests: the token stream of a prepared folder, read without the code under test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def token_stream(folder: Path) -> np.ndarray:
    """All tokens of a prepared folder in index order, read with plain numpy from index.json's shard list."""
    index = json.loads((Path(folder) / "index.json").read_text())
    dtype = np.dtype(index["dtype"]).newbyteorder("<")
    return np.concatenate([np.fromfile(Path(folder) / s["file"], dtype=dtype) for s in index["shards"]])
