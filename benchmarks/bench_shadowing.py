"""Cost of NILSAS (chaosgrad.nilsas) in units of one backpropagation over the same orbit.

NILSAS backpropagates M homogeneous adjoint solutions and one inhomogeneous one together,
renormalises them by QR at segment boundaries and solves a small least-squares problem, so
its cost should be about (M + 1) backpropagations; the issue's bound is 1.5 (M + 1). The
unit, "one backpropagation", is the adjoint sweep a user would write for dJ/dgamma along a
stored orbit: the forward run, the observable's gradient, then nu_n = Df_n^T nu_{n+1} + source
with the map's own vjp and the pairing with df/dgamma at every step, done as the library
does it (closed-form vjp; df/dgamma batched over steps for an autonomous map). Both are timed
on this machine in the same run (best of three).
"""

from __future__ import annotations

import torch
from chaosgrad import nilsas
from chaosgrad.networks import RandomNetwork
from chaosgrad.systems import Lorenz63
from common import best_time, print_table


def backpropagation(map, x0, observable, steps, warmup, parameter):
    """One adjoint sweep for d J_N / d gamma along the orbit of x0 (the unit of cost)."""
    orbit = map.trajectory(x0, warmup + steps)[warmup:]
    with torch.enable_grad():
        states = orbit.detach().requires_grad_(True)
        (sources,) = torch.autograd.grad(observable(states).sum(), states)
    sources = sources / steps
    dfdg = map.param_jvp(orbit[:-1], {parameter: 1.0})
    nu, total = torch.zeros_like(orbit[0]), torch.zeros(orbit.shape[1:-1], dtype=orbit.dtype)
    for n in range(steps - 1, -1, -1):
        nu = nu + sources[n + 1]
        total = total + (nu * dfdg[n]).sum(-1)
        nu = map._vjp(orbit[n], nu[..., None], n)[..., 0]
    return total


def measure(name, map, x0, observable, segments, segment_steps, warmup, m, parameter):
    steps = segments * segment_steps
    shadow = best_time(lambda: nilsas(map, x0, observable, segments, segment_steps, n_unstable=m, warmup=warmup), repeat=3)
    backprop = best_time(lambda: backpropagation(map, x0, observable, steps, warmup, parameter), repeat=3)
    ratio = shadow / backprop
    return [(f"{name}: M, steps x members", f"{m}, {steps} x {x0.shape[0]}"),
            (f"{name}: NILSAS / one backpropagation", f"{ratio:.2f}  (bound 1.5 (M + 1) = {1.5 * (m + 1):.1f})")]


def main() -> None:
    torch.set_default_dtype(torch.float64)
    net = RandomNetwork(32, sigma_w2=9.0, sigma_b2=0.05, tied=True, seed=0)
    x_net = net.trajectory(torch.randn(8, 32, generator=torch.Generator().manual_seed(1)), 300)[-1]
    lorenz = Lorenz63()
    x_lorenz = torch.tensor([1.0, 1.0, 20.0]) + torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    rows = measure("tied tanh net N = 32", net, x_net, lambda x: (x**2).mean(-1), 100, 20, 0, 4, "sigma_w")
    rows += measure("Lorenz-63", lorenz, x_lorenz, lambda x: x[..., 2], 50, 100, 500, 2, "rho")
    print_table(f"NILSAS cost in backpropagations ({torch.get_num_threads()} threads)", rows)


if __name__ == "__main__":
    main()
