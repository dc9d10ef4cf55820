"""The training loop: one file, read top to bottom.

`run(config)` finds this process's place in the job (cluster environment), starts the process group, builds the
recipe's model and data, hands the model to the chosen strategy, and trains for `train.max_steps` optimizer steps.
Everything distributed lives behind three seams: the cluster environment (who am I), the strategy (how the model
is wrapped and stepped) and the trackers (where metrics go). The loop itself never branches on any of them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dist_train import cluster, distributed
from dist_train.config import Config, to_yaml
from dist_train.data import BatchLayout, eval_batches, seed_everything, steps_per_epoch, to_device, train_batches
from dist_train.errors import UsageError
from dist_train.metrics import Mean
from dist_train.preemption import Preemption
from dist_train.recipe import Recipe, resolve_recipe
from dist_train.strategies import build_strategy
from dist_train.tracking import NoTracker, Trackers
from dist_train.tracking.console import ConsoleTracker
from dist_train.tracking.jsonl import JsonlTracker


@dataclass
class RunResult:
    steps: int = 0
    last_loss: float = math.nan
    eval: dict[str, float] = field(default_factory=dict)
    preempted: str = ""  # what happened when a preemption signal stopped the run early (see dist_train.preemption)


def run(config: Config) -> RunResult:
    env = cluster.detect()
    device = pick_device(config.train.device, env)
    trainer = None
    distributed.init(env, device)
    try:
        trainer = Trainer(config, env, device)
        result = trainer.fit()
    finally:
        distributed.shutdown(release=trainer.release if trainer else None)
    if result.preempted:
        trainer.preemption.requeue()  # last: requeueing stops this job, so everything is closed first
    return result


def pick_device(requested: str, env) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise UsageError("train.device: 'cuda' requested but no CUDA device is available; use auto or cpu")
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        torch.cuda.set_device(env.local_rank)
        return torch.device("cuda", env.local_rank)
    return torch.device("cpu")


class Trainer:
    def __init__(self, config: Config, env, device: torch.device):
        self.config, self.env, self.device = config, env, device
        self.preemption = Preemption()  # first: a signal during setup must not kill the process
        train = config.train
        self.layout = BatchLayout(train.batch_size, train.grad_accum, env.world_size, env.rank)
        self.strategy = build_strategy(config, env, device)
        self.strategy.check()

        # Same seed on every rank while building: the model starts identical everywhere (FSDP does not broadcast it)
        # and identical across world sizes, so runs on 1 and N processes are comparable step for step.
        seed_everything(config.seed)
        self.recipe: Recipe = resolve_recipe(config.recipe)(config)
        self.train_data, self.eval_data = self.recipe.build_datasets()
        self.steps_per_epoch = steps_per_epoch(len(self.train_data), self.layout.global_batch)
        if self.steps_per_epoch == 0:
            raise UsageError(
                f"train.batch_size: global batch {train.batch_size} x grad_accum {train.grad_accum} x world size "
                f"{env.world_size} = {self.layout.global_batch} exceeds the {len(self.train_data)} training samples; "
                "lower train.batch_size or grad_accum, or use fewer processes"
            )
        self.strategy.setup(self.recipe.build_model())
        # From here on randomness (dropout, augmentation) must differ between ranks, or every rank would draw the
        # same masks for different samples.
        seed_everything(config.seed + 1000 * (env.rank + 1))

        self.run_dir = Path(config.run_dir)
        self.trackers = self._open_trackers() if env.is_main else NoTracker()
        self.start_step = 0

    def _open_trackers(self) -> Trackers:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(to_yaml(self.config))
        except OSError as e:
            raise UsageError(f"run_dir: cannot write to '{self.run_dir}': {e.strerror}") from None
        return Trackers([JsonlTracker(self.run_dir / "metrics.jsonl"), ConsoleTracker(self.config.train.max_steps)])

    def fit(self) -> RunResult:
        cfg, train = self.config, self.config.train
        strategy, recipe = self.strategy, self.recipe
        accum = train.grad_accum
        distributed.print0(
            f"recipe {cfg.recipe} | strategy {strategy.describe()} | world size {self.env.world_size} | "
            f"device {self.device.type} | global batch {train.batch_size} x {accum} x {self.env.world_size} = "
            f"{self.layout.global_batch} | {self.steps_per_epoch} steps/epoch | "
            f"{sum(p.numel() for p in strategy.unwrapped_model.parameters()):,} parameters"
        )
        result = RunResult(steps=self.start_step)
        batches = train_batches(
            self.train_data, self.layout, cfg.seed,
            start_epoch=self.start_step // self.steps_per_epoch,
            start_step_in_epoch=self.start_step % self.steps_per_epoch,
            num_workers=cfg.data.num_workers,
        )
        strategy.model.train()
        window_start, window_steps = time.perf_counter(), 0
        for step in range(self.start_step + 1, train.max_steps + 1):  # `step` counts optimizer steps, from 1
            epoch, _, micro_batches = next(batches)
            step_loss = torch.zeros((), device=self.device)
            for i, batch in enumerate(micro_batches):
                batch = to_device(batch, self.device)
                with strategy.micro_step(is_last=i == accum - 1):
                    with strategy.autocast():
                        loss = recipe.loss(recipe.forward(strategy.model, batch), batch)
                    # Each micro-batch is 1/accum of this rank's share: summing loss/accum gradients gives the
                    # gradient of the mean over the rank's samples; the strategy then averages over ranks.
                    strategy.backward(loss / accum)
                step_loss += loss.detach().float()
            grad_norm = strategy.step()
            window_steps += 1

            if step % train.log_every == 0 or step == train.max_steps:
                # The only host sync of a step, and only on log steps: .item() waits for the device.
                loss_value = distributed.mean_across_ranks(step_loss / accum).item()
                elapsed = time.perf_counter() - window_start
                metrics = {
                    "loss": loss_value,
                    "lr": strategy.lr,
                    "epoch": epoch,
                    "samples_per_s": self.layout.global_batch * window_steps / elapsed,
                    "step_time_s": elapsed / window_steps,
                }
                if grad_norm is not None:
                    metrics["grad_norm"] = float(grad_norm)
                self.trackers.log(metrics, step)
                result.last_loss = loss_value
                window_start, window_steps = time.perf_counter(), 0
            if self.eval_data is not None and (step % train.eval_every == 0 or step == train.max_steps):
                result.eval = self.evaluate()
                self.trackers.log({f"eval/{k}": v for k, v in result.eval.items()}, step)
                window_start = time.perf_counter()  # keep eval time out of the throughput figure
            result.steps = step
            if step < train.max_steps and self.preemption.requested():  # all ranks agree, so all stop here
                self.save_checkpoint(step)
                result.preempted = self.preemption.saved(step)
                break
        self.trackers.close()
        return result

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        model, recipe = self.strategy.model, self.recipe
        model.eval()
        metrics = {"loss": Mean(), **recipe.metrics()}
        for batch, valid in eval_batches(self.eval_data, self.config.eval_batch_size, self.env.rank, self.env.world_size):
            batch = to_device(batch, self.device)
            with self.strategy.autocast():
                outputs = recipe.forward(model, batch)
                loss = recipe.loss(outputs, batch)
            if not valid:
                continue  # a padding batch: ran only so that sharded models see the same collectives on every rank
            n = len(batch[0])
            metrics["loss"].update(loss.detach().float().expand(n))
            for name, metric in metrics.items():
                if name != "loss":
                    metric.update(outputs.float(), batch[-1])
        model.train()
        # Sum the statistics of every rank first, then divide: exact whatever each rank saw.
        stats = torch.cat([m.stats for m in metrics.values()]).to(self.device)
        stats = distributed.all_reduce_(stats).cpu()
        values, offset = {}, 0
        for name, metric in metrics.items():
            size = metric.stats.numel()
            values[name] = metric.compute(stats[offset: offset + size])
            offset += size
        return values

    def release(self) -> None:
        """Drop wrapped model and optimizer before the process group goes (see dist_train.distributed)."""
        self.strategy.teardown()
        self.trackers.close()
        self.preemption.close()
