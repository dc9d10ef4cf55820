"""DeepSpeed ZeRO (stages 0-3, optional CPU offload of optimizer state) behind the strategy interface.

The DeepSpeed config is generated from ours, so no number is written twice: batch sizes and accumulation from
`train`, precision, clipping, the ZeRO stage and offload from `deepspeed`. Our own torch optimizer and LambdaLR
schedule go in as DeepSpeed's client optimizer/scheduler, so a step means exactly what it means under ddp/fsdp.
`deepspeed.config` adds DeepSpeed keys we do not generate; a key we generate is refused there (one place per
setting), with the key of ours to set instead.

DeepSpeed's engine owns accumulation: `engine.backward` (unscaled, our loop already divided the loss by
grad_accum) then `engine.step()` after *every* micro-batch; the engine counts micro-steps and reduces gradients,
steps the optimizer and the schedule only at the accumulation boundary. Our `step()` therefore only reports the
gradient norm the engine computed.

Launchers: under torchrun or `deepspeed --no_local_rank --module dist_train train ...` (both set RANK/WORLD_SIZE/
MASTER_*), `dist_train.distributed.init` has already started the process group and DeepSpeed adopts it. On one
process there is no group; DeepSpeed needs one, so a one-rank gloo group is created here.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from dist_train.errors import UsageError
from dist_train.recipe import Recipe
from dist_train.strategies.base import Strategy
from dist_train.strategies.buffers import keep_buffers_in_sync
from dist_train.strategies.parallelize import parallelize
from dist_train.strategies.sync_batchnorm import GlooSync

INSTALL = "DS_BUILD_OPS=0 pip install --no-build-isolation -c launch/constraints-cpu.txt 'dist-train[deepspeed]'"
CHECKPOINT_TAG = "deepspeed"  # the folder DeepSpeed writes inside the checkpoint directory it is given

# DeepSpeed keys generated from our config -> where the user sets them instead.
GENERATED = {
    "train_batch_size": "train.batch_size, train.grad_accum and the number of processes",
    "train_micro_batch_size_per_gpu": "train.batch_size",
    "gradient_accumulation_steps": "train.grad_accum",
    "gradient_clipping": "train.clip_grad_norm",
    "bf16": "train.precision",
    "fp16": "train.precision",
    "optimizer": "the optimizer section",
    "scheduler": "the scheduler section",
    "zero_optimization.stage": "deepspeed.zero_stage",
    "zero_optimization.offload_optimizer": "deepspeed.offload_optimizer",
}


def import_deepspeed():
    try:
        import deepspeed
    except ModuleNotFoundError as e:
        if e.name != "deepspeed":
            raise UsageError(f"strategy: deepspeed failed to import: {e}; reinstall it: {INSTALL}") from None
        raise UsageError(f"strategy: deepspeed is not installed; install it with: {INSTALL}") from None
    except ImportError as e:
        raise UsageError(f"strategy: deepspeed failed to import: {e}; reinstall it: {INSTALL}") from None
    return deepspeed


def check_passthrough(extra: dict) -> None:
    zero = extra.get("zero_optimization", {})
    if not isinstance(zero, dict):
        raise UsageError(f"deepspeed.config.zero_optimization: expected a mapping of ZeRO keys, got {zero!r}")
    for key, ours in GENERATED.items():
        section, _, sub = key.partition(".")
        node = extra.get(section)
        if (sub and isinstance(node, dict) and sub in node) or (not sub and section in extra):
            raise UsageError(
                f"deepspeed.config.{key}: generated from {ours}; set it there, not in deepspeed.config"
            )


def deepspeed_config(config, layout) -> dict:
    """The DeepSpeed config from ours and the trainer's batch layout (which, on a resume that keeps the global
    batch on another world size, has another grad_accum than the config says)."""
    train, ds = config.train, config.deepspeed
    zero = {"stage": ds.zero_stage}
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    generated = {
        "train_micro_batch_size_per_gpu": layout.batch_size,
        "gradient_accumulation_steps": layout.grad_accum,
        "train_batch_size": layout.global_batch,
        "gradient_clipping": train.clip_grad_norm or 0.0,
        "bf16": {"enabled": train.precision == "bf16"},
        "fp16": {"enabled": train.precision == "fp16"},
        "zero_optimization": zero,
        # Our optimizer is a plain torch one: DeepSpeed must accept it under ZeRO and with offload.
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 2**31 - 1,  # our trackers log; keep DeepSpeed's own progress lines quiet
    }
    merged = {**generated, **{k: v for k, v in ds.config.items() if k != "zero_optimization"}}
    merged["zero_optimization"] = {**ds.config.get("zero_optimization", {}), **zero}
    return merged


def batchnorm_in_fp32(model: nn.Module) -> None:
    """BatchNorm computed in fp32 under DeepSpeed's bf16/fp16. DeepSpeed casts every parameter to the training
    dtype but keeps buffers in fp32 (engine._cast_module_mixed_precision), and `batch_norm` refuses a bf16 weight
    next to fp32 running statistics ("expected scalar type BFloat16 but found Float"). Here each BatchNorm casts
    its input and weights up and its output back down, so it normalises in fp32 with fp32 statistics as it does
    under ddp's autocast and fsdp's fp32 policy for these layers. The forward is torch's _BatchNorm.forward with
    those casts (synchronised BatchNorm keeps its own, which computes in fp64)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, (nn.SyncBatchNorm, GlooSync)):
            module.forward = functools.partial(_batchnorm_fp32_forward, module)


