"""Eval metrics that stay exact across ranks.

A metric keeps one of two kinds of state, and `reduce_metrics` combines each across ranks before anything is
divided: averaging per-rank ratios would be wrong whenever ranks see different numbers of samples or classes.
- `stats`: a float64 tensor of *sufficient statistics* (sums, counts, a confusion matrix), all-reduced by summing.
  Accuracy, MSE, precision, recall and F1 are exact this way.
- `rows()`: per-sample rows that are concatenated across ranks (padded all-gather), for metrics that need every
  sample at once. ROC-AUC ranks all scores together, so it gathers (score, label) rows.
`compute(stats, rows)` then turns the combined state into the value; every rank computes the same number from the
same combined state, which is what lets all ranks take the same decision from it (early stopping).
"""

from __future__ import annotations

import torch


class Metric:
    """Subclass: set `self.stats` in __init__ (float64, may be empty), add to it in update, and turn the summed
    stats (and, if `rows` is overridden, the rows of every rank) into a value in compute."""

    stats: torch.Tensor

    def update(self, outputs: torch.Tensor, target: torch.Tensor) -> None:
        raise NotImplementedError

    def rows(self) -> torch.Tensor | None:
        """Per-sample rows [n, width] (float64) to concatenate across ranks; None when the stats suffice."""
        return None

    def compute(self, stats: torch.Tensor, rows: torch.Tensor | None = None) -> float:
        raise NotImplementedError


def reduce_metrics(metrics: dict[str, Metric], device: torch.device) -> dict[str, float]:
    """Combine every metric's state across ranks (one all-reduce, one gather per row metric), then compute."""
    from dist_train import distributed

    stats = torch.cat([m.stats for m in metrics.values()]).to(device)
    stats = distributed.all_reduce_(stats).cpu()
    values, offset = {}, 0
    for name, metric in metrics.items():
        size = metric.stats.numel()
        rows = metric.rows()
        if rows is not None:
            rows = distributed.all_gather_rows(rows.to(device)).cpu()
        values[name] = metric.compute(stats[offset: offset + size], rows)
        offset += size
    return values


class Mean(Metric):
    """Mean of per-sample values (outputs is a 1-D tensor of them; target unused)."""

    def __init__(self):
        self.stats = torch.zeros(2, dtype=torch.float64)

    def update(self, outputs, target=None):
        v = outputs.detach().double().reshape(-1)
        self.stats += torch.stack([v.sum().cpu(), torch.tensor(float(v.numel()), dtype=torch.float64)])

    def add(self, total, count) -> None:
        """Add a sum of values and how many it sums (e.g. a token-weighted loss's (sum, count))."""
        self.stats += torch.stack([torch.as_tensor(total).detach().double().cpu(),
                                   torch.as_tensor(count).detach().double().cpu()])

    def compute(self, stats, rows=None):
        return (stats[0] / stats[1]).item() if stats[1] > 0 else float("nan")


class Accuracy(Mean):
    """Top-1 accuracy of class logits."""

    def update(self, outputs, target):
        super().update((outputs.argmax(dim=-1) == target).double())


class MeanSquaredError(Mean):
    def update(self, outputs, target):
        super().update(((outputs.detach().double() - target.double()) ** 2).reshape(-1))


class _ConfusionMatrix(Metric):
    """Counts [true class, predicted class] of the argmax of logits [N, C]; the sums are exact across ranks."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.stats = torch.zeros(num_classes * num_classes, dtype=torch.float64)

    def update(self, outputs, target):
        pred = outputs.argmax(dim=-1).reshape(-1).cpu()
        index = target.reshape(-1).cpu().long() * self.num_classes + pred
        self.stats += torch.bincount(index, minlength=self.num_classes ** 2).double()

    def per_class(self, stats) -> tuple[torch.Tensor, torch.Tensor]:
        """(precision, recall) per class; 0 where a class was never predicted / never present (as scikit-learn)."""
        cm = stats.reshape(self.num_classes, self.num_classes)
        tp, predicted, actual = cm.diagonal(), cm.sum(dim=0), cm.sum(dim=1)
        precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
        recall = torch.where(actual > 0, tp / actual.clamp(min=1), torch.zeros_like(tp))
        return precision, recall


class Precision(_ConfusionMatrix):
    """Macro precision: the unweighted mean over classes."""

    def compute(self, stats, rows=None):
        return self.per_class(stats)[0].mean().item()


class Recall(_ConfusionMatrix):
    """Macro recall: the unweighted mean over classes."""

    def compute(self, stats, rows=None):
        return self.per_class(stats)[1].mean().item()


class F1(_ConfusionMatrix):
    """Macro F1: the mean over classes of each class's F1 (not the F1 of macro precision and recall)."""

    def compute(self, stats, rows=None):
        p, r = self.per_class(stats)
        f1 = torch.where(p + r > 0, 2 * p * r / (p + r).clamp(min=1e-300), torch.zeros_like(p))
        return f1.mean().item()


class RocAuc(Metric):
    """Exact ROC-AUC: binary, or macro one-vs-rest over classes.

    Outputs are logits: [N] (binary, one score) or [N, C]. For C = 2 the score is logit1 - logit0 (same ranking as
    the softmax probability, without its saturation ties); for C > 2 each class is scored by its softmax
    probability against the rest, and the AUCs are averaged over classes that have both positives and negatives.
    AUC is the Mann-Whitney statistic with tied scores counted half, so it needs every (score, label) pair: the
    rows are gathered from all ranks.
    """

    def __init__(self, num_classes: int = 2):
        self.num_classes = num_classes
        self.width = 2 if num_classes == 2 else num_classes + 1  # score column(s), then the label
        self.stats = torch.zeros(0, dtype=torch.float64)
        self._rows: list[torch.Tensor] = []

    def update(self, outputs, target):
        outputs = outputs.detach().double()
        if outputs.ndim == 1:
            scores = outputs[:, None]
        elif self.num_classes == 2:
            scores = (outputs[:, 1] - outputs[:, 0])[:, None]
        else:
            scores = outputs.softmax(dim=-1)
        self._rows.append(torch.cat([scores, target.reshape(-1, 1).double()], dim=1).cpu())

    def rows(self):
        return torch.cat(self._rows) if self._rows else torch.zeros(0, self.width, dtype=torch.float64)

    def compute(self, stats, rows=None):
        labels = rows[:, -1].long()
        if self.num_classes == 2:
            return binary_auc(rows[:, 0], labels == 1)
        aucs = [binary_auc(rows[:, k], labels == k) for k in range(self.num_classes)]
        aucs = [a for a in aucs if a == a]  # a class absent (or alone) in the eval set has no AUC
        return sum(aucs) / len(aucs) if aucs else float("nan")


def binary_auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """P(score of a random positive > score of a random negative) + 0.5 P(equal), from average ranks."""
    n_pos = int(positive.sum())
    n_neg = len(scores) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    average_rank = ends - (counts.double() - 1) / 2  # 1-based rank, ties share the mean of their ranks
    rank_sum = average_rank[inverse][positive].sum().item()
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
