"""Callbacks listed in YAML (a user's file with its own typed keys, the bundled profiler) run their hooks at the
documented points of real CLI runs; early-stopping state travels in checkpoints."""

from __future__ import annotations

import json

from support import RECIPES, read_metrics, run_cli

BASE = ["dataset.n_train=256", "dataset.n_eval=64", "model.hidden=8", "train.batch_size=32",
        "scheduler.warmup_steps=0", "train.eval_every=4"]

RECORDER = '''
import json
from dataclasses import dataclass
from dist_train.callbacks import Callback


@dataclass
class RecorderConfig:
    out: str
    tag: str = "x"


class Recorder(Callback):
    """Appends one JSON line per hook call."""
    Config = RecorderConfig

    def _write(self, *event):
        with open(self.config.out, "a") as f:
            f.write(json.dumps([self.config.tag, *event]) + "\\n")

    def on_fit_start(self, trainer):
        self._write("fit_start", trainer.state.step)

    def on_step_end(self, trainer, step, metrics):
        self._write("step_end", step, None if metrics is None else sorted(metrics)[:2])

    def on_eval_end(self, trainer, step, values):
        self._write("eval_end", step, sorted(values))

    def on_checkpoint_saved(self, trainer, step, path):
        self._write("checkpoint_saved", step, path.name)

    def on_fit_end(self, trainer, result):
        self._write("fit_end", result.steps)
'''


def test_user_callback_from_yaml_sees_each_hook_in_order(tmp_path):
    (tmp_path / "recorder.py").write_text(RECORDER)
    out = tmp_path / "events.jsonl"
    run_cli("train", RECIPES / "mlp_regression.yaml", f"run_dir={tmp_path / 'run'}", *BASE, "train.max_steps=8",
            "train.log_every=2", "checkpoint.every=4",
            f"callbacks=[{{name: {tmp_path / 'recorder.py'}:Recorder, out: {out}, tag: mine}}]")
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert {e[0] for e in events} == {"mine"}
    names = [e[1:] for e in events]
    assert names[0] == ["fit_start", 0] and names[-1] == ["fit_end", 8]
    steps = [e for e in names if e[0] == "step_end"]
    assert [e[1] for e in steps] == list(range(1, 9))
    assert [e[2] is not None for e in steps] == [s % 2 == 0 for s in range(1, 9)]  # metrics on log steps only
    assert steps[1][2] == ["badput/checkpoint", "badput/data_wait"]  # the logged dict, goodput shares included
    assert [e[1] for e in names if e[0] == "eval_end"] == [4, 8]
    assert [e[1:] for e in names if e[0] == "checkpoint_saved"] == [[4, "step_4"], [8, "step_8"]]
    # the eval of step 4 ends before that step's checkpoint is saved
    assert names.index(["eval_end", 4, ["loss", "mse"]]) < names.index(["checkpoint_saved", 4, "step_4"])
    # the resolved config.yaml lists the callback with its typed keys, file made absolute
    config_text = (tmp_path / "run" / "config.yaml").read_text()
    assert f"{tmp_path / 'recorder.py'}:Recorder" in config_text and "tag: mine" in config_text


def test_callback_keys_are_checked_like_config_keys(tmp_path):
    (tmp_path / "recorder.py").write_text(RECORDER)
    bad = run_cli("train", RECIPES / "mlp_regression.yaml", f"run_dir={tmp_path / 'run'}",
                  f"callbacks=[{{name: {tmp_path / 'recorder.py'}:Recorder, out: x, tga: y}}]", check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "callbacks[0].tga: unknown key (did you mean 'tag'?)" in bad.stderr
    unknown = run_cli("train", RECIPES / "mlp_regression.yaml", "callbacks=[{name: profiller}]", check=False)
    assert unknown.returncode == 2 and "callbacks[0].name: unknown callback 'profiller' (did you mean 'profiler'?)" \
        in unknown.stderr
    assert not (tmp_path / "run").exists()


def test_profiler_writes_a_trace_of_the_asked_steps(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("train", RECIPES / "mlp_regression.yaml", f"run_dir={run_dir}", *BASE, "train.max_steps=6",
                     "callbacks=[{name: profiler, start: 3, steps: 2}]")
    trace = json.loads((run_dir / "profile" / "rank0.trace.json").read_text())
    names = {e.get("name", "") for e in trace["traceEvents"]}
    assert any("addmm" in n for n in names) and any("Optimizer.step" in n for n in names), sorted(names)[:20]
    table = (run_dir / "profile" / "rank0.txt").read_text()
    assert table.startswith("steps 3-4, rank 0") and "aten::" in table
    assert "profiler: steps 3-4 traced into" in result.stdout


ES = ["train.early_stopping={metric: loss, mode: max, patience: 2}", "train.eval_every=2", "train.log_every=1",
      "train.max_steps=40"]


def test_early_stopping_state_is_resumed_and_a_stopped_run_stays_stopped(tmp_path):
    whole = tmp_path / "whole"
    run_cli("train", RECIPES / "mlp_regression.yaml", f"run_dir={whole}", *BASE, *ES)
    steps = max(r["step"] for r in read_metrics(whole))
    assert steps < 40  # mode max on a falling loss: stops after 2 evaluations without "improvement"

    # Interrupted after the first evaluation that did not improve, then resumed: it must stop at the same step,
    # which it does only if the count of bad evaluations came back from the checkpoint.
    cut = tmp_path / "cut"
    run_cli("train", RECIPES / "mlp_regression.yaml", f"run_dir={cut}", *BASE, *ES, "checkpoint.every=2",
            DIST_TRAIN_TEST_STOP_AFTER_STEP=steps - 2)
    run_cli("train", RECIPES / "mlp_regression.yaml", f"run_dir={cut}", *BASE, *ES, "checkpoint.every=2")
    assert max(r["step"] for r in read_metrics(cut)) == steps

    # A relaunch of the finished run trains nothing and leaves its record as it was.
    before = {name: (whole / name).read_bytes() for name in ("config.yaml", "metrics.jsonl")}
    again = run_cli("train", RECIPES / "mlp_regression.yaml", f"run_dir={whole}", *BASE, *ES, "train.max_steps=50")
    assert f"run {whole} is complete: it stopped early (early stopping at step {steps}" in again.stdout
    assert "done:" not in again.stdout and "nan" not in again.stdout
    assert {name: (whole / name).read_bytes() for name in before} == before
