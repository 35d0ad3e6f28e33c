"""This machine's speed, printed before and after ``make test``: the mean rate of a float64
matrix product of chapter 6's size on one thread and on all of torch's threads, in GFLOP/s.

The time ``make test`` takes is the work it does divided by the machine's speed, and the
speed of one machine varies: on the 2-core development machine one step of chapter 6's
tangent run (gradient and two Hessian-vector products, on two threads) took 47 ms, and 141 ms
an hour later, idle both times; in the slow state two threads ran a matrix product slower
than one (46 ms against 18 ms). A best-of-n timing misses such a state (it picks the lucky
runs), so this takes the mean over a second. Printed beside the passes' times, it tells a
slow run on a slow machine from a run that does more work.

Usage: ``python benchmarks/machine_speed.py [WHEN]``, in a process of its own, as ``make
test`` runs it: switching torch's thread count to 1 and back inside a pytest process made a
later test (tests/test_own_map.py) loop on an MKL error in LAPACK's row interchanges (DLASWP).
"""

from __future__ import annotations

import sys
import time

import torch

#: The product timed: chapter 6's data matrix (4,000 digits, 660 used pixels) times 150 columns.
SHAPE = (4000, 660, 150)


def mean_rate(threads: int, seconds: float = 1.0) -> float:
    """GFLOP/s of ``SHAPE``'s float64 product on ``threads`` threads, the mean over ``seconds``
    (the caller's thread count is left as it was)."""
    m, k, n = SHAPE
    a, b = torch.randn(m, k, dtype=torch.float64), torch.randn(k, n, dtype=torch.float64)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a @ b  # warm-up
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            calls += 1
        elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(before)
    return 2 * m * k * n * calls / elapsed / 1e9


def line(when: str = "") -> str:
    """One line with the rate on one thread and on all threads (``when``: at which point of the run)."""
    threads = torch.get_num_threads()
    one, every = mean_rate(1), mean_rate(threads)
    m, k, n = SHAPE
    return (f"machine speed{f' {when}' if when else ''}: {one:.1f} GFLOP/s on one thread, {every:.1f} on "
            f"{threads} (float64 {m} x {k} by {k} x {n} matrix product, mean over 1 s)")


if __name__ == "__main__":
    print(line(" ".join(sys.argv[1:])), flush=True)
