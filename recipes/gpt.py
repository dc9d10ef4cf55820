"""A Llama-style language model on token shards: the recipe for models at scale (model: dist_train/models/gpt.py).

Data (`data.path`): a folder of token shards written by `dist-train data prepare` (memory-mapped, any size; the
vocabulary and the tokenizer come from its index), or a single text file, read as bytes (vocabulary 256). Either
way the last `dataset.val_fraction` of the windows is the validation split. A sample is a window of
`model.seq_len + 1` tokens: the model predicts tokens 1..T from tokens 0..T-1. Validation reports the loss in nats
per token and perplexity; the unigram baseline (the cross-entropy of the validation tokens under the training
tokens' frequencies, over at most BASELINE_TOKENS of each split) is printed next to it; at the end a sample is
generated.

For the strategies the recipe names its blocks (`fsdp_units`: the FSDP groups and the activation-checkpointing
and compile units) and its tensor-parallel plan (`tp_plan`). `check_parallel` refuses, from the config alone, a
tensor-parallel degree the model cannot be split by.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dist_train import distributed
from dist_train.config.schema import positive
from dist_train.data import InMemoryDataset, TokenShards, TokenWindows
from dist_train.errors import UsageError
from dist_train.metrics import Mean
from dist_train.models.gpt import GPT, ModelConfig, flops_per_token, tp_plan
from dist_train.recipe import Recipe

BASELINE_TOKENS = 1 << 24  # enough for a stable unigram estimate; a terabyte corpus is not read for it


@dataclass
class DatasetConfig:
    val_fraction: float = field(default=0.05, metadata={"gt": 0, "lt": 1})  # the last windows: validation


@dataclass
class SampleConfig:
    length: int = field(default=200, metadata={"ge": 0})  # tokens generated at the end (0: none)
    temperature: float = positive(0.8)
    prompt: str = "The "


class ShardTokens:
    """Token shards from `dist-train data prepare`, memory-mapped (dist_train.data.TokenWindows)."""

    def __init__(self, path: str, seq_len: int, val_fraction: float, verify: str):
        self.shards = TokenShards(path, verify)
        self.train = TokenWindows(self.shards, seq_len, "train", val_fraction)
        self.val = TokenWindows(self.shards, seq_len, "validation", val_fraction)
        self.vocab_size = self.shards.vocab_size
        self.source = (f"{path} ({len(self.shards):,} tokens in {len(self.shards.index.shards)} shards, "
                       f"{self.shards.index.tokenizer['kind']} tokenizer)")

    def baseline_tokens(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The tokens the training and the validation windows predict, at most BASELINE_TOKENS of each."""
        seq = self.train.seq_len
        starts_and_counts = ((0, len(self.train) * seq), (self.val.first * seq + 1, len(self.val) * seq))
        return tuple(torch.from_numpy(self.shards.read(start, min(count, BASELINE_TOKENS)).astype("int64"))
                     for start, count in starts_and_counts)

    def encode(self, text: str) -> list[int]:  # called once per run (the sample's prompt): no caching needed
        return [int(i) for i in self.shards.tokenizer().encode(text)]

    def decode(self, tokens: list[int]) -> str:
        return self.shards.tokenizer().decode(tokens)


class ByteText:
    """A text file as byte tokens (vocabulary 256), in memory: for a quick run without `data prepare`."""

    vocab_size = 256

    def __init__(self, path: str, seq_len: int, val_fraction: float):
        p = Path(path)
        if not p.is_file():
            raise UsageError(f"data.path: '{path}' is neither a token shard folder (dist-train data prepare) nor a "
                             "text file")
        codes = torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8).long()
        windows = (len(codes) - 1) // seq_len
        n_val = max(1, int(windows * val_fraction))
        if windows - n_val < 1:
            raise UsageError(f"data.path: '{path}' has {len(codes)} bytes, too few for model.seq_len {seq_len} with "
                             f"dataset.val_fraction {val_fraction}; use a longer text or a smaller seq_len")
        inputs = codes[: windows * seq_len].view(windows, seq_len)
        targets = codes[1: windows * seq_len + 1].view(windows, seq_len)
        cut = windows - n_val
        self.train = InMemoryDataset(inputs[:cut], targets[:cut])
        self.val = InMemoryDataset(inputs[cut:], targets[cut:])
        self.tokens, self.cut = codes, cut * seq_len
        self.source = f"{path} ({len(codes):,} bytes)"

    def baseline_tokens(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tokens[: self.cut][:BASELINE_TOKENS], self.tokens[self.cut + 1:][:BASELINE_TOKENS]

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, tokens: list[int]) -> str:
        return bytes(tokens).decode("utf-8", errors="replace")


