"""Export (and evaluate) never import code that a checkpoint names by itself: a recipe file shipped inside the
checkpoint folder is refused unless the user names it with --recipe, and an installed recipe given with --recipe
is used instead (and said so)."""

from __future__ import annotations

import json

import torch

from checkpoint_support import copy_run, rehash
from support import run_cli


def _ship_recipe(step_dir, marker) -> str:
    """What an attacker ships: evil.py in the checkpoint folder, named by the manifest's config, re-hashed."""
    (step_dir / "evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
        "from recipes.mlp_regression import MLPRegression\nclass Evil(MLPRegression):\n    pass\n"
    )
    reference = f"{step_dir / 'evil.py'}:Evil"
    manifest = json.loads((step_dir / "checkpoint.json").read_text())
    manifest["config"]["recipe"] = manifest["recipe"] = reference
    (step_dir / "checkpoint.json").write_text(json.dumps(manifest))
    rehash(step_dir, add=("evil.py",))
    return reference


def test_export_refuses_a_recipe_the_checkpoint_names(saved_run, tmp_path):
    step10 = copy_run(saved_run, tmp_path / "run") / "checkpoints" / "step_10"
    marker = tmp_path / "recipe-imported"
    reference = _ship_recipe(step10, marker)
    result = run_cli("export", step10, "--format", "state_dict", "--out", tmp_path / "m.pt", check=False)
    assert not marker.exists()
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"dist-train: error: export: the checkpoint names its recipe as '{reference}', code outside the bundled "
        "recipes; dist-train never imports code that a checkpoint names: give it with --recipe PATH.py:Class (or "
        "module:Class) if you trust it"
    ]
    ok = run_cli("export", step10, "--format", "state_dict", "--out", tmp_path / "m.pt", "--recipe", "mlp_regression")
    assert not marker.exists()
    assert f"export: using --recipe mlp_regression (the checkpoint names '{reference}')" in ok.stdout
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    assert set(state) == {"0.weight", "0.bias", "2.weight", "2.bias"}
