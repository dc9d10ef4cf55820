"""Throughput figures outside a run: MFU arithmetic and the GPU peak table (the GPU path itself needs a GPU)."""

from __future__ import annotations

import time

import pytest
import torch

from dist_train.tracking.throughput import Throughput, peak_flops, peak_flops_of


class FlopsRecipe:
    def tokens_in(self, batch):
        return None

    def flops_per_sample(self):
        return 3.0e9


def test_mfu_is_model_flops_over_peak_of_all_devices():
    meter = Throughput(global_batch=64, world_size=2, device=torch.device("cpu"), recipe=FlopsRecipe(), peak=1.0e12)
    meter.add_tokens((torch.zeros(32, 3),))  # the recipe says it has no tokens: counting stops
    meter.steps = 4
    time.sleep(0.05)
    figures = meter.collect()
    assert figures["mfu"] == pytest.approx(3.0e9 * figures["samples_per_s"] / (2 * 1.0e12))
    assert figures["samples_per_s"] == pytest.approx(64 * 4 / (4 * figures["step_time_s"]))
    assert "tokens_per_s" not in figures and meter.count_tokens is False
    assert figures["peak_mem_gib"] > 0.01  # this process's peak RSS: torch alone is well above 10 MiB


def test_no_mfu_without_a_peak_or_on_cpu():
    assert peak_flops(torch.device("cpu"), 100.0) is None
    meter = Throughput(64, 1, torch.device("cpu"), FlopsRecipe(), peak=None)
    meter.steps = 1
    assert "mfu" not in meter.collect()


def test_gpu_peak_table():
    assert peak_flops_of("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops_of("NVIDIA H100 PCIe") == 756e12
    assert peak_flops_of("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops_of("Tesla T4") is None
