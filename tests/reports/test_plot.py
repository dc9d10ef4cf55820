"""`dist-train plot`: a PNG of the expected size, one line per run in every panel."""

from __future__ import annotations

import struct

from support import read_metrics, run_cli

from dist_train.tracking.jsonl import read_run_metrics
from dist_train.reports.plot import PANEL_PX, make_figure


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_one_line_per_run_in_each_panel(tracked_runs):
    runs = {d.name: read_run_metrics(d) for d in tracked_runs}
    fig = make_figure(runs)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["loss", "lr", "eval/loss", "eval/mse"]
    for ax in visible:
        lines = ax.get_lines()
        assert [line.get_label() for line in lines] == ["lr_low", "lr_high"]
    # The loss line is the logged training loss.
    xs, ys = visible[0].get_lines()[0].get_data()
    logged = [r for r in read_metrics(tracked_runs[0]) if "loss" in r]
    assert list(xs) == [r["step"] for r in logged] and list(ys) == [r["loss"] for r in logged]


def test_cli_writes_a_png_of_the_expected_size(tracked_runs, tmp_path):
    out = tmp_path / "runs.png"
    result = run_cli("plot", *tracked_runs, "--out", out)
    assert png_size(out) == (2 * PANEL_PX[0], 2 * PANEL_PX[1])  # 4 panels in a 2 x 2 grid
    assert f"wrote {out} (1200x700 px, 2 runs)" in result.stdout
    run_cli("plot", tracked_runs[0])
    assert png_size(tracked_runs[0] / "metrics.png") == (1200, 700)


def test_bad_input_is_one_line(tracked_runs, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for args, words in ((["plot", tmp_path / "missing"], ["missing", "does not exist"]),
                        (["plot", tracked_runs[0], "--out", blocker / "p.png"], ["--out", "cannot write"]),
                        (["plot", tracked_runs[0], "--out", tmp_path / "p.jpg"], ["--out", ".png"]),
                        (["summary", tmp_path], ["no metrics.jsonl"])):
        result = run_cli(*args, check=False)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert all(w in lines[0] for w in words), lines[0]
