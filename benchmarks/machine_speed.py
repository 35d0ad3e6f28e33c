"""This machine's speed, printed before and after ``make test``: a float64 matrix product on
one thread (:func:`common.matmul_rate`), in GFLOP/s.

The time ``make test`` takes is the work it does divided by the machine's speed, and the
speed of one machine varies: on the 2-core development machine one step of chapter 6's
tangent run (gradient and two Hessian-vector products) took 47 ms, and 141 ms an hour later,
idle both times. Printed beside the passes' times, this rate tells a slow run on a slow
machine from a run that does more work.

Usage: ``python benchmarks/machine_speed.py [WHEN]``.
"""

from __future__ import annotations

import sys

import torch

from common import matmul_rate


def line(when: str = "") -> str:
    """One line naming the rate (``when`` says at which point of the run); the caller's
    thread count is left as it was."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rate = matmul_rate(512) / 1e9
    finally:
        torch.set_num_threads(threads)
    if not rate > 0:
        raise RuntimeError(f"the matmul rate came out as {rate}")
    return f"machine speed{f' {when}' if when else ''}: {rate:.1f} GFLOP/s (float64 512 x 512 matmul, one thread)"


if __name__ == "__main__":
    print(line(" ".join(sys.argv[1:])), flush=True)