def _batchnorm_fp32_forward(bn: nn.modules.batchnorm._BatchNorm, input: torch.Tensor) -> torch.Tensor:
    bn._check_input_dim(input)
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    use_running = not bn.training or bn.track_running_stats
    weight = None if bn.weight is None else bn.weight.float()
    bias = None if bn.bias is None else bn.bias.float()
    out = F.batch_norm(input.float(), bn.running_mean if use_running else None,
                       bn.running_var if use_running else None, weight, bias, batch_stats, factor, bn.eps)
    return out.to(input.dtype)


class DeepSpeedStrategy(Strategy):
    name = "deepspeed"

    def check(self) -> None:
        super().check()
        check_passthrough(self.config.deepspeed.config)
        if self.config.checkpoint.dir and "://" in self.config.checkpoint.dir:
            # DeepSpeed writes its files itself, with local paths only.
            raise UsageError(f"checkpoint.dir: '{self.config.checkpoint.dir}' is an object store, which DeepSpeed "
                             "cannot write to; use a (shared) folder with strategy deepspeed")
        if self.config.train.on_nan == "skip":
            # The engine steps inside its own backward/step pair; there is no point at which to drop one update.
            raise UsageError("train.on_nan: skip is not supported with strategy deepspeed; use stop")
        if self.device.type == "cpu":
            os.environ.setdefault("DS_ACCELERATOR", "cpu")  # skip DeepSpeed's accelerator probing
        import_deepspeed()

    def describe(self) -> str:
        ds = self.config.deepspeed
        return f"deepspeed (ZeRO stage {ds.zero_stage}{', optimizer offload to cpu' if ds.offload_optimizer else ''})"

    def setup(self, model: nn.Module, recipe: Recipe, layout) -> None:
        deepspeed = import_deepspeed()
        self.layout = layout
        if not dist.is_initialized():
            os.environ.setdefault("LOCAL_RANK", "0")  # DeepSpeed asserts a launcher set it
            dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        # DeepSpeed's ZeRO calls the collectives torch renamed; the warning would repeat every step.
        warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)
        model = self.prepare(model)
        # Checkpointing and compile before wrapping, as for ddp/fsdp (see parallelize.py).
        parallelize(model, recipe.fsdp_units(model), ac_every=self.ac_every,
                    compile_modules=[model] if self.config.train.compile else None)
        if self.config.train.precision != "fp32":
            batchnorm_in_fp32(model)
        self.build_optimizer(model)
        keep_buffers_in_sync(model)  # DeepSpeed leaves each rank's BatchNorm statistics its own (see buffers.py)
        self.model, _, _, _ = deepspeed.initialize(
            model=model, optimizer=self.optimizer, lr_scheduler=self.scheduler,
            config=deepspeed_config(self.config, layout),
        )

    # autocast: the base class's. With bf16 DeepSpeed holds the module in bf16 (fp32 master weights in its
    # optimizer) but leaves inputs alone; autocast casts them and keeps loss-type ops (mse, cross-entropy) in fp32.

    def backward(self, loss: torch.Tensor) -> None:
        self.model.backward(loss, scale_wrt_gas=False)  # the loop already divided by grad_accum
        self.model.step()  # counts the micro-step; reduces and updates only at the accumulation boundary

    def step(self) -> torch.Tensor | None:
        if self.config.train.clip_grad_norm is None:
            return None
        norm = self.model.get_global_grad_norm()
        return None if norm is None else torch.as_tensor(float(norm))

    @property
    def unwrapped_model(self) -> nn.Module:
        return self.model.module

    def num_parameters(self) -> int:
        # Under ZeRO-3 a parameter's local tensor is empty; `ds_numel` keeps its full size.
        return sum(getattr(p, "ds_numel", p.numel()) for p in self.unwrapped_model.parameters())

    def save_checkpoint(self, target) -> None:
        """Every rank calls this; DeepSpeed writes its own (sharded) files under <folder>/deepspeed/ (the
        checkpointer hashes them afterwards, each rank a share)."""
        self.model.save_checkpoint(str(target.location), tag=CHECKPOINT_TAG, save_latest=False)

    def load_checkpoint(self, location) -> None:
        from dist_train.checkpoint.safe_load import deepspeed_weights_only

        # DeepSpeed's loader calls torch.load(weights_only=False) on every file; forced to weights_only here.
        with deepspeed_weights_only():
            path, _ = self.model.load_checkpoint(str(location), tag=CHECKPOINT_TAG)
        if path is None:
            raise UsageError(f"checkpoint: no DeepSpeed checkpoint in '{Path(location) / CHECKPOINT_TAG}'")

    # ---------------------------------------------------------------- the EMA: this rank's own tensors

    @property
    def partitions_parameters(self) -> bool:
        return self.config.deepspeed.zero_stage == 3

    def ema_tensors(self) -> dict[str, torch.Tensor]:
        """Under ZeRO-3 a parameter's data is gathered only while its module runs; what the rank keeps (and the
        optimizer's update writes) is its flat partition `ds_tensor`. ZeRO 0-2 keep whole parameters."""
        tensors = super().ema_tensors()
        if self.partitions_parameters:
            for name, p in self.unwrapped_model.named_parameters():
                tensors[name] = p.ds_tensor
        return tensors

    def ema_tensors_written(self) -> None:
        """ZeRO-3 keeps small parameters gathered between steps (stage3_param_persistence_threshold) and gathers
        the others on use: free every gathered copy, then gather the persistent ones again from the partitions."""
        if not self.partitions_parameters:
            return
        from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

        params = list(self.unwrapped_model.parameters())
        available = [p for p in params if p.ds_status == ZeroParamStatus.AVAILABLE]
        if available:
            available[0].partition(available)
        persistent = self.model.optimizer.persistent_parameters
        if persistent:
            persistent[0].all_gather(persistent)

    def register_state(self, name: str, component, train_state) -> None:
        # DeepSpeed writes its own files; beside them goes the trainer's state: one copy from rank 0 when every
        # rank holds the same tensors, each rank's own partitions (rng_rank<R>.pt) under ZeRO-3.
        train_state.register(name, component, local=self.partitions_parameters)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        if self.partitions_parameters:
            return self.model._zero3_consolidated_16bit_state_dict() or {}
        return self.unwrapped_model.state_dict()

    @classmethod
    def has_ema(cls, location) -> bool:
        return _ema_shadows(Path(location)) is not None

    @classmethod
    def load_consolidated(cls, location, model: nn.Module, weights: str = "model") -> None:
        """Full fp32 weights in one process, for export. ZeRO 1-3 shard parameters/optimizer state across ranks:
        DeepSpeed's own zero_to_fp32 reassembles them. Stage 0 keeps the whole model in one file. The EMA: one
        shadow in the trainer's state, or under ZeRO-3 one shadow of partitions per rank, reassembled here."""
        if weights == "ema":
            shadows = _ema_shadows(Path(location))
            if shadows is None:
                raise UsageError(f"checkpoint: {location} has no EMA weights (train.ema was off)")
            model.load_state_dict(_assemble(shadows, model), strict=False)
            return
        import_deepspeed()
        from dist_train.checkpoint.safe_load import InvalidCheckpoint, deepspeed_weights_only, torch_load

        files = Path(location) / CHECKPOINT_TAG
        if any(files.glob("*optim_states.pt")):
            from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

            with deepspeed_weights_only():
                state = get_fp32_state_dict_from_zero_checkpoint(str(location), tag=CHECKPOINT_TAG)
        else:
            name = f"{CHECKPOINT_TAG}/mp_rank_00_model_states.pt"
            try:
                state = torch_load(Path(location) / name, name)["module"]
            except (InvalidCheckpoint, KeyError, TypeError) as e:
                raise UsageError(f"checkpoint: cannot read DeepSpeed model states in '{files}': {e}") from None
        model.load_state_dict(state)

    def teardown(self) -> None:
        if self.model is not None:
            self.model.destroy()  # releases DeepSpeed's hooks and buffers while the process group still exists
        super().teardown()


