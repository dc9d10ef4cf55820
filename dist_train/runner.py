"""The training loop: one file, read top to bottom.

`run(config)` finds this process's place in the job (cluster environment), starts the process group, builds the
recipe's model and data, hands the model to the chosen strategy, and trains for `train.max_steps` optimizer steps.
Everything distributed lives behind three seams: the cluster environment (who am I), the strategy (how the model
is wrapped and stepped) and the trackers (where metrics go); everything optional (EMA, early stopping, profiling,
fault injection, a user's own logic) is a callback (dist_train.callbacks). The loop never branches on any of them.
What a resumed run needs is one object, `self.state` (dist_train.train_state.TrainState), saved by the
checkpointer beside the strategy's model and optimizer.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from dist_train import cluster, distributed, recipe_checks, run_dir_lock
from dist_train.callbacks.standard import build_callbacks
from dist_train.checkpoint import Checkpointer, Manifest, model_signature
from dist_train.checkpoint.resume import batch_layout, data_position
from dist_train.config import Config, resolved_dict, to_yaml, warnings_for
from dist_train.data import seed_everything, to_device
from dist_train.data.loading import build_train_loader
from dist_train.divergence import NonFiniteLosses, skip_limit_error
from dist_train.errors import RunError, UsageError
from dist_train.evaluation import evaluate
from dist_train.log_step import log_step_figures, stop_check_every
from dist_train.parallel_dims import check_parallel
from dist_train.preemption import Preemption
from dist_train.recipe import Recipe, resolve_recipe
from dist_train.strategies import build_strategy
from dist_train.token_weighted import StepLoss
from dist_train.tracking import NoTracker, Trackers
from dist_train.tracking.goodput import Goodput, shares
from dist_train.tracking.run_record import RunRecord
from dist_train.tracking.sinks import open_trackers
from dist_train.tracking.throughput import Throughput, peak_flops
from dist_train.train_state import TrainState
from dist_train.watchdog import enable_flight_recorder


@dataclass
class RunResult:
    steps: int = 0
    last_loss: float = math.nan
    eval: dict[str, float] = field(default_factory=dict)
    preempted: str = ""  # what happened when a stop signal ended the run early (see dist_train.preemption)
    exit_code: int = 0  # of the process, when a stop signal ended the run (130 after Ctrl-C)
    stopped: str = ""  # why a callback ended the run before train.max_steps (early stopping, a test's stop)
    complete_before: str = ""  # the run had already finished when this process started: nothing was trained
    elapsed_s: float = 0.0  # wall time of this process's run, set-up included
    skipped_steps: int = 0  # optimizer steps dropped by train.on_nan=skip, resumes included


def run(config: Config, started: float | None = None) -> RunResult:
    """`started`: the `time.perf_counter()` reading the attempt's start-up counts from (goodput); `dist-train
    train` passes its process's start, a run started from Python counts from here."""
    started = time.perf_counter() if started is None else started
    env = cluster.detect()
    device = pick_device(config.train.device, env)
    check_parallel(config, env.world_size)  # a bad mesh shape fails here, before any process group work
    trainer = lock = None
    if config.watchdog.timeout_s is not None:
        enable_flight_recorder()  # before the process group exists: the watchdog's record of collectives
    distributed.init(env, device, config.distributed.timeout_s)
    try:
        # Before anything reads or writes run_dir (resume removes unfinished saves): one run per run_dir.
        lock = run_dir_lock.acquire(config.run_dir, config.run_dir_lock.stale_after, env)
        trainer = Trainer(config, env, device, started)
        result = trainer.fit()
    except BaseException as e:
        if trainer is not None:
            trainer.record_failure(e)
        raise
    finally:
        distributed.shutdown(release=trainer.release if trainer else None)
        if lock is not None:
            lock.release()  # last: the trackers have closed their files in run_dir
    return result


def pick_device(requested: str, env) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise UsageError("train.device: 'cuda' requested but no CUDA device is available; use auto or cpu")
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        torch.cuda.set_device(env.local_rank)
        return torch.device("cuda", env.local_rank)
    return torch.device("cpu")


class Trainer:
    def __init__(self, config: Config, env, device: torch.device, started: float | None = None):
        self.config, self.env, self.device = config, env, device
        self.preemption = Preemption()  # first: a signal during setup must not kill the process
        self.goodput = Goodput(started)  # start-up counts from `started` (default: now)
        self.meter: Throughput | None = None  # the log window's counters, while fit() runs
        self.strategy = build_strategy(config, env, device)
        self.strategy.check()
        self.run_dir = Path(config.run_dir)
        self.state = TrainState()
        self.stop_reason = ""  # set by request_stop: the loop saves and ends after the current step
        self.checkpointer = Checkpointer(config.checkpoint, self.run_dir / "checkpoints", env)
        resume = self.checkpointer.find_resume()
        # Over the data-parallel ranks: the ranks of one tensor-parallel group read the same batch.
        self.layout = batch_layout(config, env, resume)

        # Same seed on every rank while building: the model starts identical everywhere (FSDP does not broadcast it)
        # and identical across world sizes, so runs on 1 and N processes are comparable step for step.
        seed_everything(config.seed)
        self.recipe: Recipe = resolve_recipe(config.recipe)(config)
        self.train_data, self.eval_data = recipe_checks.build_datasets(self.recipe)
        # Map-style data resumes by arithmetic from state.epoch/samples_in_epoch; a streaming source
        # (steps_per_epoch None) from the loader's own state, which it registers with self.state.
        self.loader = build_train_loader(self.train_data, self.layout, config.seed, config.data, device)
        self.loader.register(self.state)
        self.steps_per_epoch = self.loader.steps_per_epoch
        if self.steps_per_epoch == 0:
            layout = self.layout
            raise UsageError(
                f"train.batch_size: global batch {layout.batch_size} x grad_accum {layout.grad_accum} x data-parallel "
                f"ranks {layout.world_size} = {layout.global_batch} exceeds the {len(self.train_data)} training "
                "samples; "
                "lower train.batch_size or grad_accum, or use fewer processes"
            )
        model = recipe_checks.build_model(self.recipe)
        self.model_signature = model_signature(model)
        self.strategy.setup(model, self.recipe, self.layout)
        self.callbacks = build_callbacks(config, self.recipe)
        self.callbacks.setup(self)  # stateful callbacks register with self.state before it is restored
        # From here on randomness (dropout, augmentation) must differ between ranks, or every rank would draw the
        # same masks for different samples.
        seed_everything(config.seed + 1000 * (env.rank + 1))
        if resume is not None:
            self.checkpointer.load(resume, self.strategy, self.state, self.model_signature)
        # A finished run is left as it is: no tracker opens, so its config.yaml and metrics.jsonl stay its record.
        self.complete_before = self._finished_message()
        # Resume happens before the trackers open, so that they continue the run (metrics.jsonl, the W&B run id).
        opened = env.is_main and not self.complete_before
        self.trackers = self._open_trackers() if opened else NoTracker()
        self.record = RunRecord(self.run_dir) if opened else None
        # train.on_nan=stop reads the losses only at log and save steps: no device op, no host sync per step.
        self.non_finite = NonFiniteLosses(device)
        # Steps between two preemption agreements (a collective, so only under several processes): every step until
        # the first log step has measured the step time, then `stop_check_every(step time)`.
        self.stop_check_every = 1
        self.skipped_in_a_row = 0  # train.on_nan=skip: steps skipped since the last applied one (this process)

    def _finished_message(self) -> str:
        step, max_steps = self.state.step, self.config.train.max_steps
        if self.state.finished_early:
            why = f"it stopped early ({self.state.finished_early})"
        elif step >= max_steps:
            why = f"it reached step {step} of train.max_steps={max_steps}"
        else:
            return ""
        return (f"run {self.run_dir} is complete: {why}; nothing to train. Raise train.max_steps to train on, or "
                "give another run_dir (or checkpoint.resume=never) to start over")

    def _open_trackers(self) -> Trackers:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(to_yaml(self.config))
        except OSError as e:
            raise UsageError(f"run_dir: cannot write to '{self.run_dir}': {e.strerror}") from None
        resumed = self.state.step if self.state.step else None
        trackers, self.state.tracking_run_id = open_trackers(self.config, self.run_dir, self.state.tracking_run_id,
                                                             resumed)
        return trackers

    def request_stop(self, reason: str, final: bool = False) -> None:
        """Ask the loop to save a checkpoint and end after the current step; call it on every rank alike.
        `final`: the run is finished for good (a relaunch has nothing to train), as after early stopping."""
        self.stop_reason = reason
        if final:
            self.state.finished_early = reason

    def fit(self) -> RunResult:
        cfg, train, state = self.config, self.config.train, self.state
        strategy, recipe, layout = self.strategy, self.recipe, self.layout
        accum = layout.grad_accum
        distributed.print0(
            f"recipe {cfg.recipe} | strategy {strategy.describe()} | world size {self.env.world_size} | "
            f"device {self.device.type} | global batch {layout.batch_size} x {accum} x {layout.world_size} = "
            f"{layout.global_batch} | {self.steps_per_epoch or 'streaming, ?'} steps/epoch | "
            f"{strategy.num_parameters():,} parameters"
        )
        if self.env.is_main:  # after every check: a run that fails to start shows its error line alone
            for warning in warnings_for(cfg):
                print(f"dist-train: warning: {warning}", file=sys.stderr, flush=True)
        if self.complete_before:
            distributed.print0(self.complete_before)
            return RunResult(steps=state.step, complete_before=self.complete_before)
        result = RunResult(steps=state.step)
        self.record_start()
        if self.eval_data is not None:
            # One eval forward on two samples now, so that a recipe whose eval breaks fails in seconds, not after
            # train.eval_every steps (dist_train.recipe_checks).
            recipe_checks.check_eval(recipe, strategy.model, self.eval_data, recipe.metrics(), strategy.autocast)
        if self.steps_per_epoch is not None:
            self.loader.seek(*data_position((state.epoch, state.samples_in_epoch), layout.global_batch,
                                            self.steps_per_epoch))
        batches = self.loader.batches()
        every = cfg.checkpoint.every
        callbacks = self.callbacks
        strategy.model.train()
        peak = peak_flops(self.device, cfg.tracking.peak_tflops)
        meter = self.meter = self.goodput.meter = Throughput(
            layout.global_batch, self.env.world_size, self.device, recipe, peak,
            readers_per_batch=self.env.world_size // layout.world_size)
        # CPU tensors for a CPU run: `.to(device)` would only return them, at a few microseconds per tensor.
        move = self.device.type != "cpu"
        l1_penalty = self.l1_penalty if train.l1 else None
        self.trackers.begin(state.step)
        callbacks.on_fit_start(self)
        first_step, last_step = state.step + 1, train.max_steps
        if self.preemption.before_first_step():  # a stop signal during set-up: leave before training anything
            result.preempted, result.exit_code = self.preemption.stopped(None, None), self.preemption.exit_code
            distributed.print0(result.preempted)
            last_step = 0
        next_stop_check = first_step
        global_batch = layout.global_batch  # a property: computed once, not per step
        remember_loss = self.non_finite.unchecked.append
        self.goodput.loop_starts()
        for step in range(first_step, last_step + 1):  # `step` counts optimizer steps, from 1
            callbacks.on_step_start(self, step)
            wait_start = time.perf_counter()
            epoch, step_in_epoch, micro_batches = next(batches)
            meter.data_wait_s += time.perf_counter() - wait_start
            losses = StepLoss(accum, self.device, l1_penalty)
            for i, batch in enumerate(micro_batches):
                callbacks.on_micro_batch_start(self, step, i)
                meter.add_tokens(batch)
                if move:
                    batch = to_device(batch, self.device)
                with strategy.micro_step(is_last=i == accum - 1):
                    with strategy.autocast():
                        if step == first_step and i == 0:  # the recipe's contract, checked on the first batch
                            loss = recipe_checks.checked_loss(recipe, strategy.model, batch, layout.batch_size)
                        else:
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
                    state.skipped_steps += 1
                    self.skipped_in_a_row += 1
                    distributed.print0(f"step {step}: non-finite loss on some rank; optimizer step skipped")
                    error = skip_limit_error(train, step, state.skipped_steps, self.skipped_in_a_row,
                                             self.last_checkpoint())
                    if error is not None:
                        raise error
                else:
                    self.skipped_in_a_row = 0
                    grad_norm = strategy.step()
            else:
                remember_loss((step, step_loss))  # `stop`: checked at the next log/save step (NonFiniteLosses)
                grad_norm = strategy.step()
            meter.steps += 1
            state.step, state.epoch, state.samples_in_epoch = step, epoch, (step_in_epoch + 1) * global_batch

            metrics = None
            if step % train.log_every == 0 or step == train.max_steps:
                metrics = self.log_step(step, step_loss, epoch, grad_norm)
                result.last_loss = metrics["loss"]
            callbacks.on_step_end(self, step, metrics)
            if self.eval_data is not None and (step % train.eval_every == 0 or step == train.max_steps):
                eval_start = time.perf_counter()
                result.eval = self.evaluate(step)
                self.trackers.log({f"eval/{k}": v for k, v in result.eval.items()}, step)
                self.goodput.exclude("eval", time.perf_counter() - eval_start)
            result.steps, result.skipped_steps = step, state.skipped_steps
            if step == train.max_steps or self.stop_reason:
                if self.stop_reason:
                    distributed.print0(self.stop_reason)
                    result.stopped = self.stop_reason
                self.save_checkpoint(step)
                break
            # Every rank agrees at the same steps (stop_check_every comes from reduced figures), so all stop here.
            if step >= next_stop_check:
                next_stop_check = step + self.stop_check_every
                if self.preemption.requested():
                    self.save_checkpoint(step)
                    result.preempted = self.preemption.stopped(step, self.last_checkpoint())
                    result.exit_code = self.preemption.exit_code
                    distributed.print0(result.preempted)
                    break
            if every and step % every == 0:
                self.save_checkpoint(step, blocking=False)
        stall_start = time.perf_counter()
        self.checkpointer.close()  # the pending commit, every rank's files flushed, keep-N applied
        self.goodput.exclude("checkpoint", time.perf_counter() - stall_start)
        self.goodput.loop_ends()
        self._finish(result)
        return result

    def log_step(self, step: int, step_loss: torch.Tensor, epoch: int, grad_norm) -> dict[str, float]:
        """The figures of a log step, identical on every rank, from one collective (dist_train.log_step). The
        host syncs (.item(), .tolist() wait for the device) happen only here and in train.on_nan=skip."""
        first_bad, figures = log_step_figures(step_loss, self.non_finite.first_bad_step(), self.meter,
                                              self.goodput, self.device, self.env.world_size)
        self._raise_if_bad(first_bad)
        metrics = {"loss": figures.pop("loss"), "lr": self.strategy.lr, "epoch": epoch, **figures}
        if grad_norm is not None:
            metrics["grad_norm"] = float(grad_norm)
        self.stop_check_every = stop_check_every(metrics["step_time_s"], self.env.world_size)
        self.trackers.log(metrics, step)
        self.meter.restart()
        return metrics

    def last_checkpoint(self) -> str | None:
        done = self.checkpointer.complete()
        return str(done[-1]) if done else None

    def _finish(self, result: RunResult) -> None:
        callbacks = self.callbacks
        callbacks.on_fit_end(self, result)  # the EMA callback puts the EMA weights into the model here
        model = self.strategy.unwrapped_model
        model.eval()
        with torch.no_grad():
            self.recipe.on_train_end(model, result.eval)
        self.strategy.model.train()
        if result.steps:  # the attempt's goodput with the last save and evaluation in it (rank 0's clock)
            self.trackers.log(shares(self.goodput.seconds()), result.steps)
        self.trackers.close()
        result.elapsed_s, time_s = self.goodput.for_record()
        if self.record is not None:
            status = ("preempted" if result.preempted else "stopped early" if self.state.finished_early
                      else "stopped" if result.stopped else "complete")
            self.record.end(status, result.steps, result.elapsed_s, result.preempted or result.stopped, time_s)

    def record_start(self) -> None:
        if self.record is not None:
            layout = self.layout
            self.record.start(self.state.step, started_s_ago=time.perf_counter() - self.goodput.started,
                              recipe=self.config.recipe, strategy=self.strategy.describe(),
                              world_size=self.env.world_size, global_batch=layout.global_batch,
                              batch_size=layout.batch_size, grad_accum=layout.grad_accum,
                              max_steps=self.config.train.max_steps)

    def record_failure(self, error: BaseException) -> None:
        """The attempt's end in run.json when the run raised (rank 0, once the attempt was recorded)."""
        if self.record is None or not self.record.data["attempts"]:
            return
        if self.record.data["attempts"][-1].get("status") != "running":
            return
        status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        detail = str(error) if isinstance(error, (UsageError, RunError)) else f"{type(error).__name__}: {error}"
        try:
            elapsed_s, time_s = self.goodput.for_record()
            self.record.end(status, self.state.step, elapsed_s, detail[:500], time_s)
        except OSError:
            pass  # a full disk must not hide the original error

    def l1_penalty(self) -> torch.Tensor:
        params = [p for p in self.strategy.unwrapped_model.parameters() if p.requires_grad]
        return self.config.train.l1 * torch.stack([p.abs().sum() for p in params]).sum()

    def save_checkpoint(self, step: int, blocking: bool = True) -> None:
        """Checkpoint the state after optimizer step `step`. Call on every rank at a step boundary (the loop does;
        so can a preemption handler). Blocking: returns once the checkpoint is committed; otherwise, with
        checkpoint.async, once the state is copied and the write goes on in the background. The time it holds
        the loop is logged as `checkpoint_stall_s` and counted in goodput."""
        stall_start = time.perf_counter()
        self.raise_if_diverged()  # never a checkpoint of a diverged state
        layout = self.layout
        self.loader.gather_state()  # a streaming loader collects every rank's position (a collective)
        manifest = Manifest(
            step=step, recipe=self.config.recipe, model=self.model_signature, world_size=self.env.world_size,
            batch_size=layout.batch_size, grad_accum=layout.grad_accum, global_batch=layout.global_batch,
            strategy=self.strategy.name, config=self._resolved_config(),
        )
        self.checkpointer.save(step, self.strategy, self.state, manifest, blocking=blocking,
                               before_commit=lambda tmp: self.callbacks.before_checkpoint_commit(self, step, tmp),
                               on_saved=lambda path: self.callbacks.on_checkpoint_saved(self, step, path))
        if blocking:
            self.checkpointer.wait()
        # What the save cost the loop (async: the copy to CPU memory and the wait for the previous save), the
        # manifest and the streaming loader's state gathering included; one record per save.
        stall = time.perf_counter() - stall_start
        self.goodput.exclude("checkpoint", stall)
        self.trackers.log({"checkpoint_stall_s": stall}, step)
        if self.record is not None:  # what a killed attempt leaves in run.json: its time up to its last save
            self.record.update(step, *self.goodput.for_record())

    def _resolved_config(self) -> dict:
        # The config does not change once training runs; resolving it (a YAML round trip) took ~20 ms per save.
        if getattr(self, "_resolved", None) is None:
            self._resolved = resolved_dict(self.config)
        return self._resolved

    def raise_if_diverged(self) -> None:
        """train.on_nan=stop: end the run on every rank alike if any rank saw a non-finite loss."""
        if self.config.train.on_nan == "stop":
            self._raise_if_bad(distributed.all_reduce_(self.non_finite.first_bad_step(), dist.ReduceOp.MIN).item())

    def _raise_if_bad(self, first_bad: float) -> None:
        if math.isfinite(first_bad):
            raise NonFiniteLosses.error(first_bad, self.last_checkpoint())

    def evaluate(self, step: int) -> dict[str, float]:
        self.callbacks.on_eval_start(self, step)  # e.g. the EMA callback swaps its weights in
        values = evaluate(self.strategy.model, self.recipe, self.eval_data, self.config.eval_batch_size,
                          self.layout.rank, self.layout.world_size, self.device, self.strategy.autocast)
        self.strategy.model.train()
        self.callbacks.on_eval_end(self, step, values)
        return values

    def release(self) -> None:
        """Drop wrapped model and optimizer before the process group goes (see dist_train.distributed)."""
        self.strategy.teardown()
        self.trackers.close()
        self.preemption.close()
