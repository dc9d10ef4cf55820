"""run.json's writer: progress updates are written in the background, in order, and never interleave with the
start or end of an attempt; a crash between writes leaves the previous whole file."""

from __future__ import annotations

import json

from dist_train.tracking.run_record import RUN_RECORD, RunRecord, read


def test_progress_is_written_in_order_and_the_end_comes_last(tmp_path):
    record = RunRecord(tmp_path)
    record.start(0, strategy="single", world_size=1)
    for step in range(1, 51):
        record.update(step, elapsed_s=step / 10, time_s={"train": step / 20})
    record.flush()
    attempt = read(tmp_path)["attempts"][-1]
    assert attempt["last_step"] == 50 and attempt["status"] == "running" and attempt["time_s"] == {"train": 2.5}

    record.update(51, elapsed_s=5.1, time_s={"train": 2.55})
    record.end("complete", 52, elapsed_s=5.2)  # waits for the update still being written, then writes over it
    data = json.loads((tmp_path / RUN_RECORD).read_text())
    assert data["strategy"] == "single"
    assert [a["status"] for a in data["attempts"]] == ["complete"]
    assert data["attempts"][0]["last_step"] == 52 and data["attempts"][0]["time_s"] == {"train": 2.55}
    assert not (tmp_path / f"{RUN_RECORD}.part").exists()

    # A second attempt (a resume) appends to what the first left.
    again = RunRecord(tmp_path)
    again.start(52)
    again.update(60, elapsed_s=1.0, time_s={})
    again.end("complete", 60, elapsed_s=1.5)
    assert [(a["start_step"], a["last_step"]) for a in read(tmp_path)["attempts"]] == [(0, 52), (52, 60)]
