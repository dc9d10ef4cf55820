"""The log step's one collective (every rank gets the same figures; a NaN on one rank stops all) and the cadence of
the preemption agreement."""

from __future__ import annotations

import json

import torch
from support import RECIPES, run_torchrun

from dist_train.distributed import reduce_columns
from dist_train.log_step import STOP_CHECK_MAX_STEPS, stop_check_every

SEEN = '''
import json
from dist_train.callbacks import Callback

class Seen(Callback):
    def on_step_end(self, trainer, step, metrics):
        if metrics is not None:
            with open(trainer.run_dir / f"seen_rank{trainer.env.rank}.jsonl", "a") as f:
                f.write(json.dumps({"step": step, **metrics}) + "\\n")
'''


def test_stop_check_cadence():
    assert stop_check_every(0.005, world_size=1) == 1  # one process reads a flag: every step
    assert stop_check_every(0.005, world_size=2) == 50  # ~0.25 s of steps between two agreements
    assert stop_check_every(1e-5, world_size=8) == STOP_CHECK_MAX_STEPS
    assert stop_check_every(3.0, world_size=2) == 1  # slow steps: every step, as before
    assert stop_check_every(0.0, world_size=2) == 1  # nothing measured yet


def test_reduce_columns_on_one_process_is_the_values():
    values = torch.tensor([1.5, 2.0, -3.0, 4.0], dtype=torch.float64)
    assert reduce_columns(values, ("sum", "max", "min", "first")) == [1.5, 2.0, -3.0, 4.0]


def test_ranks_log_the_same_figures_and_a_nan_on_rank_1_stops_both(tmp_path):
    (tmp_path / "seen.py").write_text(SEEN)
    run_dir = tmp_path / "run"
    result = run_torchrun(
        2, "train", RECIPES / "mlp_regression.yaml", f"run_dir={run_dir}",
        "recipe=tests/checkpoint/nan_recipe.py:NanAtSteps", "nan.steps=[5]", "nan.rank=1", "train.on_nan=stop",
        "train.max_steps=8", "train.log_every=2", "train.eval_every=1000", "train.batch_size=8",
        "dataset.n_train=256", "dataset.n_eval=16", "model.hidden=16",
        f"callbacks=[{{name: {tmp_path / 'seen.py'}:Seen}}]", check=False)
    assert result.returncode != 0
    assert "train.on_nan=stop: the loss was not finite (nan/inf) at step 5;" in result.stderr
    seen = [[json.loads(line) for line in (run_dir / f"seen_rank{r}.jsonl").read_text().splitlines()]
            for r in (0, 1)]
    assert [r["step"] for r in seen[0]] == [2, 4]  # the log step of step 6 raised on both ranks
    assert seen[0] == seen[1]  # loss mean, throughput, rank 0's goodput: identical dicts on every rank
    assert {"loss", "step_time_s", "samples_per_s", "goodput", "badput/startup"} <= seen[0][0].keys()
