"""benchmarks/machine_speed.py: the line `make test` prints before and after its passes."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import machine_speed  # noqa: E402


def test_the_line_names_the_moment_and_both_rates_and_leaves_the_threads_alone():
    threads = torch.get_num_threads()
    line = machine_speed.line("before the tests")
    assert torch.get_num_threads() == threads
    pattern = (rf"machine speed before the tests: (\d+\.\d) GFLOP/s on one thread, (\d+\.\d) on {threads} "
               r"\(float64 4000 x 660 by 660 x 150 matrix product, mean over 1 s\)")
    match = re.fullmatch(pattern, line)
    assert match is not None, line
    assert float(match.group(1)) > 0 and float(match.group(2)) > 0


def test_a_rate_counts_the_flops_of_the_calls_it_made(monkeypatch):
    """With a clock that advances 0.25 s per reading, one second holds a known number of
    calls, so the rate is exact: 2 m k n flops per call."""
    ticks = iter(range(1000))
    monkeypatch.setattr(machine_speed.time, "perf_counter", lambda: 0.25 * next(ticks))
    m, k, n = machine_speed.SHAPE
    # readings: start 0, then one per loop test (0.25, 0.5, 0.75, 1.0 stops) and the end 1.25
    assert machine_speed.mean_rate(1) == 2 * m * k * n * 3 / 1.25 / 1e9
