"""Metrics: hand-computed values, reference implementations written here (no scikit-learn), and exactness across
two real ranks (torchrun, gloo) with unequal shares of the data."""

from __future__ import annotations

import json
import math

import pytest
import torch

from dist_train import metrics as M
from support import run_torchrun_script


def logits_for(pred: list[int], num_classes: int) -> torch.Tensor:
    out = torch.zeros(len(pred), num_classes)
    out[torch.arange(len(pred)), torch.tensor(pred)] = 1.0
    return out


def value(metric: M.Metric) -> float:
    return M.reduce_metrics({"m": metric}, torch.device("cpu"))["m"]


# --- hand-computed -------------------------------------------------------------------------------------------------
# true:  0 0 0 1 1 2 ; predicted: 0 0 1 1 2 2
# class 0: tp 2, predicted 2, actual 3 -> P 1,   R 2/3, F1 0.8
# class 1: tp 1, predicted 2, actual 2 -> P 1/2, R 1/2, F1 1/2
# class 2: tp 1, predicted 2, actual 1 -> P 1/2, R 1,   F1 2/3
TRUE, PRED = [0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("cls, expected", [
    (M.Precision, (1 + 0.5 + 0.5) / 3),
    (M.Recall, (2 / 3 + 0.5 + 1) / 3),
    (M.F1, (0.8 + 0.5 + 2 / 3) / 3),
])
def test_macro_scores_by_hand(cls, expected):
    m = cls(3)
    m.update(logits_for(PRED[:2], 3), torch.tensor(TRUE[:2]))  # two updates: the counts must add up
    m.update(logits_for(PRED[2:], 3), torch.tensor(TRUE[2:]))
    assert value(m) == pytest.approx(expected, abs=1e-12)


def test_accuracy_and_mse_by_hand():
    acc = M.Accuracy()
    acc.update(logits_for(PRED, 3), torch.tensor(TRUE))
    assert value(acc) == pytest.approx(4 / 6)
    mse = M.MeanSquaredError()
    mse.update(torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [4.0]]))
    assert value(mse) == pytest.approx((1 + 4) / 2)


def test_class_never_predicted_or_absent_counts_as_zero():
    p, r = M.Precision(3), M.Recall(3)
    for m in (p, r):
        m.update(logits_for([0, 0, 1], 3), torch.tensor([0, 1, 1]))  # class 2: never predicted, never present
    assert value(p) == pytest.approx((0.5 + 1 + 0) / 3)
    assert value(r) == pytest.approx((1 + 0.5 + 0) / 3)


def test_binary_auc_by_hand_with_ties():
    # positives scored 0.9, 0.5 ; negatives 0.5, 0.1: pairs (0.9>0.5) (0.9>0.1) (0.5=0.5 -> half) (0.5>0.1) = 3.5/4
    m = M.RocAuc(2)
    m.update(torch.tensor([0.9, 0.5, 0.5, 0.1]), torch.tensor([1, 1, 0, 0]))
    assert value(m) == pytest.approx(3.5 / 4)


def test_binary_auc_from_two_logits_uses_the_logit_margin():
    m = M.RocAuc(2)
    outputs = torch.tensor([[0.0, 3.0], [0.0, -1.0], [1.0, 0.0], [0.0, 1.0]])  # margins 3, -1, -1, 1
    m.update(outputs, torch.tensor([1, 1, 0, 0]))
    assert value(m) == pytest.approx(reference_auc([3, -1, -1, 1], [1, 1, 0, 0]))


