"""Cost of kernel differentiation (chaosgrad.kernel) over a plain forward simulation.

Kernel differentiation needs, per step, the map's derivative with respect to the parameter
(one vector) and a dot product with the noise already drawn: no Jacobian products. Its
wall time over that of simulating the same noisy paths (Noisy.trajectory) should be close
to 1: at most 1.3 where the map has a closed-form parameter derivative (the tanh network),
at most 3 through torch.func (Lorenz-63's parameter derivative). The path-kernel hybrid also pushes one
tangent vector per path, so it costs about one more step per step. Best of three, this
machine, one run.
"""

from __future__ import annotations

import torch
from common import best_time, print_table

from chaosgrad.kernel import kernel_derivative, path_kernel_derivative
from chaosgrad.networks import RandomNetwork
from chaosgrad.systems import Lorenz63, Noisy


def ratios(name, map, x0, T, observable, parameter):
    def simulate():
        return Noisy(map, sigma=0.05, seed=0).trajectory(x0, T)

    def kernel():
        return kernel_derivative(Noisy(map, sigma=0.05, seed=0), x0, T, observable, parameter)

    def hybrid():
        return path_kernel_derivative(Noisy(map, sigma=0.05, seed=0), x0, T, observable, parameter, 0.5)

    base = best_time(simulate, repeat=3)
    return [(f"{name}: kernel_derivative / simulation", f"{best_time(kernel, repeat=3) / base:.2f}"),
            (f"{name}: path_kernel_derivative / simulation", f"{best_time(hybrid, repeat=3) / base:.2f}")]


def main() -> None:
    torch.set_default_dtype(torch.float64)
    net = RandomNetwork(32, sigma_w2=9.0, sigma_b2=0.05, tied=True, seed=0)
    x_net = torch.randn(256, 32, generator=torch.Generator().manual_seed(1))
    x_lorenz = torch.tensor([1.0, 1.0, 20.0]) + torch.randn(256, 3, generator=torch.Generator().manual_seed(1))
    rows = ratios("tied tanh net N = 32, 256 paths x 500 steps (closed form)", net, x_net, 500,
                  lambda x: (x**2).mean(-1), "sigma_w")
    rows += ratios("Lorenz-63, 256 paths x 500 steps (torch.func)", Lorenz63(), x_lorenz, 500, lambda x: x[..., 2], "rho")
    print_table(f"Kernel differentiation cost over simulation ({torch.get_num_threads()} threads)", rows)


if __name__ == "__main__":
    main()
