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

import os
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from dist_train.errors import UsageError
from dist_train.optim import build_optimizer, build_scheduler
from dist_train.recipe import Recipe
from dist_train.strategies.base import Strategy
from dist_train.strategies.transforms import apply_compile

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


class DeepSpeedStrategy(Strategy):
    name = "deepspeed"

    def check(self) -> None:
        super().check()
        check_passthrough(self.config.deepspeed.config)
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
        model = model.to(self.device)
        if self.config.train.compile:
            apply_compile([model])  # before wrapping, as for ddp/fsdp (see transforms.py)
        self.optimizer = build_optimizer(model.parameters(), self.config.optimizer)
        self.scheduler = build_scheduler(self.optimizer, self.config.scheduler, self.config.train.max_steps)
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

    def save_checkpoint(self, directory: Path) -> None:
        """Every rank calls this; DeepSpeed writes its own (sharded) files under directory/deepspeed/."""
        self.model.save_checkpoint(str(directory), tag=CHECKPOINT_TAG, save_latest=False)

    def load_checkpoint(self, directory: Path) -> None:
        path, _ = self.model.load_checkpoint(str(directory), tag=CHECKPOINT_TAG)
        if path is None:
            raise UsageError(f"checkpoint: no DeepSpeed checkpoint in '{directory / CHECKPOINT_TAG}'")

    @classmethod
    def load_consolidated(cls, directory: Path, model: nn.Module) -> None:
        """Full fp32 weights in one process, for export. ZeRO 1-3 shard parameters/optimizer state across ranks:
        DeepSpeed's own zero_to_fp32 reassembles them. Stage 0 keeps the whole model in one file."""
        import_deepspeed()
        files = directory / CHECKPOINT_TAG
        if any(files.glob("*optim_states.pt")):
            from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

            state = get_fp32_state_dict_from_zero_checkpoint(str(directory), tag=CHECKPOINT_TAG)
        else:
            try:
                state = torch.load(files / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=True)["module"]
            except Exception as e:
                raise UsageError(f"checkpoint: cannot read DeepSpeed model states in '{files}': {e}") from None
        model.load_state_dict(state)

    def teardown(self) -> None:
        if self.model is not None:
            self.model.destroy()  # releases DeepSpeed's hooks and buffers while the process group still exists
        super().teardown()
