"""Cost of the whole linear response (chaosgrad.linear_response) over NILSAS on the same run,
and over one backpropagation.

linear_response runs NILSAS's backward sweep with one more adjoint column, and adds a
tangent pass for the unstable frames e_n (u columns, over the warm-up and the run), an
adjoint pass for the frames w_n (u columns, from the end of the steps after the run), and the
gradients of ell_n = log|det(w^T Df e)| (a forward-mode product with u columns differentiated
in reverse mode, batched over steps). The issue's bound is 4 x NILSAS on the same run. The
unit "one backpropagation" is bench_shadowing's adjoint sweep along the same orbit. All timed
on this machine in the same run (best of three).
"""

from __future__ import annotations

import math

import torch
from bench_shadowing import backpropagation
from chaosgrad import linear_response, nilsas
from chaosgrad.networks import RandomNetwork
from chaosgrad.systems import Lorenz63, ModifiedSolenoid, PerturbedCat
from common import best_time, print_table


def measure(name, map, x0, observable, segments, segment_steps, warmup, window, m, parameter):
    steps = segments * segment_steps
    full = best_time(lambda: linear_response(map, x0, observable, segments, segment_steps, window=window, n_unstable=m,
                                             warmup=warmup, parameter=parameter), repeat=3)
    shadow = best_time(lambda: nilsas(map, x0, observable, segments, segment_steps, n_unstable=m, warmup=warmup,
                                      parameter=parameter), repeat=3)
    backprop = best_time(lambda: backpropagation(map, x0, observable, steps, warmup, parameter), repeat=3)
    return [(f"{name}: M, steps x members", f"{m}, {steps} x {x0.shape[0]}"),
            (f"{name}: linear_response / NILSAS", f"{full / shadow:.2f}  (bound 4)"),
            (f"{name}: linear_response / one backpropagation", f"{full / backprop:.2f}")]


def main() -> None:
    torch.set_default_dtype(torch.float64)
    g = torch.Generator().manual_seed(0)
    cat = PerturbedCat(0.1)
    rows = measure("perturbed cat", cat, torch.rand(64, 2, generator=g), lambda x: torch.cos(2 * math.pi * x[..., 1]),
                   100, 10, 100, 10, 1, "eps")
    sol = ModifiedSolenoid()
    rows += measure("solenoid (21 dims)", sol, 2 * math.pi * torch.rand(16, 21, generator=g), sol.observable,
                    50, 10, 100, 10, 20, "gamma1")
    lorenz = Lorenz63()
    rows += measure("Lorenz-63", lorenz, torch.tensor([1.0, 1.0, 20.0]) + torch.randn(16, 3, generator=g),
                    lambda x: x[..., 2], 20, 100, 500, 500, 2, "rho")
    net = RandomNetwork(32, sigma_w2=9.0, sigma_b2=0.05, tied=True, seed=0)
    x_net = net.trajectory(torch.randn(8, 32, generator=torch.Generator().manual_seed(1)), 300)[-1]
    rows += measure("tied tanh net N = 32", net, x_net, lambda x: (x**2).mean(-1), 100, 10, 100, 5, 4, "sigma_w")
    print_table(f"Whole linear response: cost ({torch.get_num_threads()} threads)", rows)


if __name__ == "__main__":
    main()
