"""A character-level language model on any UTF-8 text file: `model.arch: lstm | gru | transformer`.

The text (`data.path`; `dist-train data fetch jargon` gets the public-domain Jargon File) is split into a training
part and the last `dataset.val_fraction` for validation, cut into windows of `dataset.block_size` characters, and
the model predicts each next character. Validation reports bits per character (`bpc`); the unigram baseline (the
cross-entropy of the validation text under the training text's character frequencies) is printed next to it. At
the end, `on_train_end` samples text from the model.

`data.path` may instead be a folder written by `dist-train data prepare` (token shards of any size, memory-mapped:
dist_train.data.TokenWindows): the same recipe then models bytes (`--tokenizer byte`) or BPE tokens, `bpc` is bits
per token, and the unigram baseline is taken over (at most) the first BASELINE_TOKENS tokens of each split.

The transformer is built from this file's own blocks: `SinusoidalPositions`, `CausalSelfAttention` and a pre-LN
`Block` (x + attn(ln(x)); x + mlp(ln(x))), the GPT-style layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dist_train import distributed
from dist_train.config.schema import positive
from dist_train.data import InMemoryDataset, TokenShards, TokenWindows
from dist_train.errors import UsageError
from dist_train.metrics import Mean
from dist_train.recipe import Recipe

DEFAULT_PATH = "data/jargon.txt"
BASELINE_TOKENS = 1 << 24


@dataclass
class DatasetConfig:
    block_size: int = positive(128)  # characters of context per training window
    val_fraction: float = field(default=0.1, metadata={"gt": 0, "lt": 1})


@dataclass
class ModelConfig:
    arch: Literal["lstm", "gru", "transformer"] = "transformer"
    dim: int = positive(128)  # embedding / hidden width
    layers: int = positive(2)
    heads: int = positive(4)  # transformer only
    dropout: float = field(default=0.1, metadata={"ge": 0, "lt": 1})


@dataclass
class SampleConfig:
    length: int = field(default=400, metadata={"ge": 0})  # characters printed at the end (0: none)
    temperature: float = positive(0.8)
    prompt: str = "The "


class SinusoidalPositions(nn.Module):
    """Fixed sin/cos position codes (Vaswani et al.), added to the embeddings; nothing to learn."""

    def __init__(self, dim: int, max_len: int):
        super().__init__()
        pos = torch.arange(max_len, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        table = torch.zeros(max_len, dim)
        table[:, 0::2] = torch.sin(pos * freq)
        table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
        self.register_buffer("table", table, persistent=False)

    def forward(self, x):
        return x + self.table[: x.shape[1]]


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-LN transformer block: normalise before each sub-layer, add its output to the residual stream."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, dropout)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    def __init__(self, vocab: int, cfg: ModelConfig, block_size: int):
        super().__init__()
        self.block_size = block_size
        self.embed = nn.Embedding(vocab, cfg.dim)
        self.positions = SinusoidalPositions(cfg.dim, block_size)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.Sequential(*(Block(cfg.dim, cfg.heads, cfg.dropout) for _ in range(cfg.layers)))
        self.ln = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, vocab)

    def forward(self, idx):
        return self.head(self.ln(self.blocks(self.drop(self.positions(self.embed(idx))))))


class Recurrent(nn.Module):
    def __init__(self, vocab: int, cfg: ModelConfig, block_size: int):
        super().__init__()
        self.block_size = block_size
        rnn = nn.LSTM if cfg.arch == "lstm" else nn.GRU
        self.embed = nn.Embedding(vocab, cfg.dim)
        self.rnn = rnn(cfg.dim, cfg.dim, num_layers=cfg.layers, batch_first=True,
                       dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.dim, vocab)

    def forward(self, idx):
        out, _ = self.rnn(self.embed(idx))
        return self.head(self.drop(out))


class BitsPerCharacter(Mean):
    """Mean next-character cross-entropy in bits, over every validation character (exact across ranks)."""

    def update(self, outputs, target):
        nats = F.cross_entropy(outputs.flatten(0, 1).float(), target.flatten(), reduction="none")
        super().update(nats / math.log(2))


class CharText:
    """The text as integer codes, its vocabulary, and the split into training and validation windows."""

    unit = "char"

    def __init__(self, path: str, cfg: DatasetConfig):
        p = Path(path)
        if not p.is_file():
            hint = "get it with: dist-train data fetch jargon --root data" if path == DEFAULT_PATH else \
                f"or run dist-train data fetch jargon --root data and set data.path={DEFAULT_PATH}"
            raise UsageError(f"data.path: text file '{path}' not found; point it at any UTF-8 text file or a folder "
                             f"from dist-train data prepare, {hint}")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise UsageError(f"data.path: '{path}' is not UTF-8 text (byte {e.start}: {e.reason})") from None
        self.chars = sorted(set(text))
        self.vocab_size = len(self.chars)
        self.index = {c: i for i, c in enumerate(self.chars)}
        codes = torch.tensor([self.index[c] for c in text], dtype=torch.long)
        n_val = int(len(codes) * cfg.val_fraction)
        self.train, self.val = codes[: len(codes) - n_val], codes[len(codes) - n_val:]
        if min(len(self.train), len(self.val)) <= cfg.block_size:
            raise UsageError(f"data.path: '{path}' has {len(text)} characters, too few for dataset.block_size "
                             f"{cfg.block_size} with val_fraction {cfg.val_fraction}; use a longer text or a "
                             "smaller block_size")
        self.block_size = cfg.block_size

    def datasets(self) -> tuple[InMemoryDataset, InMemoryDataset]:
        return self.windows(self.train), self.windows(self.val)

    def windows(self, codes: torch.Tensor) -> InMemoryDataset:
        """Non-overlapping (input, next-character target) windows."""
        n = (len(codes) - 1) // self.block_size * self.block_size
        return InMemoryDataset(codes[:n].view(-1, self.block_size), codes[1: n + 1].view(-1, self.block_size))

    def describe(self) -> str:
        return f"text: {len(self.train) + len(self.val):,} characters, vocabulary {self.vocab_size}"

    def unigram_bpc(self) -> float:
        """Bits per validation character under the training text's character frequencies (add-one smoothed)."""
        return unigram_bits(self.train, self.val, self.vocab_size)

    def encode(self, text: str) -> list[int]:
        return [self.index[c] for c in text if c in self.index]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)


