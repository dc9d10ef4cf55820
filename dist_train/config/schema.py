"""The typed configuration: one dataclass per YAML section.

A run is described by one YAML file plus `key=value` overrides; `dist_train.config.load` turns them into a `Config`
and nothing downstream ever sees a raw dict. Field metadata carries the checks (`gt`, `ge`, `lt`, `le`, `len`,
`nonempty`) that `typed.build` applies on top of the rules every field gets (typed.py), so a bad value is reported
with its dotted key. Recipes add their own sections (e.g. `model:`) through
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


def path(default):
    """A file or folder name: '' would silently mean the current directory, so it is refused."""
    return field(default=default, metadata={"nonempty": True})


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
    # `skip` gives up, ending the run like `stop`, once more steps than these were skipped in a row / in all
    # (resumes included); null: no limit. A run skipping step after step has diverged; skipping hides it.
    max_consecutive_skipped_steps: Optional[int] = positive(10)
    max_skipped_steps: Optional[int] = positive(100)
    compile: bool = False  # torch.compile the model (each FSDP unit under fsdp)
    l1: float = non_negative(0.0)  # L1 penalty weight: loss + l1 * sum|w| over trainable parameters
    ema: Optional[float] = field(default=None, metadata={"gt": 0, "lt": 1})  # decay of an EMA of weights; eval uses it
    early_stopping: Optional[EarlyStoppingConfig] = None
    # Recompute activations in backward instead of storing them, per unit (Recipe.fsdp_units), under every strategy:
    # 0 off, 1 every unit (full), k every k-th unit.
    activation_checkpointing: int = non_negative(0)
    # BatchNorm statistics over the global batch (all data-parallel ranks) instead of each rank's micro-batch.
    sync_batchnorm: bool = False


@dataclass
class ParamGroupConfig:
    """Parameters whose name (as in the recipe's model, e.g. `layers.0.attn.wq.weight`) matches `match`
    (re.search; first matching group wins) train with lr x lr_scale and their own weight_decay."""

    match: str = ""
    lr_scale: float = non_negative(1.0)
    weight_decay: Optional[float] = non_negative(None)  # null: the optimizer's, or 0 under no_decay


@dataclass
class OptimizerConfig:
    name: Literal["sgd", "adam", "adamw", "rmsprop"] = "adamw"
    lr: float = positive(1.0e-3)
    weight_decay: float = non_negative(0.0)
    momentum: float = non_negative(0.0)  # sgd and rmsprop
    # adam and adamw: (beta1, beta2), each in [0, 1) as torch requires
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999], metadata={"len": 2, "ge": 0, "lt": 1})
    # Kinds of parameters that get weight_decay 0 (the usual transformer practice); [] decays everything.
    no_decay: list[Literal["bias", "norm", "embedding"]] = field(default_factory=lambda: ["bias", "norm", "embedding"])
    param_groups: list[ParamGroupConfig] = field(default_factory=list)


@dataclass
class SchedulerConfig:
    name: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = non_negative(0)
    min_lr_ratio: float = non_negative(0.0, le=1)  # cosine/linear decay towards lr * min_lr_ratio at train.max_steps


@dataclass
class DataConfig:
    root: Optional[str] = path(None)  # folder the recipe's dataset lives in (recipe default when null)
    path: Optional[str] = path(None)  # a data file or folder, e.g. a text file or token shards from `data prepare`
    # DataLoader worker processes per rank (0: load in the training process); the bound keeps a typo (1e6) from
    # forking until the machine falls over.
    num_workers: int = non_negative(0, le=1024)
    prefetch_factor: int = positive(2, le=1024)  # batches each worker loads ahead (num_workers > 0)
    # Token shards at start-up: `size` checks they exist with the sizes index.json says; `full` also checks
    # every checksum (reads the whole corpus once; `dist-train data verify DIR` does the same offline).
    verify: Literal["size", "full"] = "size"


@dataclass
class WandbConfig:
    """Present = on. Offline runs are written under run_dir/wandb and uploaded later with `wandb sync`."""

    project: str = field(default="dist-train", metadata={"nonempty": True})
    # W&B user or team (null: the API key's default entity) and display name (null: W&B picks one)
    entity: Optional[str] = field(default=None, metadata={"nonempty": True})
    name: Optional[str] = field(default=None, metadata={"nonempty": True})
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
    # Where the step_<N> folders go: a (shared) folder, or an object store URL such as s3://bucket/prefix (fsspec;
    # credentials and endpoint from the standard environment/config files, never from here). null: run_dir/checkpoints
    dir: Optional[str] = None
    every: Optional[int] = positive(None)  # save every N optimizer steps; null: only at the end of the run
    keep: Optional[int] = positive(3)  # newest complete checkpoints kept; null: keep all
    resume: str = path("auto")  # auto (newest complete one in run_dir), never, or the path of a step_<N> folder
    # YAML key `async` (a Python keyword): write in a background thread while training goes on.
    async_save: bool = field(default=False, metadata={"key": "async"})


@dataclass
class FSDPConfig:
    # HSDP: this many replica groups, each sharding the model over world size / (replicate x parallel.tensor)
    # ranks; 1: plain FSDP over every data-parallel rank. One group per node keeps FSDP's all-gathers in the node.
    replicate: int = positive(1)


@dataclass
class ParallelConfig:
    # Tensor-parallel degree (strategy fsdp, a recipe with a tp_plan): each block split over this many ranks,
    # FSDP2 over the other mesh dimension; the ranks of one tensor-parallel group read the same batch.
    tensor: int = positive(1)


@dataclass
class DeepSpeedConfig:
    zero_stage: Literal[0, 1, 2, 3] = 1
    offload_optimizer: bool = False  # optimizer state (and its step) on the CPU
    # Extra DeepSpeed config keys, merged into the generated config. Keys generated from our own config (batch
    # sizes, accumulation, precision, clipping, optimizer, scheduler, zero stage, offload) are refused here.
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunDirLockConfig:
    """The lock that keeps a second run out of a run_dir in use (dist_train/run_dir_lock.py)."""

    # Seconds without a heartbeat (the holder touches the lock every min(30, stale_after / 4) s) after which a lock
    # held from another host counts as left by a dead run and is taken over. Keep it above the clock skew between
    # the hosts sharing the file system. A holder gone from this host is taken over at once, whatever this says.
    stale_after: float = field(default=600.0, metadata={"ge": 1})


@dataclass
class DistributedConfig:
    # How long a collective (all-reduce, all-gather, barrier, the store's rendezvous) may wait for the other ranks
    # before it fails the run: the backstop behind the watchdog, which names the rank behind much sooner.
    timeout_s: float = positive(600.0)


@dataclass
class WatchdogConfig:
    # No optimizer step, eval batch or checkpoint save finishing for this long (from the second step on): every rank
    # writes its stacks to run_dir/hang/rank<R>.txt, one summary names the rank(s) behind, the job exits 124.
    # Keep it below distributed.timeout_s and above the longest step, eval batch and save; null: no watchdog.
    timeout_s: Optional[float] = positive(300.0)


@dataclass
class SlurmConfig:
    # Requeues after time-limit warnings (USR1) before the job stops for good; read by the batch script.
    max_requeues: int = non_negative(3)


@dataclass
class Config:
    recipe: str = "fashion_mnist_mlp"
    strategy: Literal["auto", "single", "ddp", "fsdp", "deepspeed"] = "auto"
    # numpy's seed range; the data order seeds torch with seed * 1_000_003 + epoch, well inside 64 bits
    seed: int = non_negative(0, le=2**32 - 1)
    run_dir: str = path("runs/default")
    train: TrainConfig = field(default_factory=TrainConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    fsdp: FSDPConfig = field(default_factory=FSDPConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    run_dir_lock: RunDirLockConfig = field(default_factory=RunDirLockConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    # `callbacks: [{name: profiler, start: 10}, ...]`, checked into dist_train.callbacks.CallbackSpec entries.
    callbacks: list[Any] = field(default_factory=list)
    # The recipe's own sections (e.g. "model"), each an instance of the dataclass the recipe declares.
    sections: dict[str, Any] = field(default_factory=dict)

    @property
    def eval_batch_size(self) -> int:
        return self.train.eval_batch_size or self.train.batch_size

    def section(self, name: str):
        return self.sections[name]
