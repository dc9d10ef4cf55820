"""HSDP and tensor parallel + FSDP2 (the fsdp strategy on a 2-D/3-D mesh), with activation checkpointing, on 4
CPU processes (gloo): per-step losses equal ddp's within 1e-4 (fp32), and so do the evaluations, which run on the
EMA of the weights (each rank's own shards); a checkpoint saved on a 2x2 (tensor x FSDP) mesh resumes, EMA
included, on 4x1, 1x4 and 1 process with the losses and evaluations of the uninterrupted run. One torchrun launch trains every
mesh (the session fixture `mesh_runs`); the transforms' order and the every-k rule are checked in-process."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dist_train.strategies.parallelize import checkpointed_units
from strategy_matrix import MESH, MESH_CHECKPOINT, MESH_COMMON, MESH_RESUME
from support import RECIPES, assert_close_losses, read_metrics, run_cli, train_losses

REL = 1e-4


def eval_loss(run_dir) -> float:
    return [r["eval/loss"] for r in read_metrics(run_dir) if "eval/loss" in r][-1]


@pytest.mark.parametrize("name", [n for n in MESH if n != "ddp"])
def test_every_mesh_trains_as_ddp(mesh_runs, name):
    reference = train_losses(mesh_runs / "ddp")
    assert len(reference) == 4 and reference[4] < reference[1] - 0.5, reference  # the comparison means something
    assert_close_losses(train_losses(mesh_runs / name), reference, rel=REL)
    assert eval_loss(mesh_runs / name) == pytest.approx(eval_loss(mesh_runs / "ddp"), rel=REL)


def test_start_up_line_names_the_mesh(mesh_runs):
    stdout = (mesh_runs / "stdout.txt").read_text()
    for line in ("strategy fsdp (HSDP 2 replicas x 2 shards, activation checkpointing) | world size 4 | device cpu "
                 "| global batch 2 x 1 x 4 = 8",
                 "strategy fsdp (tensor parallel 2 x sharded over 2 ranks, activation checkpointing) | world size 4 "
                 "| device cpu | global batch 4 x 1 x 2 = 8",
                 "strategy fsdp (tensor parallel 4) | world size 4 | device cpu | global batch 8 x 1 x 1 = 8"):
        assert line in stdout


@pytest.mark.parametrize("name", [n for n in MESH if n != "ddp"])
def test_the_full_ema_weights_equal_ddps(mesh_runs, name):
    reference = torch.load(mesh_runs / "ddp" / "ema_model.pt", weights_only=True)
    got = torch.load(mesh_runs / name / "ema_model.pt", weights_only=True)
    assert got.keys() == reference.keys()
    for key in reference:
        torch.testing.assert_close(got[key], reference[key], rtol=1e-4, atol=1e-6, msg=key)


@pytest.mark.parametrize("name", list(MESH_RESUME))
def test_checkpoint_of_a_2x2_mesh_resumes_on_another_mesh(mesh_runs, name):
    losses = train_losses(mesh_runs / name)
    assert sorted(losses) == [3, 4]
    reference = {s: v for s, v in train_losses(mesh_runs / "ddp").items() if s > 2}
    assert_close_losses(losses, reference, rel=REL)
    assert eval_loss(mesh_runs / name) == pytest.approx(eval_loss(mesh_runs / "ddp"), rel=REL)  # the EMA resumed


def test_checkpoint_of_a_2x2_mesh_resumes_on_one_process(mesh_runs, tmp_path):
    result = run_cli("train", RECIPES / "gpt.yaml", *MESH_COMMON, f"data.path={mesh_runs / 'text.txt'}",
                     "train.batch_size=8", f"checkpoint.resume={mesh_runs / MESH_CHECKPOINT}", f"run_dir={tmp_path}")
    assert "resumed from" in result.stdout
    reference = {s: v for s, v in train_losses(mesh_runs / "ddp").items() if s > 2}
    assert_close_losses(train_losses(tmp_path), reference, rel=REL)
    assert eval_loss(tmp_path) == pytest.approx(eval_loss(mesh_runs / "ddp"), rel=REL)


def test_every_kth_unit_is_checkpointed():
    units = [nn.Linear(2, 2) for _ in range(6)]
    assert checkpointed_units(units, 0) == []
    assert checkpointed_units(units, 1) == units
    assert checkpointed_units(units, 2) == [units[1], units[3], units[5]]
    assert checkpointed_units(units, 4) == [units[3]]


def test_checkpointing_recomputes_in_backward_with_the_same_gradients():
    from dist_train.strategies.parallelize import parallelize

    calls = []

    class CountedTanh(nn.Tanh):
        def forward(self, x):
            calls.append(1)
            return super().forward(x)

    def grads(every: int) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = nn.Sequential(*(nn.Sequential(nn.Linear(4, 4), CountedTanh()) for _ in range(4)))
        parallelize(model, list(model), ac_every=every)
        model(torch.ones(3, 4)).sum().backward()
        return [p.grad for p in model.parameters()]

    plain = grads(0)
    assert len(calls) == 4
    calls.clear()
    checkpointed = grads(2)
    assert len(calls) == 6  # units 2 and 4 ran their forward again in backward
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