class ShardText:
    """Token shards from `dist-train data prepare`: the same interface as CharText, nothing loaded into memory."""

    unit = "token"

    def __init__(self, path: str, cfg: DatasetConfig, verify: str):
        self.shards = TokenShards(path, verify)
        self.train = TokenWindows(self.shards, cfg.block_size, "train", cfg.val_fraction)
        self.val = TokenWindows(self.shards, cfg.block_size, "validation", cfg.val_fraction)
        self.vocab_size = self.shards.vocab_size
        self._tokenizer = None

    def datasets(self) -> tuple[TokenWindows, TokenWindows]:
        return self.train, self.val

    def describe(self) -> str:
        kind = self.shards.index.tokenizer["kind"]
        return (f"token shards: {len(self.shards):,} tokens in {len(self.shards.index.shards)} shards ({kind}), "
                f"vocabulary {self.vocab_size:,}")

    def unigram_bpc(self) -> float:
        """Bits per validation token under the training tokens' frequencies, over at most BASELINE_TOKENS each
        (read in chunks: memory stays small whatever the corpus size)."""
        seq, chunk = self.train.seq_len, 1 << 20
        counts = np.ones(self.vocab_size, dtype=np.float64)  # add-one smoothed
        end = min(len(self.train) * seq, BASELINE_TOKENS)
        for start in range(0, end, chunk):
            counts += np.bincount(self.shards.read(start, min(chunk, end - start)), minlength=self.vocab_size)
        log2p = np.log2(counts / counts.sum())
        first, bits = self.val.first * seq + 1, 0.0  # the validation targets
        end = first + min(len(self.val) * seq, BASELINE_TOKENS)
        for start in range(first, end, chunk):
            bits -= log2p[self.shards.read(start, min(chunk, end - start))].sum()
        return bits / (end - first)

    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = self.shards.tokenizer()
        return self._tokenizer

    def encode(self, text: str) -> list[int]:
        return [int(i) for i in self.tokenizer().encode(text)]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer().decode(ids)


def unigram_bits(train: torch.Tensor, val: torch.Tensor, vocab_size: int) -> float:
    counts = torch.bincount(train, minlength=vocab_size).double() + 1
    log2p = (counts / counts.sum()).log2()
    return -log2p[val].mean().item()


class CharLM(Recipe):
    sections = {"dataset": DatasetConfig, "model": ModelConfig, "sample": SampleConfig}

    def __init__(self, config):
        super().__init__(config)
        self.text: CharText | ShardText | None = None

    def _text(self) -> CharText | ShardText:
        if self.text is None:
            data, cfg = self.config.data, self.config.section("dataset")
            path = data.path or DEFAULT_PATH
            self.text = ShardText(path, cfg, data.verify) if Path(path).is_dir() else CharText(path, cfg)
        return self.text

    def build_model(self) -> nn.Module:
        cfg, block = self.config.section("model"), self.config.section("dataset").block_size
        vocab = self._text().vocab_size
        if cfg.arch == "transformer":
            if cfg.dim % cfg.heads or cfg.dim % 2:
                raise UsageError(f"model.dim: {cfg.dim} must be even and divisible by model.heads {cfg.heads}")
            return Transformer(vocab, cfg, block)
        return Recurrent(vocab, cfg, block)

    def build_datasets(self):
        text = self._text()
        distributed.print0(f"{text.describe()}, unigram baseline {text.unigram_bpc():.3f} bits/{text.unit} on "
                           "validation")
        return text.datasets()

    def loss(self, outputs, batch):
        return F.cross_entropy(outputs.flatten(0, 1), batch[1].flatten())

    def metrics(self):
        return {"bpc": BitsPerCharacter()}

    def on_train_end(self, model, eval_values):
        text, cfg = self._text(), self.config.section("sample")
        if "bpc" in eval_values:
            baseline = text.unigram_bpc()
            distributed.print0(f"validation {eval_values['bpc']:.3f} bits/{text.unit} vs unigram baseline "
                               f"{baseline:.3f} ({100 * (1 - eval_values['bpc'] / baseline):.0f}% lower)")
        if cfg.length:
            distributed.print0(f"--- sample (temperature {cfg.temperature}) ---\n{self.sample(model, cfg)}\n---")

    def sample(self, model: nn.Module, cfg: SampleConfig) -> str:
        """Temperature sampling, one character at a time. The generator is seeded from `seed`, so every rank draws
        the same text (and runs the same forwards, as a sharded model needs)."""
        text = self._text()
        prompt = text.encode(cfg.prompt) or [0]
        device = next(model.parameters()).device
        idx = torch.tensor([prompt], device=device)
        g = torch.Generator(device=device).manual_seed(self.config.seed)
        for _ in range(cfg.length):
            logits = model(idx[:, -model.block_size:])[0, -1].float() / cfg.temperature
            nxt = torch.multinomial(logits.softmax(-1), 1, generator=g)
            idx = torch.cat([idx, nxt[None]], dim=1)
        return text.decode(idx[0].tolist())
