"""Cost of chaosgrad.models.NeuralMap's closed-form derivatives, over one step and against torch.func.

For a NeuralMap on R^3 with about 1,000 parameters (widths (32, 24), P = 995) and about 20,000
(widths (140, 140), P = 20,723), and a batch of 256 states, each closed form is timed and
divided by the time of one step of the batch: the tangent map (jvp, one column), the adjoint
map (vjp, one column), the gradient with respect to every parameter summed over the batch
(param_vjp keep = 0) and per member (keep = None), and the fused step + param_vjp and
vjp + param_vjp that kernel differentiation and backpropagation call every step. Beside each,
the speed-up over the generic torch.func version that every map gets for free (Map._jvp,
Map._vjp, Map._param_vjp; for the fused ones the two generic calls they replace). Reverse mode
for all P parameters summed over the batch should cost a few steps at both sizes: the ratio to
one step must not grow with P. Per member (keep = None) it writes 256 x P numbers, so there its
time grows with P (memory bound), torch.func's alike. One thread, best of seven interleaved
rounds, this machine, one run; nothing is asserted.
"""

from __future__ import annotations

import torch
from common import best_time, print_table

from chaosgrad.maps import Map
from chaosgrad.models import NeuralMap

BATCH = 256
ROUNDS = 7


def rows_for(widths: tuple[int, ...]) -> list[tuple[str, str]]:
    net = NeuralMap(3, widths, dt=0.01, seed=0, output_gain=1.0)
    P = sum(p.numel() for p in net.params().values())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, 3, generator=g, dtype=torch.float64)
    V = torch.randn(BATCH, 3, 1, generator=g, dtype=torch.float64)
    w = V[..., 0]
    cases = {
        "jvp, 1 column": (lambda: net._jvp(x, V, 0), lambda: Map._jvp(net, x, V, 0)),
        "vjp, 1 column": (lambda: net._vjp(x, V, 0), lambda: Map._vjp(net, x, V, 0)),
        "param_vjp, keep = 0 (summed)": (lambda: net._param_vjp(x, w, 0, 0), lambda: Map._param_vjp(net, x, w, 0, 0)),
        "param_vjp, keep = None (per member)": (lambda: net._param_vjp(x, w, 0, 1),
                                                lambda: Map._param_vjp(net, x, w, 0, 1)),
        "step + param_vjp (keep = 0), fused": (lambda: net._step_param_vjp(x, w, 0, 0),
                                               lambda: (net.step(x), Map._param_vjp(net, x, w, 0, 0))),
        "vjp + param_vjp (keep = 0), fused": (lambda: net._vjp_param_vjp(x, w, 0, 0),
                                              lambda: (Map._vjp(net, x, V, 0), Map._param_vjp(net, x, w, 0, 0))),
    }
    timed = {"step": lambda: net.step(x)} | {(name, kind): fn for name, pair in cases.items()
                                              for kind, fn in zip(("closed", "generic"), pair)}
    # interleaved rounds, best of each: a busy neighbour slows every candidate alike
    number = {key: max(1, int(0.02 / best_time(fn, repeat=3))) for key, fn in timed.items()}  # ~20 ms each
    best = {key: float("inf") for key in timed}
    for _ in range(ROUNDS):
        for key, fn in timed.items():
            best[key] = min(best[key], best_time(fn, repeat=1, number=number[key]))
    step = best["step"]
    rows = [(f"P = {P:>6,} (widths {widths}): one step of {BATCH} states", f"{step * 1e6:8.1f} us")]
    for name in cases:
        closed, generic = best[name, "closed"], best[name, "generic"]
        rows.append((f"P = {P:>6,}: {name}",
                     f"{closed / step:6.2f} steps   ({generic / closed:5.1f} x faster than torch.func)"))
    return rows


def main() -> None:
    torch.set_num_threads(1)  # on a shared machine, one thread per process keeps the ratios steady
    rows = rows_for((32, 24)) + rows_for((140, 140))
    title = f"NeuralMap closed forms over one step, and their speed-up over torch.func ({BATCH} states, one thread)"
    print_table(title, rows)


if __name__ == "__main__":
    main()
