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
import torch.distributed as dist

from dist_train import cluster, distributed, test_hooks
from dist_train.checkpoint import Checkpointer, Manifest, model_signature
from dist_train.checkpoint.resume import data_position, keep_global_batch
from dist_train.config import Config, resolved_dict, to_yaml
from dist_train.data import BatchLayout, eval_batches, seed_everything, to_device
from dist_train.data.loading import build_train_loader
from dist_train.early_stopping import EarlyStopping
from dist_train.errors import RunError, UsageError
from dist_train.metrics import Mean, reduce_metrics
from dist_train.preemption import Preemption
from dist_train.recipe import Recipe, resolve_recipe
from dist_train.strategies import build_strategy
from dist_train.tracking import NoTracker, Trackers
from dist_train.tracking.sinks import open_trackers
from dist_train.token_weighted import StepLoss
from dist_train.tracking.throughput import Throughput, peak_flops


@dataclass
class RunResult:
    steps: int = 0
    last_loss: float = math.nan
    eval: dict[str, float] = field(default_factory=dict)
    preempted: str = ""  # what happened when a preemption signal stopped the run early (see dist_train.preemption)
    stopped_early: bool = False


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
        self.run_dir = Path(config.run_dir)
        # The W&B run id: restored from a checkpoint (before trackers open), else read from run_dir or created
        # by the W&B tracker; stored in checkpoints so a resumed job continues the same W&B run.
        self.tracking_run_id: str | None = None
        self.checkpointer = Checkpointer(config.checkpoint, self.run_dir / "checkpoints", env)
        resume = self.checkpointer.find_resume()
        if resume is not None:
            self.layout = keep_global_batch(resume, self.layout)
            train.grad_accum = self.layout.grad_accum  # config.yaml of the run then says what actually ran

        # Same seed on every rank while building: the model starts identical everywhere (FSDP does not broadcast it)
        # and identical across world sizes, so runs on 1 and N processes are comparable step for step.
        seed_everything(config.seed)
        self.recipe: Recipe = resolve_recipe(config.recipe)(config)
        self.train_data, self.eval_data = self.recipe.build_datasets()
        # Map-style data resumes by arithmetic; a streaming source (steps_per_epoch None) by its loader's state.
        self.loader = build_train_loader(self.train_data, self.layout, config.seed, config.data, device)
        self.steps_per_epoch = self.loader.steps_per_epoch
        if self.steps_per_epoch == 0:
            raise UsageError(
                f"train.batch_size: global batch {train.batch_size} x grad_accum {train.grad_accum} x world size "
                f"{env.world_size} = {self.layout.global_batch} exceeds the {len(self.train_data)} training samples; "
                "lower train.batch_size or grad_accum, or use fewer processes"
            )
        model = self.recipe.build_model()
        self.model_signature = model_signature(model)
        self.strategy.setup(model, self.recipe)
        # EMA of the weights (and buffers, so BatchNorm statistics follow), kept next to the trained model and used
        # for evaluation when enabled. Checkpoints carry its state_dict (n_averaged included).
        self.ema = None
        if train.ema is not None:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.strategy.unwrapped_model, multi_avg_fn=get_ema_multi_avg_fn(train.ema),
                                     use_buffers=True)
        self.early_stopping = None
        if train.early_stopping is not None:
            if self.eval_data is None:
                raise UsageError(f"train.early_stopping: recipe {config.recipe} has no eval dataset to stop on")
            self.early_stopping = EarlyStopping(train.early_stopping, ["loss", *self.recipe.metrics()])
        # From here on randomness (dropout, augmentation) must differ between ranks, or every rank would draw the
        # same masks for different samples.
        seed_everything(config.seed + 1000 * (env.rank + 1))

        # Where the data stands after the last finished step: (epoch, samples of it consumed).
        self.start_step, self.position = 0, (0, 0)
        if resume is not None:
            state = self.checkpointer.load(resume, self.strategy, self.model_signature)
            self.start_step, self.tracking_run_id = state["step"], state["tracking_run_id"]
            self.position = (state["epoch"], state["samples_in_epoch"])
            if state.get("data") is not None:
                self.loader.load_state_dict(state["data"])
            if self.ema is not None and state.get("ema") is not None:
                self.ema.load_state_dict(state["ema"])
        # Resume happens before the trackers open, so that they continue the run (metrics.jsonl, the W&B run id).
        self.trackers = self._open_trackers() if env.is_main else NoTracker()
        # (step, loss tensor) of the steps since the last non-finite check: train.on_nan=stop reads them only at
        # log and save steps, so detection costs no device op and no host sync per step.
        self.unchecked_losses: list[tuple[int, torch.Tensor]] = []
        self.kill_point = test_hooks.KillPoint(env.rank, env.restart_count)

    def _open_trackers(self) -> Trackers:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(to_yaml(self.config))
        except OSError as e:
            raise UsageError(f"run_dir: cannot write to '{self.run_dir}': {e.strerror}") from None
        resumed = self.start_step if self.start_step else None
        trackers, self.tracking_run_id = open_trackers(self.config, self.run_dir, self.tracking_run_id, resumed)
        return trackers

    def fit(self) -> RunResult:
        cfg, train = self.config, self.config.train
        strategy, recipe, layout = self.strategy, self.recipe, self.layout
        accum = layout.grad_accum
        distributed.print0(
            f"recipe {cfg.recipe} | strategy {strategy.describe()} | world size {self.env.world_size} | "
            f"device {self.device.type} | global batch {train.batch_size} x {accum} x {self.env.world_size} = "
            f"{layout.global_batch} | {self.steps_per_epoch or 'streaming, ?'} steps/epoch | "
            f"{strategy.num_parameters():,} parameters"
        )
        result = RunResult(steps=self.start_step)
        if self.start_step >= train.max_steps:
            distributed.print0(f"checkpoint: step {self.start_step} already reached train.max_steps={train.max_steps}; "
                               "nothing to train (raise train.max_steps, or checkpoint.resume=never to start over)")
        if self.steps_per_epoch is not None:
            self.loader.seek(*data_position(self.position, layout.global_batch, self.steps_per_epoch))
        batches = self.loader.batches()
        every, stop_after = cfg.checkpoint.every, test_hooks.stop_after_step()
        strategy.model.train()
        peak = peak_flops(self.device, cfg.tracking.peak_tflops)
        meter = Throughput(self.layout.global_batch, self.env.world_size, self.device, recipe, peak)
        self.trackers.begin(self.start_step)
        for step in range(self.start_step + 1, train.max_steps + 1):  # `step` counts optimizer steps, from 1
            wait_start = time.perf_counter()
            epoch, step_in_epoch, micro_batches = next(batches)
            meter.data_wait_s += time.perf_counter() - wait_start
            losses = StepLoss(accum, self.device, self.l1_penalty if train.l1 else None)
            for i, batch in enumerate(micro_batches):
                self.kill_point.reached(f"micro{i}", step)
                meter.add_tokens(batch)
                batch = to_device(batch, self.device)
                with strategy.micro_step(is_last=i == accum - 1):
                    with strategy.autocast():
                        loss = recipe.loss(recipe.forward(strategy.model, batch), batch)
                    # A mean loss backpropagates loss/accum (summed over micro-steps: the gradient of the mean over
                    # the rank's samples; the strategy then averages over ranks); a (sum, count) loss its sum,
                    # divided by the global count in losses.finish (dist_train.token_weighted).
                    strategy.backward(losses.add(loss))
            step_loss = losses.finish(strategy, self.env.world_size)
            grad_norm = None
            if train.on_nan == "skip":
                # The one per-step host sync of this policy: every rank must take the same branch before the
                # optimizer step, so a tiny all-reduce of "was my loss finite" is read each step.
                if distributed.any_across_ranks(not bool(torch.isfinite(step_loss)), self.device):
                    strategy.skip_step()
                    distributed.print0(f"step {step}: non-finite loss on some rank; optimizer step skipped")
                else:
                    grad_norm = strategy.step()
            else:
                self.unchecked_losses.append((step, step_loss))  # `stop`: checked at the next log/save step
                grad_norm = strategy.step()
            meter.steps += 1
            self.position = (epoch, (step_in_epoch + 1) * layout.global_batch)
            if self.ema is not None:
                self.ema.update_parameters(strategy.unwrapped_model)

            if step % train.log_every == 0 or step == train.max_steps:
                self.raise_if_diverged()
                # Host syncs (.item() waits for the device) happen only on log steps, here and just above.
                loss_value = distributed.mean_across_ranks(step_loss).item()
                metrics = {"loss": loss_value, "lr": strategy.lr, "epoch": epoch, **meter.collect()}
                if grad_norm is not None:
                    metrics["grad_norm"] = float(grad_norm)
                self.trackers.log(metrics, step)
                result.last_loss = loss_value
                meter.restart()
            if self.eval_data is not None and (step % train.eval_every == 0 or step == train.max_steps):
                result.eval = self.evaluate()
                self.trackers.log({f"eval/{k}": v for k, v in result.eval.items()}, step)
                meter.restart()  # keep eval time out of the throughput figures
                if self.early_stopping is not None and self.early_stopping.should_stop(result.eval):
                    result.stopped_early = True
                    es = train.early_stopping
                    distributed.print0(f"early stopping at step {step}: eval {es.metric} has not improved on "
                                       f"{self.early_stopping.best:.6g} for {es.patience} evaluations")
            result.steps = step
            if step == train.max_steps or step == stop_after or result.stopped_early:
                self.save_checkpoint(step)
                break
            if self.preemption.requested():  # all ranks agree, so all stop here
                self.save_checkpoint(step)
                result.preempted = self.preemption.saved(step)
                break
            if every and step % every == 0:
                self.save_checkpoint(step, blocking=False)
                meter.restart()  # keep the save out of the throughput figures
        self.checkpointer.wait()
        self._finish(result)
        return result

    def _finish(self, result: RunResult) -> None:
        if self.ema is not None and self.env.is_main:
            # The final EMA weights, next to the run (a plain state_dict: load with model.load_state_dict).
            torch.save(self.ema.module.state_dict(), self.run_dir / "ema_model.pt")
        model = self.ema.module if self.ema is not None else self.strategy.unwrapped_model
        model.eval()
        with torch.no_grad():
            self.recipe.on_train_end(model, result.eval)
        self.strategy.model.train()
        self.trackers.close()

    @property
    def eval_model(self) -> torch.nn.Module:
        """What evaluation runs: the EMA of the weights when train.ema is set, else the trained model."""
        return self.ema.module if self.ema is not None else self.strategy.model

    def l1_penalty(self) -> torch.Tensor:
        params = [p for p in self.strategy.unwrapped_model.parameters() if p.requires_grad]
        return self.config.train.l1 * torch.stack([p.abs().sum() for p in params]).sum()

    def save_checkpoint(self, step: int, blocking: bool = True) -> None:
        """Checkpoint the state after optimizer step `step`. Call on every rank at a step boundary (the loop does;
        so can a preemption handler). Blocking: returns once the checkpoint is committed; otherwise, with
        checkpoint.async, once the state is copied and the write goes on in the background."""
        self.raise_if_diverged()  # never a checkpoint of a diverged state
        epoch, samples_in_epoch = self.position
        client_state = {"step": step, "epoch": epoch, "samples_in_epoch": samples_in_epoch,
                        "global_batch": self.layout.global_batch, "tracking_run_id": self.tracking_run_id,
                        # A streaming loader's position, every rank's (a collective); None for map-style data.
                        "data": self.loader.state_dict(),
                        # The EMA is replicated (identical on every rank): it travels with the client state.
                        "ema": self.ema.state_dict() if self.ema is not None else None}
        manifest = Manifest(
            step=step, recipe=self.config.recipe, model=self.model_signature, world_size=self.env.world_size,
            batch_size=self.layout.batch_size, grad_accum=self.layout.grad_accum,
            global_batch=self.layout.global_batch, strategy=self.strategy.name, config=resolved_dict(self.config),
        )
        self.checkpointer.save(step, self.strategy, client_state, manifest, blocking=blocking)
        if blocking:
            self.checkpointer.wait()

    def raise_if_diverged(self) -> None:
        """train.on_nan=stop: end the run on every rank alike if any rank saw a non-finite loss."""
        if self.config.train.on_nan != "stop":
            return
        first_bad = torch.full((), math.inf, dtype=torch.float64, device=self.device)
        if self.unchecked_losses:
            steps = torch.tensor([s for s, _ in self.unchecked_losses], dtype=torch.float64, device=self.device)
            finite = torch.isfinite(torch.stack([loss for _, loss in self.unchecked_losses]))
            first_bad = torch.where(finite, first_bad, steps).min()
            self.unchecked_losses.clear()
        bad = distributed.all_reduce_(first_bad, dist.ReduceOp.MIN).item()
        if math.isfinite(bad):
            done = self.checkpointer.complete()
            raise RunError(
                f"train.on_nan=stop: the loss was not finite (nan/inf) at step {int(bad)}; stopped without saving "
                f"that state (last checkpoint: {done[-1] if done else 'none'}). Lower optimizer.lr, enable "
                "train.clip_grad_norm, or set train.on_nan=skip"
            )

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        model, recipe = self.eval_model, self.recipe
        model.eval()
        metrics = {"loss": Mean(), **recipe.metrics()}
        for batch, valid in eval_batches(self.eval_data, self.config.eval_batch_size, self.env.rank, self.env.world_size):
            batch = to_device(batch, self.device)
            with self.strategy.autocast():
                outputs = recipe.forward(model, batch)
                loss = recipe.loss(outputs, batch)
            if not valid:
                continue  # a padding batch: ran only so that sharded models see the same collectives on every rank
            if isinstance(loss, (tuple, list)):  # token-weighted: the eval loss is sum / count over the whole set
                metrics["loss"].add(loss[0], loss[1])
            else:
                metrics["loss"].update(loss.detach().float().expand(len(batch[0])))
            for name, metric in metrics.items():
                if name != "loss":
                    metric.update(outputs.float(), batch[-1])
        self.strategy.model.train()
        # Combine the statistics of every rank first, then divide: exact whatever each rank saw.
        return reduce_metrics(metrics, self.device)

    def release(self) -> None:
        """Drop wrapped model and optimizer before the process group goes (see dist_train.distributed)."""
        self.strategy.teardown()
        self.trackers.close()
        self.preemption.close()