def unigram_loss(train_tokens: torch.Tensor, val_tokens: torch.Tensor, vocab: int) -> float:
    """Nats per validation token under the training tokens' frequencies (add-one smoothed)."""
    counts = torch.bincount(train_tokens, minlength=vocab).double() + 1
    return -(counts / counts.sum()).log()[val_tokens].mean().item()


class Perplexity(Mean):
    """exp of the mean next-token cross-entropy over every validation token (the mean is exact across ranks)."""

    def update(self, outputs, target):
        super().update(F.cross_entropy(outputs.flatten(0, 1).float(), target.flatten(), reduction="none"))

    def compute(self, stats, rows=None):
        return math.exp(super().compute(stats))


class GPTRecipe(Recipe):
    sections = {"model": ModelConfig, "dataset": DatasetConfig, "sample": SampleConfig}

    def __init__(self, config):
        super().__init__(config)
        self._data = None

    def data(self):
        if self._data is None:
            path = self.config.data.path
            if path is None:
                raise UsageError("data.path: not set; give a token shard folder (dist-train data prepare) or a text "
                                 "file")
            seq_len, val_fraction = self.config.section("model").seq_len, self.config.section("dataset").val_fraction
            self._data = ShardTokens(path, seq_len, val_fraction, self.config.data.verify) if Path(path).is_dir() \
                else ByteText(path, seq_len, val_fraction)
        return self._data

    def check_parallel(self, tensor: int) -> None:
        cfg = self.config.section("model")
        if cfg.dim % cfg.heads or (cfg.dim // cfg.heads) % 2:
            raise UsageError(f"model.dim: {cfg.dim} must split into model.heads {cfg.heads} heads of an even size "
                             "(rotary positions rotate pairs)")
        kv = cfg.kv_heads or cfg.heads
        if cfg.heads % kv:
            raise UsageError(f"model.kv_heads: {kv} must divide model.heads {cfg.heads}")
        for key, value in (("model.heads", cfg.heads), ("model.kv_heads", kv), ("model.seq_len", cfg.seq_len)):
            if value % tensor:
                fits = max(d for d in range(1, tensor + 1) if value % d == 0)
                raise UsageError(f"parallel.tensor: {tensor} does not divide {key}={value}; use a degree that "
                                 f"divides it (e.g. {fits})")

    def build_model(self) -> nn.Module:
        self.check_parallel(1)
        return GPT(self.data().vocab_size, self.config.section("model"))

    def build_datasets(self):
        data = self.data()
        distributed.print0(f"tokens: {data.source}, vocabulary {data.vocab_size}, unigram baseline "
                           f"{self.unigram_loss():.4f} nats/token on validation")
        return data.train, data.val

    def unigram_loss(self) -> float:
        data = self.data()
        return unigram_loss(*data.baseline_tokens(), data.vocab_size)

    def loss(self, outputs, batch):
        return F.cross_entropy(outputs.flatten(0, 1).float(), batch[1].flatten())

    def metrics(self):
        return {"perplexity": Perplexity()}

    def tokens_in(self, batch) -> int:
        return batch[0].numel()

    def flops_per_sample(self) -> float:
        cfg = self.config.section("model")
        return cfg.seq_len * flops_per_token(cfg, self.data().vocab_size)

    def fsdp_units(self, model: GPT) -> list[nn.Module]:
        return list(model.layers)

    def tp_plan(self, model: GPT) -> dict:
        return tp_plan(model)

    def on_train_end(self, model, eval_values):
        cfg = self.config.section("sample")
        if "loss" in eval_values:
            baseline = self.unigram_loss()
            distributed.print0(f"validation loss {eval_values['loss']:.4f} nats/token vs unigram baseline "
                               f"{baseline:.4f} ({100 * (1 - eval_values['loss'] / baseline):.0f}% lower)")
        if cfg.length:
            distributed.print0(f"--- sample (temperature {cfg.temperature}) ---\n{self.sample(model, cfg)}\n---")

    def sample(self, model: nn.Module, cfg: SampleConfig) -> str:
        """Temperature sampling, one token at a time. Every forward has the full [1, seq_len] shape (the context
        right-padded; causal attention keeps the padding out of the position read), so a tensor-parallel model
        sees the sequence length its plan splits. The generator is seeded from `seed`: every rank draws the same
        tokens and runs the same forwards, as a sharded model needs."""
        data, seq_len = self.data(), model.seq_len
        tokens = data.encode(cfg.prompt) or [0]
        device = model.rope.device
        g = torch.Generator(device=device).manual_seed(self.config.seed)
        for _ in range(cfg.length):
            context = tokens[-seq_len:]
            window = torch.zeros(1, seq_len, dtype=torch.long, device=device)
            window[0, : len(context)] = torch.tensor(context, device=device)
            logits = model(window)[0, len(context) - 1, : data.vocab_size].float() / cfg.temperature
            tokens.append(int(torch.multinomial(logits.softmax(-1), 1, generator=g)))
        return data.decode(tokens)
