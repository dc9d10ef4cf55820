"""Exact resume: a run interrupted anywhere and resumed gives the same per-step losses and the same final state as
a run never interrupted (fp32, same world size), and resumes on another world size keeping the global batch."""

from __future__ import annotations

import random

from checkpoint_support import assert_same_tensors, checkpoint_tensors, losses, train
from support import assert_close_losses


def test_single_process_stop_mid_epoch_resume_is_bit_identical(tmp_path, references):
    ref = references.get("single")
    run = tmp_path / "run"
    first = train(run, DIST_TRAIN_TEST_STOP_AFTER_STEP=17)
    assert "done: 17 steps" in first.stdout
    assert (run / "checkpoints" / "step_17").is_dir()
    second = train(run)
    assert "resumed from" in second.stdout and "(step 17)" in second.stdout
    assert losses(run) == losses(ref)  # exact, every step 1..30 (17 from the first run, 18..30 from the second)
    assert_same_tensors(checkpoint_tensors(run / "checkpoints" / "step_30", tmp_path),
                        checkpoint_tensors(ref / "checkpoints" / "step_30", tmp_path))


def test_kill_in_the_middle_of_an_accumulation_window_resumes_bit_identical(tmp_path, references):
    ref = references.get("single_accum3", "train.grad_accum=3", "train.batch_size=8")
    run = tmp_path / "run"
    # SIGKILL before micro-batch 1 of 3 of step 18: steps 16-17 were logged after the step-15 checkpoint.
    killed = train(run, "train.grad_accum=3", "train.batch_size=8", check=False, DIST_TRAIN_TEST_KILL_AT="micro1:18")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert max(losses(run)) == 17
    train(run, "train.grad_accum=3", "train.batch_size=8")
    assert losses(run) == losses(ref)  # metrics.jsonl: 16-17 of the killed run replaced, nothing doubled
    assert_same_tensors(checkpoint_tensors(run / "checkpoints" / "step_30", tmp_path),
                        checkpoint_tensors(ref / "checkpoints" / "step_30", tmp_path))


def test_ddp_two_processes_async_save_resume_is_bit_identical(tmp_path, references):
    ref = references.get("ddp", "train.batch_size=8", nproc=2)
    run = tmp_path / "run"
    train(run, "train.batch_size=8", "checkpoint.async=true", nproc=2, DIST_TRAIN_TEST_STOP_AFTER_STEP=17)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_10", "step_15", "step_17"]
    train(run, "train.batch_size=8", "checkpoint.async=true", nproc=2)
    assert losses(run) == losses(ref)
    assert_same_tensors(checkpoint_tensors(run / "checkpoints" / "step_30", tmp_path),
                        checkpoint_tensors(ref / "checkpoints" / "step_30", tmp_path))


def test_kill9_one_rank_under_torchrun_max_restarts(tmp_path, references):
    ref = references.get("ddp", "train.batch_size=8", nproc=2)
    run = tmp_path / "run"
    step = random.Random().randint(6, 29)
    print(f"killing rank 1 at step {step}")
    result = train(run, "train.batch_size=8", nproc=2, torchrun_args=["--max-restarts=1"],
                   DIST_TRAIN_TEST_KILL_AT=f"micro0:{step}:1")
    assert "resumed from" in result.stdout, result.stdout[-3000:]
    assert losses(run) == losses(ref), step


def test_ddp_checkpoint_resumes_on_one_process_keeping_the_global_batch(tmp_path, references):
    ref = references.get("ddp", "train.batch_size=8", nproc=2)
    run = tmp_path / "run"
    train(run, "train.batch_size=8", nproc=2, DIST_TRAIN_TEST_STOP_AFTER_STEP=17)
    resumed = train(run, "train.batch_size=8")  # one process: DCP reshards, grad_accum 1 -> 2 keeps 16 samples/step
    assert "train.grad_accum 1 -> 2 keeps it" in resumed.stdout
    got, want = losses(run), losses(ref)
    assert {s: got[s] for s in range(1, 18)} == {s: want[s] for s in range(1, 18)}
    # Same samples per step; only the summation order of the gradient average differs (float rounding).
    assert_close_losses(got, want, rel=1e-4)


def test_fsdp_two_process_checkpoint_resumes_on_one_process(tmp_path, references):
    ref = references.get("fsdp", "train.batch_size=8", "strategy=fsdp", nproc=2)
    run = tmp_path / "run"
    train(run, "train.batch_size=8", "strategy=fsdp", nproc=2, DIST_TRAIN_TEST_STOP_AFTER_STEP=17)
    resumed = train(run, "train.batch_size=8", "strategy=fsdp")
    assert "train.grad_accum 1 -> 2 keeps it" in resumed.stdout
    assert_close_losses(losses(run), losses(ref), rel=1e-4)


def test_resume_restores_the_ema_of_the_weights(tmp_path):
    """With train.ema the eval runs on the EMA weights: equal eval values after a resume prove the EMA (and its
    averaging count) came back from the checkpoint rather than restarting from the resumed weights."""
    ema = ["train.ema=0.9", "train.eval_every=4", "train.max_steps=12"]
    train(tmp_path / "ref", *ema)
    run = tmp_path / "run"
    train(run, *ema, DIST_TRAIN_TEST_STOP_AFTER_STEP=6)
    train(run, *ema)
    from support import read_metrics

    def evals(d):
        return {r["step"]: r["eval/mse"] for r in read_metrics(d) if "eval/mse" in r}

    assert evals(run) == evals(tmp_path / "ref") and set(evals(run)) == {4, 8, 12}
