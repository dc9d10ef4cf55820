"""Uninterrupted reference runs for the checkpoint tests, computed once per session and compared against."""

from __future__ import annotations

from pathlib import Path

import pytest

from checkpoint_support import train


class References:
    """Uninterrupted runs, one per setup, computed on first use."""

    def __init__(self, root: Path):
        self.root, self.runs = root, {}

    def get(self, name: str, *extra: str, nproc: int = 1) -> Path:
        if name not in self.runs:
            run_dir = self.root / name
            train(run_dir, *extra, nproc=nproc)
            self.runs[name] = run_dir
        return self.runs[name]


@pytest.fixture(scope="session")
def references(tmp_path_factory) -> References:
    return References(tmp_path_factory.mktemp("references"))


@pytest.fixture(scope="session")
def saved_run(tmp_path_factory) -> Path:
    """A finished 10-step run with checkpoints step_5 and step_10, for tests that copy and tamper with it."""
    run_dir = tmp_path_factory.mktemp("saved") / "run"
    train(run_dir, "train.max_steps=10")
    return run_dir
