"""`dist-train plot`: loss, learning rate and every eval metric against step, one panel each, several runs
overlaid (one line per run per panel), so a person can look at runs instead of reading numbers.

matplotlib is imported only here, with the Agg backend (no display needed on a cluster login node). The figure
has a fixed size, PANEL_PX per panel in a grid of at most two columns, so the PNG's size follows from the panels.
"""

from __future__ import annotations

import math
from pathlib import Path

from dist_train.errors import UsageError
from dist_train.tracking.jsonl import read_run_metrics, series

PANEL_PX = (600, 350)
DPI = 100


def panel_keys(runs: dict[str, list[dict]]) -> list[str]:
    evals = sorted({k for records in runs.values() for r in records for k in r if k.startswith("eval/")})
    return [k for k in ("loss", "lr") if any(series(rs, k)[0] for rs in runs.values())] + evals


def run_labels(run_dirs: list[str]) -> list[str]:
    """Folder names, or whole paths where two runs share a folder name."""
    names = [Path(d).resolve().name for d in run_dirs]
    return [n if names.count(n) == 1 else str(d) for n, d in zip(names, run_dirs, strict=False)]


def make_figure(runs: dict[str, list[dict]]):
    """A matplotlib Figure: one axes per metric, one line per run that logged it."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    keys = panel_keys(runs)
    ncols = 1 if len(keys) == 1 else 2
    nrows = math.ceil(len(keys) / ncols)
    fig = Figure(figsize=(PANEL_PX[0] * ncols / DPI, PANEL_PX[1] * nrows / DPI), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, key in zip(axes, keys, strict=False):
        for label, records in runs.items():
            steps, values = series(records, key)
            if steps:
                ax.plot(steps, values, label=label, marker="o" if len(steps) <= 20 else None, markersize=3)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if key == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        if len(runs) > 1:
            ax.legend(fontsize="small")
    for ax in axes[len(keys):]:
        ax.set_visible(False)  # an odd number of panels leaves one grid cell empty
    return fig


def plot_runs(run_dirs: list[str], out: str | None) -> tuple[Path, tuple[int, int]]:
    labels = run_labels(run_dirs)
    if len(set(labels)) < len(labels):
        raise UsageError("plot: the same run dir is given twice")
    runs = {label: read_run_metrics(d) for label, d in zip(labels, run_dirs, strict=False)}
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("plot: matplotlib is not installed; install it with pip install 'dist-train[plot]' "
                         "(or pip install matplotlib)") from None
    if not panel_keys(runs):
        raise UsageError(f"plot: no loss, lr or eval metrics in {', '.join(run_dirs)}")
    path = Path(out) if out else (Path(run_dirs[0]) / "metrics.png" if len(run_dirs) == 1 else Path("metrics.png"))
    if path.suffix.lower() != ".png":
        raise UsageError(f"--out: '{path}' must end in .png")
    fig = make_figure(runs)
    try:
        fig.savefig(path, dpi=DPI)
    except OSError as e:
        raise UsageError(f"--out: cannot write '{path}': {e.strerror or e}") from None
    width, height = fig.get_size_inches() * DPI
    return path, (round(width), round(height))
