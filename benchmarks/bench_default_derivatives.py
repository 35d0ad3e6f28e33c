"""Cost of a map's default derivatives (written with ``step`` only) over closed forms, before and after.

The README path: a user writes ``step`` and nothing else, and chaosgrad differentiates it.
Three RK4 time-step maps of chaotic flows: Lorenz-63 (3 dimensions; chaosgrad.systems.Lorenz63,
whose tangent, adjoint and parameter derivatives are closed forms, against the same class with
the Map defaults), and Lorenz-96, dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F with F = 8 and
dt = 0.01, in 40 and 256 dimensions (written with ``step`` only, against the same class with the
RK4 tangent recursion in closed form for ``_jvp``, ``_vjp`` and the derivatives in F). Each map
is run through ``lyapunov_spectrum`` (all exponents, a short run), ``kernel_derivative``
(parameter F, or rho for Lorenz-63; scalar) and ``nilsas`` (M = 2 for Lorenz-63, 14 for the
Lorenz-96 maps), three ways: closed forms, the default derivatives now (the k columns of a
tangent or adjoint basis taken as k extra ensemble members, one autograd pass), and the
default before (torch.func, vmapped over columns: ``Map._jvp_torch_func`` and friends). The
table gives each default's time over the closed forms' in the same run. The acceptance target
of issue 24 is at most 3x on the 40-dimensional map. One thread, best of three, this machine,
one run; nothing is asserted except that the three ways agree before they are timed.
"""

from __future__ import annotations

import warnings

import torch
from common import best_time, print_table

from chaosgrad import lyapunov_spectrum, nilsas
from chaosgrad.kernel import kernel_derivative
from chaosgrad.maps import Map, parameter
from chaosgrad.systems import Lorenz63, Noisy
from chaosgrad.validation import FewSamplesWarning


