"""Cost of the Map abstraction: tangent maps by closed form against torch.func.

For an ensemble of Henon states, the closed-form jvp/vjp of chaosgrad.systems.Henon are timed
against the generic torch.func versions that every user map gets for free. The ratio tells
how much a closed form is worth; neither is asserted anywhere.
"""

from __future__ import annotations

import torch
from common import best_time, print_table

import chaosgrad
from chaosgrad.systems import Henon, Lorenz63


def main() -> None:
    torch.manual_seed(0)
    henon = Henon()
    x = henon.trajectory(torch.full((100_000, 2), 0.1, dtype=torch.float64), 20)[-1]
    V = torch.randn(2, 2, dtype=torch.float64)
    closed = best_time(lambda: henon.jvp(x, V))
    generic = best_time(lambda: chaosgrad.Map._jvp(henon, x, V.expand(100_000, 2, 2), 0))
    closed_v = best_time(lambda: henon.vjp(x, V))
    generic_v = best_time(lambda: chaosgrad.Map._vjp(henon, x, V.expand(100_000, 2, 2), 0))
    lorenz = Lorenz63()
    y = lorenz.trajectory(torch.tensor([1.0, 1.0, 20.0], dtype=torch.float64).expand(10_000, 3), 100)[-1]
    lorenz_step = best_time(lambda: lorenz.step(y))
    lorenz_jvp = best_time(lambda: lorenz.jvp(y, torch.eye(3, dtype=torch.float64)))
    print_table(
        "Map derivatives (ensemble of 100,000 Henon states, 2 columns; 10,000 Lorenz-63 states, 3 columns)",
        [
            ("Henon jvp, closed form", f"{closed * 1e3:8.2f} ms"),
            ("Henon jvp, torch.func", f"{generic * 1e3:8.2f} ms   ({generic / closed:.1f} x the closed form)"),
            ("Henon vjp, closed form", f"{closed_v * 1e3:8.2f} ms"),
            ("Henon vjp, torch.func", f"{generic_v * 1e3:8.2f} ms   ({generic_v / closed_v:.1f} x the closed form)"),
            ("Lorenz-63 RK4 step", f"{lorenz_step * 1e3:8.2f} ms"),
            ("Lorenz-63 jvp (3 columns), closed form", f"{lorenz_jvp * 1e3:8.2f} ms   ({lorenz_jvp / lorenz_step:.1f} x one step)"),
        ],
    )


if __name__ == "__main__":
    main()
