"""`dist-train plot RUN_DIR [RUN_DIR ...] [--out FILE.png]`: loss / lr / eval metrics vs step as a PNG."""

from __future__ import annotations


def main(args) -> int:
    from dist_train.reports.plot import plot_runs

    path, (width, height) = plot_runs(args.run_dirs, args.out)
    print(f"wrote {path} ({width}x{height} px, {len(args.run_dirs)} run{'s' if len(args.run_dirs) > 1 else ''})")
    return 0