# --- references written here ---------------------------------------------------------------------------------------
def reference_auc(scores, labels) -> float:
    """Count over all (positive, negative) pairs, ties worth one half: the definition, O(n^2)."""
    pos = [s for s, y in zip(scores, labels, strict=False) if y]
    neg = [s for s, y in zip(scores, labels, strict=False) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def reference_ovr_auc(probs: torch.Tensor, labels: list[int]) -> float:
    aucs = [reference_auc(probs[:, k].tolist(), [int(y == k) for y in labels]) for k in range(probs.shape[1])]
    return sum(aucs) / len(aucs)


def reference_macro(pred: list[int], true: list[int], k: int) -> dict[str, float]:
    ps, rs, fs = [], [], []
    for c in range(k):
        tp = sum(p == c and t == c for p, t in zip(pred, true, strict=False))
        npred, nact = pred.count(c), true.count(c)
        p = tp / npred if npred else 0.0
        r = tp / nact if nact else 0.0
        ps.append(p)
        rs.append(r)
        fs.append(2 * p * r / (p + r) if p + r else 0.0)
    return {"precision": sum(ps) / k, "recall": sum(rs) / k, "f1": sum(fs) / k}


def test_against_references_on_random_data():
    g = torch.Generator().manual_seed(3)
    n, k = 200, 4
    outputs = torch.randn(n, k, generator=g).round(decimals=1)  # coarse values: ties in scores and in argmax
    labels = torch.randint(0, k, (n,), generator=g)
    ms = {"precision": M.Precision(k), "recall": M.Recall(k), "f1": M.F1(k), "roc_auc": M.RocAuc(k)}
    for m in ms.values():
        m.update(outputs, labels)
    got = M.reduce_metrics(ms, torch.device("cpu"))
    expected = reference_macro(outputs.argmax(-1).tolist(), labels.tolist(), k)
    expected["roc_auc"] = reference_ovr_auc(outputs.double().softmax(-1), labels.tolist())
    for name in ms:
        assert got[name] == pytest.approx(expected[name], abs=1e-12), name


def test_auc_undefined_without_both_classes_is_nan():
    m = M.RocAuc(2)
    m.update(torch.tensor([0.3, 0.7]), torch.tensor([1, 1]))
    assert math.isnan(value(m))


# --- across ranks --------------------------------------------------------------------------------------------------
WORKER = '''
import json, sys, torch
from dist_train import cluster, distributed
from dist_train import metrics as M

env = cluster.detect()
distributed.init(env, torch.device("cpu"))
g = torch.Generator().manual_seed(7)
n, k = 101, 3
outputs = torch.randn(n, k, generator=g).round(decimals=1)
labels = torch.randint(0, k, (n,), generator=g)
# Unequal shares (30 and 71 samples), and rank 1 sees no class-2 samples at all: per-rank ratios would differ.
order = torch.argsort((labels == 2).long(), stable=True).flip(0)  # class-2 samples first
if env.world_size == 2:
    mine = order[:30] if env.rank == 0 else order[30:]
else:
    mine = order
ms = {"accuracy": M.Accuracy(), "precision": M.Precision(k), "recall": M.Recall(k), "f1": M.F1(k),
      "roc_auc": M.RocAuc(k), "auc_binary": M.RocAuc(2)}
for chunk in mine.split(16):
    for name, m in ms.items():
        if name == "auc_binary":
            m.update(outputs[chunk, 0], (labels[chunk] == 0).long())
        else:
            m.update(outputs[chunk], labels[chunk])
values = M.reduce_metrics(ms, torch.device("cpu"))
with open(f"{sys.argv[1]}.rank{env.rank}", "w") as f:
    json.dump(values, f)
distributed.shutdown()
'''


def test_two_ranks_equal_one_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    run_torchrun_script(2, script, tmp_path / "two")
    run_torchrun_script(1, script, tmp_path / "one")
    one = json.loads((tmp_path / "one.rank0").read_text())
    for rank in (0, 1):
        two = json.loads((tmp_path / f"two.rank{rank}").read_text())
        assert two.keys() == one.keys()
        for name in one:
            assert two[name] == pytest.approx(one[name], abs=1e-12), (rank, name)
    assert 0.0 < one["roc_auc"] < 1.0 and 0.0 < one["f1"] < 1.0
