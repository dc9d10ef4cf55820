"""The typed configuration: one dataclass per YAML section.

A run is described by one YAML file plus `key=value` overrides; `dist_train.config.load` turns them into a `Config`
and nothing downstream ever sees a raw dict. Field metadata carries the checks (`gt`, `ge`) that `typed.build`
applies, so a bad value is reported with its dotted key. Recipes add their own sections (e.g. `model:`) through
`Recipe.sections`; those land in `Config.sections` as instances of the recipe's dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

Precision = Literal["fp32", "bf16", "fp16"]


def positive(default, **extra):
    return field(default=default, metadata={"gt": 0, **extra})


def non_negative(default, **extra):
    return field(default=default, metadata={"ge": 0, **extra})


@dataclass
class EarlyStoppingConfig:
    metric: str = "loss"  # an eval metric name (loss or one of the recipe's metrics)
    mode: Literal["min", "max"] = "min"
    patience: int = positive(3)  # evaluations without improvement before stopping
    min_delta: float = non_negative(0.0)  # an improvement must beat the best by more than this


@dataclass
class TrainConfig:
    max_steps: int = positive(1000)
    batch_size: int = positive(64)  # per rank, per micro-step
    grad_accum: int = positive(1)
    precision: Precision = "fp32"
    clip_grad_norm: Optional[float] = positive(None)
    log_every: int = positive(10)
    eval_every: int = positive(200)
    eval_batch_size: Optional[int] = positive(None)  # default: train.batch_size
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # A non-finite loss: `stop` ends the run with an error naming the step (no checkpoint of the bad state is
    # written); `skip` drops that optimizer step on every rank and logs it.
    on_nan: Literal["stop", "skip"] = "stop"
    compile: bool = False  # torch.compile the model (each FSDP unit under fsdp)
    l1: float = non_negative(0.0)  # L1 penalty weight: loss + l1 * sum|w| over trainable parameters
    ema: Optional[float] = field(default=None, metadata={"gt": 0, "lt": 1})  # decay of an EMA of weights; eval uses it
    early_stopping: Optional[EarlyStoppingConfig] = None


@dataclass
class OptimizerConfig:
    name: Literal["sgd", "adam", "adamw", "rmsprop"] = "adamw"
    lr: float = positive(1.0e-3)
    weight_decay: float = non_negative(0.0)
    momentum: float = non_negative(0.0)  # sgd and rmsprop
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam and adamw


@dataclass
class SchedulerConfig:
    name: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = non_negative(0)
    min_lr_ratio: float = non_negative(0.0)  # cosine/linear decay towards lr * min_lr_ratio at train.max_steps


@dataclass
class DataConfig:
    root: Optional[str] = None  # folder the recipe's dataset lives in (recipe default when null)
    path: Optional[str] = None  # a data file or folder, e.g. a text file or token shards from `data prepare`
    num_workers: int = non_negative(0)  # DataLoader worker processes per rank; 0: load in the training process
    prefetch_factor: int = positive(2)  # batches each worker loads ahead (num_workers > 0)
    # Token shards at start-up: `size` checks they exist with the sizes index.json says; `full` also checks
    # every checksum (reads the whole corpus once; `dist-train data verify DIR` does the same offline).
    verify: Literal["size", "full"] = "size"


@dataclass
class WandbConfig:
    """Present = on. Offline runs are written under run_dir/wandb and uploaded later with `wandb sync`."""

    project: str = "dist-train"
    entity: Optional[str] = None  # W&B user or team; null: the API key's default entity
    name: Optional[str] = None  # display name; null: W&B picks one
    tags: list[str] = field(default_factory=list)
    mode: Literal["online", "offline", "disabled"] = "online"


@dataclass
class TrackingConfig:
    wandb: Optional[WandbConfig] = None  # null/absent: no W&B
    tensorboard: bool = False  # event files under run_dir/tensorboard
    # Peak dense bf16 TFLOP/s of one GPU for the MFU figure; null: looked up from the GPU's name (H100, A100, ...).
    peak_tflops: Optional[float] = positive(None)


@dataclass
class CheckpointConfig:
    every: Optional[int] = positive(None)  # save every N optimizer steps; null: only at the end of the run
    keep: Optional[int] = positive(3)  # newest complete checkpoints kept; null: keep all
    resume: str = "auto"  # auto (newest complete one in run_dir), never, or the path of a step_<N> folder
    # YAML key `async` (a Python keyword): write in a background thread while training goes on.
    async_save: bool = field(default=False, metadata={"key": "async"})


@dataclass
class FSDPConfig:
    activation_checkpointing: bool = False  # recompute each unit's activations in backward instead of storing them


@dataclass
class DeepSpeedConfig:
    zero_stage: Literal[0, 1, 2, 3] = 1
    offload_optimizer: bool = False  # optimizer state (and its step) on the CPU
    # Extra DeepSpeed config keys, merged into the generated config. Keys generated from our own config (batch
    # sizes, accumulation, precision, clipping, optimizer, scheduler, zero stage, offload) are refused here.
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class Config:
    recipe: str = "fashion_mnist_mlp"
    strategy: Literal["auto", "single", "ddp", "fsdp", "deepspeed"] = "auto"
    seed: int = non_negative(0)
    run_dir: str = "runs/default"
    train: TrainConfig = field(default_factory=TrainConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    fsdp: FSDPConfig = field(default_factory=FSDPConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    # `callbacks: [{name: profiler, start: 10}, ...]`, checked into dist_train.callbacks.CallbackSpec entries.
    callbacks: list[Any] = field(default_factory=list)
    # The recipe's own sections (e.g. "model"), each an instance of the dataclass the recipe declares.
    sections: dict[str, Any] = field(default_factory=dict)

    @property
    def eval_batch_size(self) -> int:
        return self.train.eval_batch_size or self.train.batch_size

    def section(self, name: str):
        return self.sections[name]