def _ema_shadows(directory: Path) -> list[dict] | None:
    """The EMA shadows of a checkpoint, one per rank file that holds one (rank order), or None."""
    from dist_train.checkpoint.manager import TRAINER_STATE

    from dist_train.checkpoint.safe_load import torch_load

    shared = torch_load(directory / TRAINER_STATE, TRAINER_STATE)
    ema = shared.get("components", {}).get("ema")
    if ema is not None:
        return [ema["shadow"]] if ema.get("started", True) else None
    files = sorted(directory.glob("rng_rank*.pt"), key=lambda p: int(p.stem.removeprefix("rng_rank")))
    local = [torch_load(f, f.name).get("local", {}).get("ema") for f in files]
    if not local or local[0] is None or not local[0].get("started", True):
        return None
    return [state["shadow"] for state in local]


def _assemble(shadows: list[dict], model: nn.Module) -> dict[str, torch.Tensor]:
    """Whole tensors from per-rank ZeRO-3 partitions: a parameter's partitions are consecutive, equal-sized
    slices of its flattened data (the last one padded), in rank order; buffers are whole on every rank."""
    full = {}
    for name, target in {**dict(model.named_parameters()), **dict(model.named_buffers())}.items():
        if name not in shadows[0]:
            continue
        if len(shadows) == 1 or shadows[0][name].shape == target.shape:
            full[name] = shadows[0][name]
        else:
            flat = torch.cat([s[name].reshape(-1) for s in shadows])[: target.numel()]
            full[name] = flat.view(target.shape)
    return full
