"""The console: readable numbers in log lines, and the progress bar (step/max_steps, loss, samples/s, ETA)."""

from __future__ import annotations

import io
import re

from dist_train.tracking.console import ConsoleTracker, format_duration, format_metrics


def test_numbers_are_written_for_people():
    line = format_metrics({"loss": 0.123456, "lr": 3e-4, "epoch": 2, "samples_per_s": 20370.4,
                           "step_time_s": 0.0031, "data_wait_share": 0.0123, "grad_norm": 1.5e-5,
                           "eval/loss": float("nan")})
    assert line == ("loss 0.1235 | lr 3.000e-04 | epoch 2 | samples_per_s 20,370 | step_time_s 0.0031 | "
                    "data_wait_share 1.2% | grad_norm 1.500e-05 | eval/loss nan")
    assert format_duration(59.6) == "1m00s" and format_duration(3725) == "1h02m05s" and format_duration(4) == "4s"


def test_plain_lines_carry_an_eta_except_on_the_last_step():
    out = io.StringIO()
    console = ConsoleTracker(max_steps=100, stream=out, bar=False)
    console.begin(0)
    console.log({"loss": 0.5, "samples_per_s": 1234.0}, 50)
    console.log({"loss": 0.4}, 100)
    first, last = out.getvalue().splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "  # wall-clock time first, so logs line up with other events
    assert re.match(stamp + r"step 50/100 \| loss 0\.5 \| samples_per_s 1,234 \| eta \d", first), first
    assert re.fullmatch(stamp + r"step 100/100 \| loss 0\.4", last), last


def test_progress_bar_shows_step_loss_throughput_and_eta():
    out = io.StringIO()
    console = ConsoleTracker(max_steps=10, stream=out, bar=True)
    console.begin(4)  # a resumed run: the bar starts at step 4
    console.log({"loss": 0.25, "samples_per_s": 20370.0, "lr": 1e-3}, 6)
    console.log({"eval/accuracy": 0.875}, 6)
    console.close()
    text = out.getvalue()
    assert "6/10" in text and "loss 0.25" in text and "samples/s 20,370" in text
    assert "<" in text.split("6/10")[-1]  # tqdm's [elapsed<remaining] ETA
    assert "step 6/10 | eval/accuracy 0.875" in text
