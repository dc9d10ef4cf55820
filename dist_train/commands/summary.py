"""`dist-train summary RUN_DIR`: one table of the run (config highlights, final/best metrics, time, throughput)."""

from __future__ import annotations


def main(args) -> int:
    from dist_train.reports.summary import format_table, summary_rows

    print(format_table(summary_rows(args.run_dir)))
    return 0
