"""Cost of the all-parameter gradient estimators (chaosgrad.average_gradient) over a simulation.

Every estimator is reverse mode, so its cost must not grow with the number of parameters P
(forward mode, one tangent per parameter, would grow like P). For a NeuralMap on R^3 with
P = 995 (widths (32, 24)), P = 20,723 (widths (140, 140)) and P = 80,643 (widths (280, 280)):

- kernel differentiation (``method="kernel"``) and the path-kernel hybrid (``"path-kernel"``,
  alpha = 0.5), both of the expected average over T = 200 steps of 256 noisy paths, over the
  time of simulating the same noisy paths (Noisy.trajectory); the issue's target is <= 2.5;
- exact backpropagation (``"backprop"``) of 16 orbits of T = 200 steps over their simulation;
- NILSAS (``"nilsas"``, M = 2 homogeneous adjoints, 10 segments of 20 steps) on the same 16
  orbits, over M + 1 backpropagations (target <= 1.5).

Beside each time ratio, the counted cost (Cost) per simulated state, which does not depend on
the machine and is the same at every P. The time ratios still rise slowly with P (measured
2.8, 3.6, 4.0 for kernel differentiation over an 81-fold range of P) because small networks
are dominated by per-operation overhead, large ones by matrix products, of which the reverse
pass of a hidden layer takes two for the forward pass's one. One thread (a busy second core would add noise), best of five interleaved rounds,
this machine, one run; nothing is asserted.
"""

from __future__ import annotations

import torch
from common import best_time, print_table

from chaosgrad.gradients import average_gradient
from chaosgrad.models import NeuralMap
from chaosgrad.systems import Noisy

T, PATHS, MEMBERS, M = 200, 256, 16, 2
ROUNDS = 5


def observable(x: torch.Tensor) -> torch.Tensor:
    return (x**2).mean(-1)


def rows_for(widths: tuple[int, ...]) -> list[tuple[str, str]]:
    net = NeuralMap(3, widths, dt=0.01, seed=0, output_gain=1.0)
    P = sum(p.numel() for p in net.params().values())
    g = torch.Generator().manual_seed(1)
    paths = torch.randn(PATHS, 3, generator=g, dtype=torch.float64)
    members = paths[:MEMBERS]
    noisy = lambda: Noisy(net, sigma=0.1, seed=0)  # noqa: E731
    runs = {
        "simulate paths": lambda: noisy().trajectory(paths, T),
        "kernel": lambda: average_gradient(noisy(), paths, T, observable, "kernel"),
        "path-kernel": lambda: average_gradient(noisy(), paths, T, observable, "path-kernel", alpha=0.5),
        "simulate members": lambda: net.trajectory(members, T),
        "backprop": lambda: average_gradient(net, members, T, observable, "backprop"),
        "nilsas": lambda: average_gradient(net, members, T, observable, "nilsas", segment_steps=20, n_unstable=M),
    }
    best = {k: float("inf") for k in runs}
    for _ in range(ROUNDS):  # interleaved: a busy neighbour slows every candidate alike
        for k, fn in runs.items():
            best[k] = min(best[k], best_time(fn, repeat=1))
    counts = {k: runs[k]().cost for k in ("kernel", "path-kernel", "backprop", "nilsas")}
    per = lambda k, states: ", ".join(f"{v:.2f} {n.replace('_', ' ')}"  # noqa: E731
                                      for n, v in counts[k].per_step(states).items() if v)
    tag = f"P = {P:,}"
    return [
        (f"{tag}: kernel / simulation", f"{best['kernel'] / best['simulate paths']:.2f}   ({per('kernel', PATHS * T)})"),
        (f"{tag}: path-kernel / simulation",
         f"{best['path-kernel'] / best['simulate paths']:.2f}   ({per('path-kernel', PATHS * T)})"),
        (f"{tag}: backprop / simulation",
         f"{best['backprop'] / best['simulate members']:.2f}   ({per('backprop', MEMBERS * T)})"),
        (f"{tag}: nilsas / ((M + 1) backprop)",
         f"{best['nilsas'] / ((M + 1) * best['backprop']):.2f}   ({per('nilsas', MEMBERS * T)})"),
    ]


def main() -> None:
    torch.set_num_threads(1)
    rows = rows_for((32, 24)) + rows_for((140, 140)) + rows_for((280, 280))
    print_table(f"All-parameter gradients over simulation: NeuralMap on R^3, T = {T}, {PATHS} noisy paths, "
                f"{MEMBERS} orbits, M = {M} (1 thread); counted products per simulated state", rows)


if __name__ == "__main__":
    main()
