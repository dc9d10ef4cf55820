"""A recipe with variable-length, padded sequences and a token-weighted loss: (sum over real tokens, their count).

Each sample is a row of `LENGTH` tokens of which only the first `length_i` (1..LENGTH, very uneven) are real; the
others are padding, marked by the target -100. The model maps each token to a class (a learnable function of
the token). With such batches the mean of per-micro-batch means depends on how the global batch is split.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dist_train.data import InMemoryDataset
from dist_train.recipe import Recipe

VOCAB, LENGTH, SAMPLES = 16, 12, 96


def padded_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (SAMPLES, LENGTH), generator=g)
    # Very uneven lengths: mostly 1-2 real tokens, some full rows.
    lengths = torch.where(torch.rand(SAMPLES, generator=g) < 0.25, LENGTH, torch.randint(1, 3, (SAMPLES,), generator=g))
    targets = (tokens * 5 + 3) % VOCAB
    targets[torch.arange(LENGTH)[None, :] >= lengths[:, None]] = -100
    return tokens, targets


class PaddedSequences(Recipe):
    def build_model(self):
        return nn.Sequential(nn.Embedding(VOCAB, 8), nn.Tanh(), nn.Linear(8, VOCAB))

    def build_datasets(self):
        return InMemoryDataset(*padded_data(0)), InMemoryDataset(*padded_data(1))

    def loss(self, outputs, batch):
        targets = batch[1]
        total = F.cross_entropy(outputs.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")
        return total, (targets != -100).sum()
