"""`callbacks: [{name: profiler, start: 10, steps: 3}]`: a torch.profiler trace of optimizer steps
[start, start + steps) on every rank, written to run_dir/profile/.

Each rank writes `rank<R>.trace.json` (Chrome trace format: open it in https://ui.perfetto.dev or chrome://tracing)
and `rank<R>.txt` (the operators' self times, the 30 largest). Profiling starts before the data of step `start` is
fetched, so data-loading stalls show in the trace, and stops after step start + steps - 1 (or when the run ends,
whichever is first). CUDA kernels are recorded when the run is on a GPU. Steps already done by a resumed run are
not profiled again.
"""

from __future__ import annotations

from dataclasses import dataclass

from dist_train.callbacks import Callback
from dist_train.config.schema import positive


@dataclass
class ProfilerConfig:
    start: int = positive(10)  # first profiled optimizer step (the first steps include warm-up)
    steps: int = positive(3)
    record_shapes: bool = False
    profile_memory: bool = False
    with_stack: bool = False  # Python source lines in the trace (larger files)


class Profiler(Callback):
    Config = ProfilerConfig

    def __init__(self, config: ProfilerConfig):
        super().__init__(config)
        self.profile = None

    def on_step_start(self, trainer, step) -> None:
        if step != self.config.start:
            return
        import torch

        activities = [torch.profiler.ProfilerActivity.CPU]
        if trainer.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        cfg = self.config
        self.profile = torch.profiler.profile(activities=activities, record_shapes=cfg.record_shapes,
                                              profile_memory=cfg.profile_memory, with_stack=cfg.with_stack)
        self.profile.start()

    def on_step_end(self, trainer, step, metrics) -> None:
        if self.profile is not None and step == self.config.start + self.config.steps - 1:
            self._write(trainer, step)

    def on_fit_end(self, trainer, result) -> None:
        if self.profile is not None:
            self._write(trainer, trainer.state.step)

    def _write(self, trainer, last_step: int) -> None:
        self.profile.stop()
        folder = trainer.run_dir / "profile"
        folder.mkdir(parents=True, exist_ok=True)
        rank = trainer.env.rank
        self.profile.export_chrome_trace(str(folder / f"rank{rank}.trace.json"))
        device = "cuda" if trainer.device.type == "cuda" else "cpu"
        table = self.profile.key_averages().table(sort_by=f"self_{device}_time_total", row_limit=30)
        (folder / f"rank{rank}.txt").write_text(f"steps {self.config.start}-{last_step}, rank {rank}\n{table}\n")
        self.profile = None
        if trainer.env.is_main:
            print(f"profiler: steps {self.config.start}-{last_step} traced into {folder}/rank<R>.trace.json",
                  flush=True)
