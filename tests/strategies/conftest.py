"""The equivalence matrix, run once per session in a single torchrun launch (see sequential_runs.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from strategy_matrix import COMMON, EXTRA, STRATEGIES, VARIANTS  # noqa: E402
from support import RECIPES, run_torchrun_script  # noqa: E402


@pytest.fixture(scope="session")
def equivalence_runs(tmp_path_factory) -> Path:
    """root/<variant>/<strategy>/metrics.jsonl for every strategy x variant, plus root/<variant>/<extra>/."""
    root = tmp_path_factory.mktemp("equivalence")
    runs = [
        {"run_dir": str(root / variant / name), "overrides": [*COMMON, *extra, *strategy],
         "checkpoint_roundtrip": name == "zero3" and variant == "plain"}
        for variant, extra in VARIANTS.items() for name, strategy in STRATEGIES.items()
    ]
    runs += [{"run_dir": str(root / variant / name), "overrides": [*COMMON, *VARIANTS[variant], *overrides]}
             for name, (variant, overrides) in EXTRA.items()]
    (root / "runs.json").write_text(json.dumps(runs))
    run_torchrun_script(2, Path(__file__).parent / "sequential_runs.py", RECIPES / "mlp_regression.yaml",
                        root / "runs.json", timeout=900)
    return root
