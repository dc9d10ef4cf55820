"""Optimizers by name and the warmup + decay schedule."""

from __future__ import annotations

import math

import pytest
import torch

from dist_train.config.schema import OptimizerConfig, SchedulerConfig
from dist_train.optim import build_optimizer, build_scheduler, lr_multiplier


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                       ("adamw", torch.optim.AdamW), ("rmsprop", torch.optim.RMSprop)])
def test_optimizers(name, cls):
    opt = build_optimizer(torch.nn.Linear(2, 2).parameters(), OptimizerConfig(name=name, lr=0.1, momentum=0.9))
    assert isinstance(opt, cls) and opt.param_groups[0]["lr"] == 0.1
    if name in ("sgd", "rmsprop"):
        assert opt.param_groups[0]["momentum"] == 0.9


def test_warmup_then_cosine_and_linear():
    cos = SchedulerConfig(name="cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert lr_multiplier(0, cos, 110) == pytest.approx(0.1)
    assert lr_multiplier(9, cos, 110) == pytest.approx(1.0)
    assert lr_multiplier(60, cos, 110) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_multiplier(110, cos, 110) == pytest.approx(0.1)
    lin = SchedulerConfig(name="linear", warmup_steps=0)
    assert lr_multiplier(25, lin, 100) == pytest.approx(0.75)
    assert lr_multiplier(500, SchedulerConfig(name="constant", warmup_steps=4), 100) == 1.0


def test_scheduler_drives_optimizer_lr():
    opt = build_optimizer(torch.nn.Linear(2, 2).parameters(), OptimizerConfig(lr=1.0))
    sched = build_scheduler(opt, SchedulerConfig(name="linear", warmup_steps=2), max_steps=12)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 0.9])


def tiny_gpt(tie: bool = False):
    from dist_train.models.gpt import GPT, ModelConfig

    return GPT(256, ModelConfig(layers=2, dim=16, heads=2, seq_len=8, tie_embeddings=tie))


def names_by_group(model, cfg) -> dict[str, set[str]]:
    from dist_train.optim import param_groups

    name_of = {id(p): n for n, p in model.named_parameters()}
    return {g["name"]: {name_of[id(p)] for p in g["params"]} for g in param_groups(model, cfg)}


def test_no_decay_defaults_biases_norms_and_embeddings():
    from dist_train.optim import param_groups

    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 4))
    groups = {g["name"]: g for g in param_groups(model, OptimizerConfig(weight_decay=0.1))}
    name_of = {id(p): n for n, p in model.named_parameters()}
    assert {name_of[id(p)] for p in groups["decay"]["params"]} == {"2.weight"}
    assert {name_of[id(p)] for p in groups["no_decay"]["params"]} == {"0.weight", "1.weight", "1.bias", "2.bias"}
    assert groups["decay"]["weight_decay"] == 0.1 and groups["no_decay"]["weight_decay"] == 0.0
    everything = param_groups(model, OptimizerConfig(weight_decay=0.1, no_decay=[]))
    assert [g["name"] for g in everything] == ["decay"] and len(everything[0]["params"]) == 5


def test_recipe_norms_and_tied_embeddings_count_once():
    groups = names_by_group(tiny_gpt(tie=True), OptimizerConfig(weight_decay=0.1))
    assert "head.weight" not in set().union(*groups.values())  # the same Parameter as embed.weight
    assert groups["no_decay"] == {"embed.weight", "norm.weight", "layers.0.attn_norm.weight",
                                  "layers.0.ffn_norm.weight", "layers.1.attn_norm.weight", "layers.1.ffn_norm.weight"}
    assert "layers.1.ffn.w2.weight" in groups["decay"]


def test_param_groups_rules_first_match_wins_and_scale_lr():
    from dist_train.config.schema import ParamGroupConfig
    from dist_train.optim import param_groups

    cfg = OptimizerConfig(lr=0.1, weight_decay=0.1, param_groups=[
        ParamGroupConfig(match=r"\.attn\.", lr_scale=0.5),
        ParamGroupConfig(match=r"^layers\.1\.|embed", lr_scale=2.0, weight_decay=0.3)])
    model = tiny_gpt()
    groups = names_by_group(model, cfg)
    assert groups["param_groups[0]"] == {f"layers.{i}.attn.w{x}.weight" for i in (0, 1) for x in "qkvo"}
    assert "layers.1.ffn.w1.weight" in groups["param_groups[1]"] and "embed.weight" in groups["param_groups[1]"]
    assert "layers.0.ffn.w1.weight" in groups["decay"]
    by_name = {g["name"]: g for g in param_groups(model, cfg)}
    assert by_name["param_groups[0]"]["lr"] == pytest.approx(0.05)
    assert by_name["param_groups[1]"]["weight_decay"] == 0.3  # explicit: overrides no_decay for embed too
    opt = build_optimizer(param_groups(model, cfg), cfg)
    sched = build_scheduler(opt, SchedulerConfig(name="linear", warmup_steps=0), max_steps=10)
    opt.step()
    sched.step()
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["param_groups[1]"] == pytest.approx(2.0 * 0.1 * 0.9) and lrs["decay"] == pytest.approx(0.09)


@pytest.mark.parametrize("match, message", [
    ("nothing_here", r"optimizer.param_groups\[0\].match: 'nothing_here' matches no parameter of the model; "
                     r"names look like: embed.weight, layers.0.attn_norm.weight"),
    ("(", r"optimizer.param_groups\[0\].match: '\(' is not a regular expression"),
    ("", r"optimizer.param_groups\[0\].match: empty"),
])
def test_bad_rule_is_one_line(match, message):
    from dist_train.config.schema import ParamGroupConfig
    from dist_train.errors import UsageError
    from dist_train.optim import param_groups

    with pytest.raises(UsageError, match=message):
        param_groups(tiny_gpt(), OptimizerConfig(param_groups=[ParamGroupConfig(match=match)]))


def test_checkpoints_keep_the_parameter_groups(tmp_path):
    """The groups' names, lr_scale and weight_decay are in the optimizer state a checkpoint holds: a resumed run
    gets them back from it (as torch's Optimizer.load_state_dict does, the checkpoint's values win over a changed
    config)."""
    from dist_train.cluster import DistEnv
    from dist_train.config import load
    from dist_train.runner import Trainer
    from support import RECIPES

    overrides = ["dataset.n_train=256", "dataset.n_eval=32", "model.hidden=8", "train.batch_size=32",
                 "train.max_steps=2", "optimizer.weight_decay=0.05",
                 "optimizer.param_groups=[{match: '^2\\.', lr_scale: 0.5, weight_decay: 0.2}]",
                 f"run_dir={tmp_path}"]

    def trainer(*changed):
        return Trainer(load(RECIPES / "mlp_regression.yaml", [*overrides, *changed]), DistEnv.single(),
                       torch.device("cpu"))

    first = trainer()
    try:
        first.fit()
        expected = [{k: g[k] for k in ("name", "lr_scale", "weight_decay")} for g in first.strategy.optimizer.param_groups]
    finally:
        first.release()
    assert [g["name"] for g in expected] == ["decay", "no_decay", "param_groups[0]"]
    # Resumes from step 2 (checkpoint.resume=auto; nothing left to train), built with another weight decay.
    resumed = trainer("optimizer.param_groups=[{match: '^2\\.', lr_scale: 0.5, weight_decay: 0.3}]")
    try:
        got = [{k: g[k] for k in ("name", "lr_scale", "weight_decay")} for g in resumed.strategy.optimizer.param_groups]
    finally:
        resumed.release()
    assert got == expected
