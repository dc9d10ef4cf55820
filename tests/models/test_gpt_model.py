"""The Llama-style GPT: causal, grouped-query heads, rotary positions that depend only on the offset, tied
embeddings, the padded vocabulary and the FLOP count the MFU figure uses."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dist_train.models.gpt import GPT, ModelConfig, apply_rotary, ffn_hidden, flops_per_token, padded_vocab, \
    rotary_table

CFG = ModelConfig(layers=2, dim=32, heads=4, kv_heads=2, seq_len=16)


def test_shapes_and_grouped_query_heads():
    torch.manual_seed(0)
    model = GPT(300, CFG)
    assert padded_vocab(300) == 320 and model.embed.weight.shape == (320, 32)
    assert model.layers[0].attn.wk.weight.shape == (2 * 8, 32)  # 2 key/value heads of size 8
    assert ffn_hidden(CFG) == 96  # 2/3 x 4 x 32 = 85, rounded up to 32
    assert model(torch.randint(0, 300, (3, 16))).shape == (3, 16, 320)


def test_causal_a_later_token_changes_no_earlier_logit():
    torch.manual_seed(0)
    model = GPT(256, CFG)
    idx = torch.randint(0, 256, (1, 16))
    changed = idx.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % 256
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert (a[:, 10:] - b[:, 10:]).abs().max() > 1e-3


def test_rotary_scores_depend_only_on_the_offset():
    table = rotary_table(head_dim=8, seq_len=32, theta=10000.0)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(i: int, j: int) -> float:
        qi = apply_rotary(q.expand(1, 32, 1, 8).contiguous(), table)[0, i, 0]
        kj = apply_rotary(k.expand(1, 32, 1, 8).contiguous(), table)[0, j, 0]
        return float(qi @ kj)

    assert score(5, 2) == pytest.approx(score(20, 17), abs=1e-5)
    assert score(5, 2) != pytest.approx(score(5, 4), abs=1e-3)


def test_tied_embeddings_share_one_parameter():
    model = GPT(256, ModelConfig(layers=1, dim=16, heads=2, seq_len=8, tie_embeddings=True))
    assert model.head.weight is model.embed.weight
    assert sum(p.numel() for p in model.parameters()) == \
        sum(p.numel() for n, p in model.named_parameters() if n != "head.weight")


def test_flops_per_token_counts_every_matmul():
    model = GPT(256, CFG)
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    assert flops_per_token(CFG, 256) == 6 * matmul + 12 * CFG.layers * CFG.dim * CFG.seq_len
