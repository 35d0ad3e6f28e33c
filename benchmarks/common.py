"""Timing helpers for the benchmarks: best-of-n wall time and this machine's matmul rate.

Benchmarks report ratios taken in one run (a cost over a reference cost measured moments
before on the same machine), never absolute limits: absolute times depend on the machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def best_time(fn: Callable[[], object], repeat: int = 5, number: int = 1) -> float:
    """Best wall time in seconds of ``number`` calls of ``fn``, over ``repeat`` trials."""
    fn()  # warm-up (lazy initialisation, caches)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def matmul_rate(n: int = 512, dtype: torch.dtype = torch.float64) -> float:
    """This machine's rate, in flop/s, for an n x n by n x n matmul (2 n^3 flops)."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    return 2 * n**3 / best_time(lambda: a @ b, repeat=15, number=3)


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    """Print a two-column table of measurement names and values."""
    width = max(len(name) for name, _ in rows)
    print(f"\n{title}\n" + "-" * len(title))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
