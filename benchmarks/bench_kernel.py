"""Cost of kernel differentiation (chaosgrad.kernel) over a plain forward simulation.

Kernel differentiation needs, per step, the map's derivative with respect to the parameter
(one vector) and a dot product with the noise already drawn: no Jacobian products. Its
wall time over that of simulating the same noisy paths (Noisy.trajectory) should be close
to 1: at most 1.3 where the map has a closed-form parameter derivative (the tanh network,
Lorenz-63's RK4 stages), at most 3 through torch.func (the same maps with the closed form
switched off, so that Map._step_param_jvp's forward-mode pass does the work). Both maps are
autonomous, so kernel_derivative takes the parameter derivatives of a block of stored
states in one call. The path-kernel hybrid also pushes one tangent vector per path and takes
the parameter derivative step by step, so it costs about one more step per step (more
through torch.func, whose per-call overhead dominates small maps).
Best of five interleaved rounds, this machine, one run.
"""

from __future__ import annotations

import torch
from common import best_time, print_table

from chaosgrad.kernel import kernel_derivative, path_kernel_derivative
from chaosgrad.maps import Map
from chaosgrad.networks import RandomNetwork
from chaosgrad.systems import Lorenz63, Noisy


class GenericNetwork(RandomNetwork):
    """The network with its parameter derivative through torch.func."""

    _step_param_jvp = Map._step_param_jvp


class GenericLorenz(Lorenz63):
    """Lorenz-63 with its parameter derivative through torch.func."""

    _step_param_jvp = Map._step_param_jvp


def ratios(name, map, x0, T, observable, parameter):
    def simulate():
        return Noisy(map, sigma=0.05, seed=0).trajectory(x0, T)

    def kernel():
        return kernel_derivative(Noisy(map, sigma=0.05, seed=0), x0, T, observable, parameter)

    def hybrid():
        return path_kernel_derivative(Noisy(map, sigma=0.05, seed=0), x0, T, observable, parameter, 0.5)

    # interleaved rounds, best of each: a busy neighbour slows all three alike
    best = {f: float("inf") for f in (simulate, kernel, hybrid)}
    for _ in range(5):
        for f in best:
            best[f] = min(best[f], best_time(f, repeat=1))
    base = best[simulate]
    return [(f"{name}: kernel_derivative / simulation", f"{best[kernel] / base:.2f}"),
            (f"{name}: path_kernel_derivative / simulation", f"{best[hybrid] / base:.2f}")]


def main() -> None:
    torch.set_default_dtype(torch.float64)
    x_net = torch.randn(256, 32, generator=torch.Generator().manual_seed(1))
    x_lorenz = torch.tensor([1.0, 1.0, 20.0]) + torch.randn(256, 3, generator=torch.Generator().manual_seed(1))
    activity, height = (lambda x: (x**2).mean(-1)), (lambda x: x[..., 2])
    rows = []
    for label, cls in (("closed form", RandomNetwork), ("torch.func", GenericNetwork)):
        net = cls(32, sigma_w2=9.0, sigma_b2=0.05, tied=True, seed=0)
        rows += ratios(f"tied tanh net N = 32, 256 paths x 500 steps ({label})", net, x_net, 500, activity, "sigma_w")
    for label, cls in (("closed form", Lorenz63), ("torch.func", GenericLorenz)):
        rows += ratios(f"Lorenz-63, 256 paths x 500 steps ({label})", cls(), x_lorenz, 500, height, "rho")
    print_table(f"Kernel differentiation cost over simulation ({torch.get_num_threads()} threads)", rows)


if __name__ == "__main__":
    main()