class Lorenz96(Map):
    """The time-``dt`` map of Lorenz-96 by one RK4 step, written with ``step`` only."""

    autonomous = True
    is_flow = True

    def __init__(self, dim: int, forcing: float = 8.0, dt: float = 0.01) -> None:
        super().__init__()
        self.dim = dim
        self.F = parameter(forcing)
        self.dt = dt

    def vector_field(self, x: torch.Tensor) -> torch.Tensor:
        return (x.roll(-1, -1) - x.roll(2, -1)) * x.roll(1, -1) - x + self.F

    def stages(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The RK4 stage points and the step."""
        h = self.dt
        k1 = self.vector_field(x)
        k2 = self.vector_field(x + h / 2 * k1)
        k3 = self.vector_field(x + h / 2 * k2)
        k4 = self.vector_field(x + h * k3)
        points = [x, x + h / 2 * k1, x + h / 2 * k2, x + h * k3]
        return points, x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

    def step(self, x: torch.Tensor, n: int = 0) -> torch.Tensor:
        return self.stages(x)[1]


def field_jvp(x: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """DF(x) V for the Lorenz-96 field: states (..., d), columns (..., d, k)."""
    x = x[..., None]
    return (V.roll(-1, -2) - V.roll(2, -2)) * x.roll(1, -2) + (x.roll(-1, -2) - x.roll(2, -2)) * V.roll(1, -2) - V


def field_vjp(x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """DF(x)^T W: (DF^T w)_j = w_{j-1} x_{j-2} - w_{j+2} x_{j+1} + w_{j+1} (x_{j+2} - x_{j-1}) - w_j."""
    x = x[..., None]
    return W.roll(1, -2) * x.roll(2, -2) - W.roll(-2, -2) * x.roll(-1, -2) + W.roll(-1, -2) * (x.roll(-2, -2) - x.roll(1, -2)) - W


class Lorenz96Closed(Lorenz96):
    """Lorenz-96 with the RK4 tangent recursion in closed form (what a user writes by hand)."""

    def _jvp(self, x, V, n):
        h, (p1, p2, p3, p4) = self.dt, self.stages(x)[0]
        V1 = field_jvp(p1, V)
        V2 = field_jvp(p2, V + h / 2 * V1)
        V3 = field_jvp(p3, V + h / 2 * V2)
        V4 = field_jvp(p4, V + h * V3)
        return V + h / 6 * (V1 + 2 * V2 + 2 * V3 + V4)

    def _vjp(self, x, W, n):
        h, (p1, p2, p3, p4) = self.dt, self.stages(x)[0]
        b4 = field_vjp(p4, h / 6 * W)
        b3 = field_vjp(p3, h / 3 * W + h * b4)
        b2 = field_vjp(p2, h / 3 * W + h / 2 * b3)
        b1 = field_vjp(p1, h / 6 * W + h / 2 * b2)
        return W + b1 + b2 + b3 + b4

    def _step_param_jvp(self, x, parameter, n):
        h, ((p1, p2, p3, p4), y) = self.dt, self.stages(x)
        one = torch.ones_like(x)[..., None]
        P2 = field_jvp(p2, h / 2 * one) + 1
        P3 = field_jvp(p3, h / 2 * P2) + 1
        P4 = field_jvp(p4, h * P3) + 1
        return y, (h / 6 * (one + 2 * P2 + 2 * P3 + P4))[..., 0]

    def _param_vjp(self, x, w, n, keep):
        dydF = self._step_param_jvp(x, "F", n)[1]
        return {"F": (w * dydF).sum(-1).sum(tuple(range(keep, x.dim() - 1)))}


def with_defaults(cls: type[Map], torch_func: bool) -> type[Map]:
    """``cls`` with every derivative replaced by the Map defaults (now, or the torch.func ones)."""
    names = ("_jvp", "_vjp", "_param_vjp", "_step_jvp", "_step_param_jvp", "_step_param_vjp", "_vjp_param_vjp")
    body = {name: getattr(Map, name) for name in names}
    if torch_func:
        body |= {"_jvp": Map._jvp_torch_func, "_vjp": Map._vjp_torch_func, "_param_vjp": Map._param_vjp_torch_func}
    return type(f"{cls.__name__}{'TorchFunc' if torch_func else 'Default'}", (cls,), body)


def observable(x: torch.Tensor) -> torch.Tensor:
    return x[..., -1]


# name, class of the closed forms, constructor arguments, parameter, NILSAS M, Lyapunov steps,
# kernel (members, steps), NILSAS (segments, segment steps)
CASES = [
    ("Lorenz-63, d = 3", Lorenz63, (), "rho", 2, 400, (64, 400), (8, 50)),
    ("Lorenz-96, d = 40", Lorenz96Closed, (40,), "F", 14, 100, (16, 200), (4, 25)),
    ("Lorenz-96, d = 256", Lorenz96Closed, (256,), "F", 14, 10, (4, 50), (2, 10)),
]


def check_agree(maps: list[Map], x: torch.Tensor, name: str) -> None:
    """The three ways give the same derivatives (1e-10) before they are timed."""
    g = torch.Generator().manual_seed(2)
    V = torch.randn(*x.shape, 3, generator=g, dtype=torch.float64)
    ref = maps[0]
    for other in maps[1:]:
        for a, b in [(ref._jvp(x, V, 0), other._jvp(x, V, 0)), (ref._vjp(x, V, 0), other._vjp(x, V, 0)),
                     (ref._step_param_jvp(x, name, 0)[1], other._step_param_jvp(x, name, 0)[1]),
                     (ref._param_vjp(x, V[..., 0], 0, 0)[name], other._param_vjp(x, V[..., 0], 0, 0)[name])]:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def rows_for(label, cls, args, name, M, lyap_steps, kernel_run, nilsas_run) -> list[tuple[str, str]]:
    maps = [cls(*args), with_defaults(cls, False)(*args), with_defaults(cls, True)(*args)]
    dim = maps[0].dim
    g = torch.Generator().manual_seed(0)
    x0 = maps[0].trajectory(torch.randn(4, dim, generator=g, dtype=torch.float64) + 1, 500)[-1]
    check_agree(maps, x0, name)
    members, T = kernel_run
    xk = x0[torch.arange(members) % 4]
    segments, L = nilsas_run
    work = {
        f"lyapunov_spectrum, all {dim} exponents, {lyap_steps} steps, 4 orbits":
            lambda m: lyapunov_spectrum(m, x0, lyap_steps, k=dim, blocks=2),
        f"kernel_derivative ({name}), {members} paths x {T} steps":
            lambda m: kernel_derivative(Noisy(m, sigma=0.1), xk, T, observable, name, blocks=2),
        f"nilsas ({name}), M = {M}, {segments} x {L} steps, 4 orbits":
            lambda m: nilsas(m, x0, observable, segments, L, n_unstable=M, parameter=name),
    }
    rows = []
    for task, run in work.items():
        closed, now, before = (best_time(lambda m=m: run(m), repeat=3) for m in maps)
        rows.append((f"{label}: {task}",
                     f"closed {closed:7.3f} s   default {now / closed:5.2f} x   (torch.func before: {before / closed:6.2f} x)"))
    return rows


def main() -> None:
    torch.set_num_threads(1)  # on a shared machine, one thread per process keeps the ratios steady
    warnings.simplefilter("ignore", FewSamplesWarning)  # 4 orbits: timings, not estimates
    rows = [row for case in CASES for row in rows_for(*case)]
    print_table("Default derivatives (step only) over closed forms: now, and torch.func before (one thread)", rows)


if __name__ == "__main__":
    main()
