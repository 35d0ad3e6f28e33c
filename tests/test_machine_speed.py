"""benchmarks/machine_speed.py: the line `make test` prints before and after its passes."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import machine_speed  # noqa: E402


def test_the_line_names_the_moment_and_a_positive_rate_and_leaves_the_threads_alone():
    threads = torch.get_num_threads()
    line = machine_speed.line("before the tests")
    assert torch.get_num_threads() == threads
    match = re.fullmatch(r"machine speed before the tests: (\d+\.\d) GFLOP/s \(float64 512 x 512 matmul, one thread\)",
                         line)
    assert match is not None, line
    assert float(match.group(1)) > 0
