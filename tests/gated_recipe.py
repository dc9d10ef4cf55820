"""mlp_regression that waits in build_datasets until a gate file exists: a run that holds its run_dir lock for as
long as a test needs (the lock is taken before the recipe builds anything)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from recipes.mlp_regression import MLPRegression


@dataclass
class GateConfig:
    file: str = ""  # build_datasets touches <file>.waiting, then waits until <file> exists (at most 120 s)


class GatedMLPRegression(MLPRegression):
    sections = {**MLPRegression.sections, "gate": GateConfig}

    def build_datasets(self):
        gate = Path(self.config.section("gate").file)
        gate.with_name(gate.name + ".waiting").touch()
        deadline = time.monotonic() + 120
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return super().build_datasets()
