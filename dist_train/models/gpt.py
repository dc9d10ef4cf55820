"""A Llama-style decoder-only transformer and its tensor-parallel plan (the `gpt` recipe's model).

Token embedding, `layers` pre-norm blocks (RMSNorm -> causal self-attention with rotary positions and optional
grouped-query heads -> residual; RMSNorm -> SwiGLU MLP -> residual), a final RMSNorm and a linear head onto the
vocabulary, optionally tied to the embedding. Attention is `scaled_dot_product_attention` with `is_causal`; there
is no dropout (Llama's choice; it also keeps tensor-parallel ranks identical without a shared random stream).
The module names (`embed`, `layers.N.attn.wq`, ...) are what `tp_plan` refers to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from dist_train.config.schema import positive

FFN_MULTIPLE = 32  # SwiGLU hidden width rounded up to this (a tensor-parallel degree up to 32 then divides it)
VOCAB_MULTIPLE = 64  # embedding rows padded to this, so that any tensor-parallel degree up to 64 divides them


@dataclass
class ModelConfig:
    layers: int = positive(2)
    dim: int = positive(64)
    heads: int = positive(4)
    kv_heads: Optional[int] = positive(None)  # grouped-query attention: key/value heads; null: = heads
    ffn_mult: float = positive(4.0)  # SwiGLU hidden = 2/3 x ffn_mult x dim (Llama), rounded up to 32
    seq_len: int = positive(64)
    tie_embeddings: bool = False  # the head reuses the embedding matrix (GPT-2's choice)
    rope_theta: float = positive(10000.0)
    norm_eps: float = positive(1e-5)


def ffn_hidden(cfg: ModelConfig) -> int:
    hidden = int(2 * cfg.ffn_mult * cfg.dim / 3)
    return -(-hidden // FFN_MULTIPLE) * FFN_MULTIPLE


def padded_vocab(vocab: int) -> int:
    return -(-vocab // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


def flops_per_token(cfg: ModelConfig, vocab: int) -> float:
    """Training FLOPs per token: 6 x matmul parameters (forward 2, backward 4; every Linear and the head, not the
    embedding lookup) plus attention's scores and weighted sum, 12 x layers x dim x seq_len (PaLM, appendix B)."""
    kv_dim = (cfg.kv_heads or cfg.heads) * (cfg.dim // cfg.heads)
    per_layer = 2 * cfg.dim * cfg.dim + 2 * cfg.dim * kv_dim + 3 * cfg.dim * ffn_hidden(cfg)
    matmul = cfg.layers * per_layer + padded_vocab(vocab) * cfg.dim
    return 6 * matmul + 12 * cfg.layers * cfg.dim * cfg.seq_len


class RMSNorm(nn.Module):
    """x / rms(x) * weight, in fp32 whatever the input dtype (the usual guard for low-precision training)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def rotary_table(head_dim: int, seq_len: int, theta: float) -> torch.Tensor:
    """[seq_len, head_dim] of (cos | sin) of the rotation angles t * theta^(-2i/d) (RoFormer, Su et al.)."""
    freqs = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), freqs)
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


def apply_rotary(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate each (first half, second half) pair of x [b, t, heads, head_dim] by its position's angle."""
    cos, sin = table[: x.shape[1]].chunk(2, dim=-1)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.head_dim = cfg.dim // cfg.heads
        kv_heads = cfg.kv_heads or cfg.heads
        self.wq = nn.Linear(cfg.dim, cfg.heads * self.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(cfg.heads * self.head_dim, cfg.dim, bias=False)

    def forward(self, x, rope):
        b, t, _ = x.shape
        # -1, not the configured head counts: under tensor parallelism each rank holds only its share of the heads.
        q = apply_rotary(self.wq(x).view(b, t, -1, self.head_dim), rope)
        k = apply_rotary(self.wk(x).view(b, t, -1, self.head_dim), rope)
        v = self.wv(x).view(b, t, -1, self.head_dim)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
                                           enable_gqa=k.shape[2] != q.shape[2])
        return self.wo(y.transpose(1, 2).reshape(b, t, -1))


class FeedForward(nn.Module):
    """SwiGLU (Shazeer 2020): w2(silu(w1 x) * w3 x)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn = FeedForward(cfg.dim, ffn_hidden(cfg))

    def forward(self, x, rope):
        x = x + self.attn(self.attn_norm(x), rope)
        return x + self.ffn(self.ffn_norm(x))


class GPT(nn.Module):
    def __init__(self, vocab: int, cfg: ModelConfig):
        super().__init__()
        self.seq_len = cfg.seq_len
        padded = padded_vocab(vocab)
        self.embed = nn.Embedding(padded, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.head = nn.Linear(cfg.dim, padded, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        self.register_buffer("rope", rotary_table(cfg.dim // cfg.heads, cfg.seq_len, cfg.rope_theta),
                             persistent=False)
        self._init_weights(cfg.layers)

    def _init_weights(self, layers: int) -> None:
        # GPT-2's scheme: N(0, 0.02), and the projections that write into the residual stream scaled by
        # 1/sqrt(2 x layers) so the stream's variance does not grow with depth.
        for name, p in self.named_parameters():
            if p.ndim == 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("wo.weight", "w2.weight")) else 0.02
                nn.init.normal_(p, std=std)

    def forward(self, idx):
        x = self.embed(idx)
        for layer in self.layers:
            x = layer(x, self.rope)
        return self.head(self.norm(x))


def tp_plan(model: GPT) -> dict:
    """Megatron-style tensor parallelism with sequence parallelism (as torchtitan's Llama plan):

    - embedding row-wise (vocabulary split), its output scattered along the sequence: between blocks every rank
      holds T/K positions of the residual stream (sequence parallel), so norms and residual adds are split too;
    - attention: q/k/v column-wise (each rank computes heads/K heads, no communication inside attention), the
      output projection row-wise, reduce-scattered back to sequence shards; the MLP likewise (w1/w3 column-wise,
      w2 row-wise); the all-gather of the sequence happens at each sub-layer's input;
    - the head column-wise (vocabulary split) and gathered to full logits, so the loss is the plain one.
    """
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (ColwiseParallel, PrepareModuleInput, RowwiseParallel,
                                                   SequenceParallel)

    plan = {
        "embed": RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(1)),
        "norm": SequenceParallel(),
        "head": ColwiseParallel(input_layouts=Shard(1), output_layouts=Replicate()),
    }
    for i in range(len(model.layers)):
        p = f"layers.{i}."
        plan.update({
            p + "attn_norm": SequenceParallel(),
            p + "attn": PrepareModuleInput(input_layouts=(Shard(1), None), desired_input_layouts=(Replicate(), None)),
            p + "attn.wq": ColwiseParallel(), p + "attn.wk": ColwiseParallel(), p + "attn.wv": ColwiseParallel(),
            p + "attn.wo": RowwiseParallel(output_layouts=Shard(1)),
            p + "ffn_norm": SequenceParallel(),
            p + "ffn": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)),
            p + "ffn.w1": ColwiseParallel(), p + "ffn.w3": ColwiseParallel(),
            p + "ffn.w2": RowwiseParallel(output_layouts=Shard(1)),
        })
    return plan
