"""Config: YAML + overrides -> typed dataclasses, and every bad input -> one UsageError line naming the key."""

from __future__ import annotations

import pytest

from dist_train.config import load
from dist_train.config.schema import Config, OptimizerConfig, TrainConfig
from dist_train.errors import UsageError
from support import RECIPES

DEFAULT = RECIPES / "fashion_mnist_mlp.yaml"


def write(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def error(path, *overrides) -> str:
    with pytest.raises(UsageError) as e:
        load(path, list(overrides))
    message = str(e.value)
    assert "\n" not in message
    return message


def test_shipped_config_loads_typed():
    cfg = load(DEFAULT)
    assert isinstance(cfg, Config) and isinstance(cfg.train, TrainConfig) and isinstance(cfg.optimizer, OptimizerConfig)
    assert cfg.recipe == "fashion_mnist_mlp" and cfg.optimizer.lr == 1.0e-3
    assert cfg.section("model").hidden == [128, 64]


def test_overrides_dotted_paths_and_yaml_values():
    cfg = load(DEFAULT, ["train.max_steps=50", "seed=1", "optimizer.lr=3e-4", "train.clip_grad_norm=1",
                         "model.hidden=[32]", "data.root=null", "optimizer.name=sgd"])
    assert cfg.train.max_steps == 50 and cfg.seed == 1
    assert cfg.optimizer.lr == pytest.approx(3e-4) and isinstance(cfg.optimizer.lr, float)
    assert cfg.train.clip_grad_norm == 1.0 and cfg.section("model").hidden == [32]
    assert cfg.data.root is None and cfg.optimizer.name == "sgd"


def test_defaults_fill_missing_sections(tmp_path):
    cfg = load(write(tmp_path, "recipe: mlp_regression\n"))
    assert cfg.train == TrainConfig() and cfg.section("model").hidden == 64


def test_unknown_key_suggests_closest(tmp_path):
    assert "did you mean 'max_steps'" in error(DEFAULT, "train.max_step=5")
    msg = error(write(tmp_path, "recipe: mlp_regression\noptimiser: {lr: 1}\n"))
    assert msg.startswith("optimiser: unknown key") and "did you mean 'optimizer'" in msg


@pytest.mark.parametrize("override, needle", [
    ("train.max_steps=abc", "train.max_steps: expected an integer, got 'abc'"),
    ("optimizer.lr=fast", "optimizer.lr: expected a number, got 'fast'"),
    ("train.precision=true", "train.precision: unknown value True"),
    ("optimizer.lr=0", "optimizer.lr: must be > 0, got 0"),
    ("optimizer.lr=-1e-3", "optimizer.lr: must be > 0"),
    ("train.batch_size=-4", "train.batch_size: must be > 0, got -4"),
    ("train.max_steps=0", "train.max_steps: must be > 0, got 0"),
    ("train.grad_accum=0", "train.grad_accum: must be > 0"),
    ("optimizer.name=adamax", "optimizer.name: unknown value 'adamax' (did you mean 'adam'?); valid: sgd, adam, adamw, rmsprop"),
    ("scheduler.name=cosin", "scheduler.name: unknown value 'cosin' (did you mean 'cosine'?)"),
    ("strategy=dpp", "strategy: unknown value 'dpp' (did you mean 'ddp'?)"),
    ("train.precision=fp8", "train.precision: unknown value 'fp8' (did you mean 'fp32'?); valid: fp32, bf16, fp16"),
    ("recipe=fashion_mnist_mpl", "recipe: unknown recipe 'fashion_mnist_mpl' (did you mean 'fashion_mnist_mlp'?)"),
    ("train=5", "train: expected a mapping"),
    ("novalue", "override 'novalue': expected key=value"),
])
def test_bad_values_name_key_value_and_valid(override, needle):
    assert needle in error(DEFAULT, override)


def test_missing_yaml_file(tmp_path):
    assert "config file" in error(tmp_path / "nope.yaml") and "not found" in error(tmp_path / "nope.yaml")


def test_malformed_yaml_reports_line(tmp_path):
    path = write(tmp_path, "recipe: mlp_regression\ntrain:\n  max_steps: 5\n  batch_size: [1, 2\nseed: 1\n")
    msg = error(path)
    assert str(path) in msg and "line 5" in msg and "malformed YAML" in msg


def test_recipe_file_that_does_not_import(tmp_path):
    (tmp_path / "broken.py").write_text("import not_a_real_module_xyz\n")
    msg = error(DEFAULT, f"recipe={tmp_path / 'broken.py'}:Broken")
    assert "failed to import" in msg and "not_a_real_module_xyz" in msg
    assert "not found" in error(DEFAULT, f"recipe={tmp_path / 'missing.py'}:X")


def test_user_recipe_file_with_own_section(tmp_path):
    (tmp_path / "mine.py").write_text(
        "from dataclasses import dataclass\n"
        "from dist_train.recipe import Recipe\n"
        "@dataclass\nclass Width:\n    size: int = 3\n"
        "class Mine(Recipe):\n    sections = {'width': Width}\n"
    )
    (tmp_path / "mine.yaml").write_text("recipe: mine.py:Mine\nwidth: {size: 7}\n")  # path relative to the YAML
    cfg = load(tmp_path / "mine.yaml")
    assert cfg.section("width").size == 7
    assert "width.sise: unknown key (did you mean 'size'?)" in error(tmp_path / "mine.yaml", "width.sise=1")
    assert "has no Recipe subclass named 'Other'" in error(tmp_path / "mine.yaml", f"recipe={tmp_path / 'mine.py'}:Other")
