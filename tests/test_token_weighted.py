"""Token-weighted losses: a recipe returning (sum, count) gets the gradient of sum / count over the whole global
batch, so variable-length batches give the same per-step losses on 1 x accum 4, 2 x accum 2 (FSDP) and 4 x accum 1
(DDP)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dist_train.config import load
from dist_train.data import BatchLayout, epoch_order, micro_batch_indices, seed_everything
from padded_recipe import PaddedSequences, padded_data
from support import REPO, run_cli, run_torchrun, train_losses

CONFIG = REPO / "tests" / "padded_recipe.yaml"  # batch_size 2, 4 steps, SGD


def step_one_losses() -> tuple[float, float]:
    """(token-weighted, mean of micro-batch means) of step 1's 8 samples under the initial model, computed here."""
    config = load(CONFIG, [])
    seed_everything(config.seed)
    recipe = PaddedSequences(config)
    model = recipe.build_model()
    tokens, targets = padded_data(0)
    layout = BatchLayout(2, 4, 1, 0)
    sums, counts = [], []
    with torch.no_grad():
        for idx in micro_batch_indices(epoch_order(len(tokens), config.seed, 0), 0, layout):
            out = model(tokens[idx])
            sums.append(F.cross_entropy(out.flatten(0, 1), targets[idx].flatten(), ignore_index=-100, reduction="sum"))
            counts.append((targets[idx] != -100).sum())
    weighted = float(sum(sums) / sum(counts))
    return weighted, float(sum(s / c for s, c in zip(sums, counts, strict=True)) / len(sums))


def test_same_per_step_losses_on_1x4_2x2_4x1(tmp_path):
    base = ["train", CONFIG]
    run_cli(*base, "train.grad_accum=4", f"run_dir={tmp_path / '1x4'}")
    # 2 x 2 under FSDP (sharded gradients, DTensors), 4 x 1 under DDP: both strategies rescale the gradients
    run_torchrun(2, *base, "train.grad_accum=2", "strategy=fsdp", f"run_dir={tmp_path / '2x2'}", timeout=600)
    run_torchrun(4, *base, "train.grad_accum=1", f"run_dir={tmp_path / '4x1'}", timeout=600)
    ref = train_losses(tmp_path / "1x4")
    assert sorted(ref) == [1, 2, 3, 4] and ref[4] < ref[1]
    for layout in ("2x2", "4x1"):
        got = train_losses(tmp_path / layout)
        assert got.keys() == ref.keys()
        assert all(abs(got[s] - ref[s]) <= 1e-5 * abs(ref[s]) for s in ref), (layout, got, ref)
    # The logged loss of step 1 is the token-weighted mean of its 8 samples, which the uneven lengths make differ
    # from the mean of the four micro-batch means (what per-micro-batch mean losses train on), even untrained.
    weighted, mean_of_means = step_one_losses()
    assert abs(ref[1] - weighted) <= 1e-5 * weighted and abs(weighted - mean_of_means) > 0.005 * weighted

