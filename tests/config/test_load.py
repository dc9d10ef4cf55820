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


# ---------------------------------------------------------------- hardening (issue 10): each seen as a traceback or
# a silent acceptance before; now one line naming the key, the shortened value and what is valid.


@pytest.mark.parametrize("override, needle", [
    (f"seed={2**70}", "seed: 1180591620717411303424 is out of range"),
    (f"seed={2**32}", "seed: must be <= 4294967295, got 4294967296"),
    (f"dataset.seed={2**64}", "dataset.seed: 18446744073709551616 is out of range (an integer must be within"),
    ("optimizer.betas=[0.9]", "optimizer.betas: expected a list of 2 values, got [0.9]"),
    ("optimizer.betas=[]", "optimizer.betas: expected a list of 2 values, got []"),
    ("optimizer.betas=[2.0, 0.999]", "optimizer.betas[0]: must be < 1, got 2.0"),
    ("optimizer.betas=[.nan, 0.999]", "optimizer.betas[0]: must be a finite number, got nan"),
    ("optimizer.lr=.inf", "optimizer.lr: must be a finite number, got inf"),
    ("train.clip_grad_norm=-.inf", "train.clip_grad_norm: must be a finite number, got -inf"),
    ("deepspeed.zero_stage=true", "deepspeed.zero_stage: unknown value True"),
    ("deepspeed.zero_stage=2.0", "deepspeed.zero_stage: unknown value 2.0 (did you mean '2'?); valid: 0, 1, 2, 3"),
    ("train.compile=1", "train.compile: expected true or false, got 1"),
    ("train.max_steps=true", "train.max_steps: expected an integer, got True"),
    ("train.max_steps=2.5", "train.max_steps: expected an integer, got 2.5"),
    ("run_dir=''", "run_dir: must not be empty, got ''"),
    ("checkpoint.resume=''", "checkpoint.resume: must not be empty"),
    ("data.num_workers=1000000", "data.num_workers: must be <= 1024"),
    ("tra\nin.max_steps=5", "override 'tra\\nin.max_steps=5': the key 'tra\\nin.max_steps' is not a config key"),
    ("train={max_steps: 5, max_steps: 6}", "line 1: duplicate key 'max_steps'"),
    ("x=" + "[" * 600 + "]" * 600, "nested more than 32 levels deep"),
])
def test_hardened_values(override, needle):
    assert needle in error(RECIPES / "mlp_regression.yaml", override)


def test_numbers_written_as_text_are_numbers():
    cfg = load(RECIPES / "mlp_regression.yaml", ["train.max_steps=1e5", "model.hidden=1.0e3", "optimizer.lr=1e-3"])
    assert cfg.train.max_steps == 100_000 and cfg.section("model").hidden == 1000 and cfg.optimizer.lr == 1e-3
    assert type(cfg.train.max_steps) is int


def test_nul_byte_in_a_path_and_newline_in_a_key_of_the_file(tmp_path):
    nul = write(tmp_path, 'recipe: mlp_regression\nrun_dir: "a\\0b"\n')
    assert "run_dir: contains a NUL byte ('a\\x00b')" in error(nul)
    msg = error(write(tmp_path, 'recipe: mlp_regression\ntrain: {"max\\nsteps": 5}\n'))
    assert msg.startswith("train.'max\\nsteps': unknown key")


def test_alias_bomb_is_refused_before_it_is_built(tmp_path):
    """480 bytes standing for 10^8 items: once a 522 MB error line, 22 s and 1.8 GB; now refused while parsing."""
    lines = ["recipe: mlp_regression", 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefg", "bcdefgh"):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    path = write(tmp_path, "\n".join(lines) + "\ndeepspeed: {config: {x: *h}}\n")
    assert path.stat().st_size < 600
    msg = error(path)
    assert msg.startswith(f"{path} line ") and "more than 100,000 items once its aliases are expanded" in msg
    assert len(msg) < 300


def test_recursive_alias_and_deep_file(tmp_path):
    assert "recursive alias" in error(write(tmp_path, "recipe: mlp_regression\ndeepspeed: {config: &a {x: [*a]}}\n"))
    deep = "[" * 3000 + "]" * 3000
    assert "nested more than 32 levels deep" in error(write(tmp_path, f"recipe: mlp_regression\nseed: {deep}\n"))


def test_error_repeats_at_most_200_characters_of_a_value(tmp_path):
    msg = error(RECIPES / "mlp_regression.yaml", "run_dir=" + "[" + ", ".join(["1"] * 5000) + "]")
    assert msg.startswith("run_dir: expected a string, got [1, 1, 1") and len(msg) < 300
    msg = error(RECIPES / "mlp_regression.yaml", "train.precision=" + "x" * 100_000)
    assert msg.startswith("train.precision: unknown value 'xxx") and len(msg) < 400
