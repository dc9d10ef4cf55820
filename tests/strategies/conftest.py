"""The equivalence matrix, run once per session in a single torchrun launch (see sequential_runs.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from strategy_matrix import (BATCHNORM, BATCHNORM_COMMON, BATCHNORM_RECIPE, COMMON, EMA, EMA_COMMON,  # noqa: E402
                             EXTRA, MESH, MESH_CHECKPOINT, MESH_COMMON, MESH_RESUME, STRATEGIES, VARIANTS)
from support import RECIPES, make_text, run_torchrun_script  # noqa: E402


@pytest.fixture(scope="session")
def equivalence_runs(tmp_path_factory) -> Path:
    """root/<variant>/<strategy>/metrics.jsonl for every strategy x variant, plus root/<variant>/<extra>/,
    root/batchnorm/<name>/ (the BatchNorm model) and root/ema/<name>/."""
    root = tmp_path_factory.mktemp("equivalence")
    runs = [
        {"run_dir": str(root / variant / name), "overrides": [*COMMON, *extra, *strategy],
         "checkpoint_roundtrip": name == "zero3" and variant == "plain"}
        for variant, extra in VARIANTS.items() for name, strategy in STRATEGIES.items()
    ]
    runs += [{"run_dir": str(root / variant / name), "overrides": [*COMMON, *VARIANTS[variant], *overrides]}
             for name, (variant, overrides) in EXTRA.items()]
    runs += [{"run_dir": str(root / "batchnorm" / name),
              "overrides": [*COMMON, *BATCHNORM_COMMON, BATCHNORM_RECIPE, *overrides]}
             for name, overrides in BATCHNORM.items()]
    runs += [{"run_dir": str(root / "ema" / name), "overrides": [*COMMON, *EMA_COMMON, *overrides]}
             for name, overrides in EMA.items()]
    (root / "runs.json").write_text(json.dumps(runs))
    run_torchrun_script(2, Path(__file__).parent / "sequential_runs.py", RECIPES / "mlp_regression.yaml",
                        root / "runs.json", timeout=900)
    return root


@pytest.fixture(scope="session")
def mesh_runs(tmp_path_factory) -> Path:
    """root/<name>/ for the tiny gpt on 4 processes under every mesh of strategy_matrix.MESH and the resumes of
    MESH_RESUME, in one torchrun launch; root/text.txt is the text it trains on, root/stdout.txt what it printed."""
    root = tmp_path_factory.mktemp("mesh")
    text = make_text(root / "text.txt", n_chars=6000)
    common = [*MESH_COMMON, f"data.path={text}"]
    runs = [{"run_dir": str(root / name), "overrides": [*common, *overrides, "checkpoint.resume=never"]}
            for name, overrides in MESH.items()]
    runs += [{"run_dir": str(root / name), "overrides": [*common, *overrides,
                                                         f"checkpoint.resume={root / MESH_CHECKPOINT}"]}
             for name, overrides in MESH_RESUME.items()]
    (root / "runs.json").write_text(json.dumps(runs))
    result = run_torchrun_script(4, Path(__file__).parent / "sequential_runs.py", RECIPES / "gpt.yaml",
                                 root / "runs.json", timeout=900)
    (root / "stdout.txt").write_text(result.stdout)
    return root
