r"""The one abstraction of chaosgrad: a discrete-time map on torch tensors.

A map is a (possibly time-dependent) function

.. math::  x_{n+1} = f_n(x_n; \gamma), \qquad x_n \in \mathbb{R}^d,

applied to tensors of shape ``(..., d)``: the last axis is the state, leading axes are an
ensemble of independent copies. A deep network is such a map with the layer index as time
``n``; a recurrent (tied-weight) network is autonomous; an ODE enters through its time-``h``
map; gradient descent is the map :math:`\theta \mapsto \theta - \alpha \nabla L(\theta)`.

Every algorithm of chaosgrad needs only three things from a map: ``step``, the tangent map
``jvp`` (:math:`V \mapsto Df_n(x) V`) and the adjoint map ``vjp``
(:math:`W \mapsto Df_n(x)^\top W`), plus derivatives with respect to the parameters
:math:`\gamma` (``param_jvp``, ``param_vjp``). Only ``step`` must be written; the others are
formed by automatic differentiation (batched reverse mode, checked against :mod:`torch.func`)
and may be replaced by closed forms for speed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.autograd import forward_ad

from .progress import progress_range
from .validation import as_state, check_finite, check_tangent, unknown_parameter_error

__all__ = ["Map", "parameter"]


def parameter(value: Any) -> torch.nn.Parameter:
    """A float64 map parameter, differentiated by :mod:`torch.func` (not by recorded autograd)."""
    return torch.nn.Parameter(torch.as_tensor(value, dtype=torch.float64), requires_grad=False)


class Map(torch.nn.Module):
    r"""Base class of every map :math:`x_{n+1} = f_n(x_n; \gamma)`.

    Subclass it, set ``dim`` and define :meth:`step`. Parameters :math:`\gamma` are
    registered with :func:`parameter` (a float64 :class:`torch.nn.Parameter` with
    ``requires_grad=False``: chaosgrad differentiates with :mod:`torch.func`, not by
    recording autograd graphs), so that
    :meth:`param_jvp` and :meth:`param_vjp` can differentiate with respect to them.

    To supply a closed-form Jacobian, override :meth:`_jvp` and :meth:`_vjp` (the public
    :meth:`jvp` and :meth:`vjp` check shapes first and then call them).

    Extension points (``x``: states ``(..., dim)``; ``V``, ``W``: columns ``(..., dim, k)``,
    already broadcast against ``x``; ``w``: covectors ``(..., dim)``; ``n``: the step index):

    ============================================  ==============================================
    override                                      returns
    ============================================  ==============================================
    ``step(x, n)`` (required)                     :math:`f_n(x)`, ``(..., dim)``
    ``_jvp(x, V, n)``                             :math:`Df_n(x)\,V`, ``(..., dim, k)``
    ``_vjp(x, W, n)``                             :math:`Df_n(x)^\top W`, ``(..., dim, k)``
    ``_step_jvp(x, V, n)``                        ``(step(x, n), _jvp(x, V, n))`` sharing work
    ``_param_vjp(x, w, n, keep)``                 ``{name: sum of (df/dgamma)^T w}``, shape
                                                  ``(*batch[:keep], *param.shape)``
    ``_step_param_jvp(x, parameter, n)``          ``(step(x, n), df/dgamma)`` for one scalar
                                                  parameter, both ``(..., dim)``
    ``param_jvp(x, dgamma, n)``                   :math:`\sum_j \partial_{\gamma_j} f_n\,\delta\gamma_j`,
                                                  ``(..., dim)``
    ``_log_expansion_gradients(x, E, W, n,        gradients of :math:`\log|\det(W^\top Df_n E)|`
    names)``                                      (:func:`~chaosgrad.response.log_expansion_gradients`)
    ============================================  ==============================================

    Only ``step`` is required; the defaults differentiate it (``_jvp``, ``_vjp`` and
    ``_param_vjp`` with ``keep = 0`` by batched reverse mode, the columns as extra ensemble
    members, checked once against :mod:`torch.func`; within about 1.1 to 1.7 times closed
    forms on RK4 flows of 3 to 256 dimensions, ``benchmarks/bench_default_derivatives.py``).
    Attributes:

    - ``dim`` (required): the length of the state vector.
    - ``autonomous`` (default False): set True when :math:`f_n` does not depend on ``n``; the
      algorithms then evaluate derivatives of many steps in one batched call (e.g. about 10x
      in :func:`~chaosgrad.kernel.kernel_derivative`).
    - ``is_flow`` (default False): set True for the time-``dt`` map of a flow
      :math:`\dot x = F(x)`, and define ``vector_field(x)`` (:math:`F`, ``(..., dim)`` to
      ``(..., dim)``) and ``dt``; :func:`~chaosgrad.shadowing.nilsas` then treats the neutral
      direction.

    ``step`` must be a function of ``(x, n)`` and the parameters written with torch
    operations (no NumPy, no ``.item()``), since the default derivatives differentiate it
    by automatic differentiation. A random time-dependent map, such as a product of Gaussian
    matrices, draws its matrix at step ``n`` from a generator seeded by ``n``
    (``torch.Generator().manual_seed(n)``), so that every evaluation of step ``n`` sees the
    same matrix; an unseeded draw would give the derivatives a different matrix than the
    orbit.

    Examples
    --------
    >>> import torch, chaosgrad
    >>> class Tent(chaosgrad.Map):
    ...     dim = 1
    ...     def __init__(self, mu=1.9):
    ...         super().__init__()
    ...         self.mu = chaosgrad.parameter(mu)
    ...     def step(self, x, n=0):
    ...         return self.mu * torch.minimum(x, 1 - x)
    >>> Tent().trajectory(torch.tensor([0.2], dtype=torch.float64), 3).squeeze(-1)
    tensor([0.2000, 0.3800, 0.7220, 0.5282], dtype=torch.float64)
    """

    dim: int

    #: True when :math:`f_n` does not depend on ``n`` (one map iterated; a tied network); lets
    #: algorithms evaluate derivatives for many steps in one batched call. Default False.
    autonomous: bool = False

    #: True when the map is the time-``dt`` map of a flow :math:`\dot x = F(x)` (an ODE solver's
    #: step): the map must then also define ``vector_field(x)`` (:math:`F`, states ``(..., dim)``
    #: to ``(..., dim)``) and ``dt``. NILSAS then counts the neutral direction :math:`F` and adds
    #: the time-dilation condition (:func:`~chaosgrad.shadowing.nilsas`). Default False: a map.
    is_flow: bool = False

    # -- the map ------------------------------------------------------------------------
    def step(self, x: Tensor, n: int = 0) -> Tensor:
        """Apply :math:`f_n` to states ``x`` of shape ``(..., dim)``; return the same shape.

        Leading axes must be treated independently (an ensemble): the output of one member
        may not depend on another.
        """
        raise NotImplementedError(f"{type(self).__name__} must define step(self, x, n=0)")

    def forward(self, x: Tensor, n: int = 0) -> Tensor:
        """``map(x, n)``: :meth:`step` after checking the shape of ``x``."""
        return self.step(self.check_state(x), n)

    def __getattr__(self, name: str) -> Any:
        if name == "dim":  # reached only when a subclass never set it
            raise AttributeError(f"{type(self).__name__} has no dim: set the length of its state vector as a "
                                 "class attribute (dim = 3) or in __init__ (self.dim = n)")
        return super().__getattr__(name)

    def check_state(self, x: Any, name: str = "x") -> Tensor:
        """Return ``x`` as a float tensor of shape ``(..., dim)``, or raise a clear error."""
        return as_state(x, self.dim, name=name, owner=type(self).__name__)

    def trajectory(self, x0: Any, steps: int, n0: int = 0, progress: bool | None = None) -> Tensor:
        """The orbit :math:`x_{n_0}, x_{n_0+1}, \\dots, x_{n_0+\\text{steps}}`.

        Parameters
        ----------
        x0
            Initial state(s), shape ``(..., dim)``.
        steps
            Number of steps, >= 0.
        n0
            Time index of ``x0`` (for time-dependent maps such as the layers of a network).
        progress
            Show a progress bar; ``None`` shows one only in an interactive terminal.

        Returns
        -------
        Tensor of shape ``(steps + 1, ..., dim)``.

        Raises
        ------
        NonFiniteStateError
            If a state becomes inf or NaN; the message names the step.
        """
        if int(steps) != steps or steps < 0:
            raise ValueError(f"steps must be a whole number >= 0; got steps = {steps}")
        x = check_finite(self.check_state(x0, "x0"), "initial state x0", step=n0)
        out = x.new_empty((int(steps) + 1, *x.shape))
        out[0] = x
        with torch.no_grad():
            for i in progress_range(int(steps), progress, desc=f"{type(self).__name__} trajectory"):
                x = check_finite(self.step(x, n0 + i), "state", step=n0 + i + 1)
                out[i + 1] = x
        return out

    # -- derivatives with respect to the state --------------------------------------------
    def jvp(self, x: Tensor, V: Tensor, n: int = 0) -> Tensor:
        r"""Tangent map: :math:`Df_n(x)\,V` for ``V`` of shape ``(..., dim, k)``.

        The leading axes of ``V`` broadcast against the ensemble axes of ``x``; the result
        has the broadcast shape ``(..., dim, k)``.
        """
        x = self.check_state(x)
        V = check_tangent(V, x, self.dim, "V", type(self).__name__)
        x, V = _broadcast(x, V)
        return self._jvp(x, V, n)

    def step_jvp(self, x: Tensor, V: Tensor, n: int = 0) -> tuple[Tensor, Tensor]:
        r"""One step of the state and its tangent vectors together: :math:`(f_n(x),\, Df_n(x)\,V)`.

        Algorithms that advance both (Lyapunov spectra) call this; a map whose step and
        Jacobian share work (a network layer's pre-activation) may override
        :meth:`_step_jvp` to do it once.
        """
        x = self.check_state(x)
        V = check_tangent(V, x, self.dim, "V", type(self).__name__)
        x, V = _broadcast(x, V)
        return self._step_jvp(x, V, n)

    def _step_jvp(self, x: Tensor, V: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """Default: :meth:`step` and :meth:`_jvp` separately."""
        return self.step(x, n), self._jvp(x, V, n)

    def vjp(self, x: Tensor, W: Tensor, n: int = 0) -> Tensor:
        r"""Adjoint map: :math:`Df_n(x)^\top W` for ``W`` of shape ``(..., dim, k)``.

        One step of backpropagation: the columns of ``W`` are covectors at
        :math:`x_{n+1}` pulled back to :math:`x_n`.
        """
        x = self.check_state(x)
        W = check_tangent(W, x, self.dim, "W", type(self).__name__)
        x, W = _broadcast(x, W)
        return self._vjp(x, W, n)

    def _jvp(self, x: Tensor, V: Tensor, n: int) -> Tensor:
        r"""Default tangent map :math:`Df_n(x)\,V`: the ``k`` columns of ``V`` become ``k`` extra
        ensemble members at the same state, differentiated by reverse mode in one batched call
        (:func:`_jvp_by_reverse_mode`), no :func:`torch.func.vmap`. Falls back to
        :meth:`_jvp_torch_func` if that pass raises (see :func:`_fast_or_torch_func`)."""
        return _fast_or_torch_func(self, "jvp", lambda: _jvp_by_reverse_mode(self, x, V, n),
                                   lambda: self._jvp_torch_func(x, V, n))

    def _jvp_torch_func(self, x: Tensor, V: Tensor, n: int) -> Tensor:
        """Tangent map by forward-mode :func:`torch.func.jvp`, vmapped over columns (the fallback
        of :meth:`_jvp`)."""

        def column(v: Tensor) -> Tensor:
            return torch.func.jvp(lambda y: self.step(y, n), (x,), (v,))[1]

        # randomness="same": a step that draws its matrix from a generator seeded by n
        # gets the same draw for every column (the default mode refuses random draws)
        return _differentiating(self, lambda: torch.func.vmap(column, in_dims=-1, out_dims=-1,
                                                                randomness="same")(V))

    def _vjp(self, x: Tensor, W: Tensor, n: int) -> Tensor:
        r"""Default adjoint map :math:`Df_n(x)^\top W`: the ``k`` columns of ``W`` become ``k``
        extra ensemble members at the same state, pulled back by one reverse pass
        (:func:`_vjp_by_reverse_mode`), no :func:`torch.func.vmap`. Falls back to
        :meth:`_vjp_torch_func` if that pass raises (see :func:`_fast_or_torch_func`)."""
        return _fast_or_torch_func(self, "vjp", lambda: _vjp_by_reverse_mode(self, x, W, n),
                                   lambda: self._vjp_torch_func(x, W, n))

    def _vjp_torch_func(self, x: Tensor, W: Tensor, n: int) -> Tensor:
        """Adjoint map by reverse-mode :func:`torch.func.vjp`, vmapped over columns (the fallback
        of :meth:`_vjp`)."""
        def pull() -> Tensor:
            _, pullback = torch.func.vjp(lambda y: self.step(y, n), x)
            return torch.func.vmap(lambda w: pullback(w)[0], in_dims=-1, out_dims=-1)(W)

        return _differentiating(self, pull)

    # -- derivatives with respect to the parameters ---------------------------------------
    def params(self) -> dict[str, Tensor]:
        r"""The differentiable parameters :math:`\gamma`, by name."""
        return dict(self.named_parameters())

    def param_jvp(self, x: Tensor, dgamma: dict[str, Any], n: int = 0) -> Tensor:
        r"""Directional derivative :math:`\sum_j \partial f_n/\partial\gamma_j \,\delta\gamma_j`.

        Parameters
        ----------
        x
            States, shape ``(..., dim)``.
        dgamma
            Perturbation of some parameters, by name (see :meth:`params`); parameters not
            named are held fixed.

        Returns
        -------
        Tensor of shape ``(..., dim)``.
        """
        x = self.check_state(x)
        params = self.params()
        unknown = set(dgamma) - set(params)
        if unknown:
            raise unknown_parameter_error(self, unknown)
        tangents = {
            k: torch.as_tensor(dgamma[k], dtype=p.dtype).expand_as(p) if k in dgamma else torch.zeros_like(p)
            for k, p in params.items()
        }
        return _differentiating(self, lambda: torch.func.jvp(lambda p: self._call_with(p, x, n), (params,),
                                                             (tangents,))[1])

    def _step_param_jvp(self, x: Tensor, parameter: str, n: int) -> tuple[Tensor, Tensor]:
        r"""(:math:`f_n(x)`, :math:`\partial f_n/\partial\gamma` for one scalar parameter) in one go;
        override it where the two share work (kernel differentiation calls it every step).

        By default one forward-mode pass gives both. Every input gets an explicit tangent
        (zeros except the parameter's): an input without one would get PyTorch's implicit zero
        tangent, whose arithmetic runs through Python decompositions and costs about twice as
        much on small maps."""
        params = self.params()
        if parameter not in params:
            raise unknown_parameter_error(self, parameter)
        with forward_ad.dual_level():
            duals = {k: forward_ad.make_dual(p.detach(), torch.ones_like(p) if k == parameter else torch.zeros_like(p))
                     for k, p in params.items()}
            state = forward_ad.make_dual(x.detach(), torch.zeros_like(x))
            y, tangent = forward_ad.unpack_dual(self._call_with(duals, state, n))
        return y, torch.zeros_like(y) if tangent is None else tangent

    def _log_expansion_gradients(self, x: Tensor, E: Tensor, W: Tensor, n: int,
                                 names: list[str]) -> tuple[Tensor, Tensor] | None:
        r"""Closed-form gradients of :math:`\log|\det(W^\top D_xf_n(x)E)|` with respect to the
        state and the named scalar parameters (see
        :func:`~chaosgrad.response.log_expansion_gradients`, which calls this first); ``None``
        (the default) lets :mod:`torch.func` differentiate :meth:`step` twice instead."""
        return None

    def param_vjp(self, x: Tensor, w: Tensor, n: int = 0, keep: int | None = None) -> dict[str, Tensor]:
        r"""Gradients :math:`(\partial f_n/\partial\gamma)^\top w` for every parameter, per
        member or summed over members.

        Parameters
        ----------
        x, w
            States and covectors, both of shape ``(..., dim)`` (broadcast against each other).
        keep
            How many leading ensemble axes to keep; the gradients of the members along the
            other ensemble axes are summed. ``None`` (default) keeps every axis: one gradient
            per member. ``keep = 0`` sums over the whole ensemble, which is what an estimator
            that needs only a total (or the totals of a few groups of members) should ask
            for: it costs one reverse pass instead of one per member.

        Returns
        -------
        dict mapping each parameter name to a tensor of shape
        ``(*batch[:keep], *param.shape)``: :math:`\sum \partial \langle w, f_n(x;\gamma)\rangle /
        \partial\gamma` over the summed members.

        Raises
        ------
        ValueError
            For ``keep`` outside ``0..len(batch)``.
        """
        x = self.check_state(x)
        w = self.check_state(w, "w")
        batch = torch.broadcast_shapes(x.shape[:-1], w.shape[:-1])
        keep = len(batch) if keep is None else keep
        if int(keep) != keep or not 0 <= keep <= len(batch):
            raise ValueError(f"keep must be a whole number of leading ensemble axes between 0 and {len(batch)} "
                             f"(the ensemble shape is {tuple(batch)}); got keep = {keep}")
        return self._param_vjp(x.expand(*batch, self.dim), w.expand(*batch, self.dim), n, int(keep))

    def _param_vjp(self, x: Tensor, w: Tensor, n: int, keep: int) -> dict[str, Tensor]:
        r"""Default :meth:`param_vjp`. ``keep = 0``: one reverse pass of :math:`\sum w \cdot f_n(x)`
        with respect to the parameters (:func:`torch.autograd.grad`), falling back to
        :meth:`_param_vjp_torch_func` if it raises; ``keep > 0``: :meth:`_param_vjp_torch_func`.
        ``x`` and ``w`` have the same shape."""
        if keep:
            return self._param_vjp_torch_func(x, w, n, keep)
        return _fast_or_torch_func(self, "param_vjp", lambda: _param_vjp_summed(self, x, w, n),
                                   lambda: self._param_vjp_torch_func(x, w, n, keep))

    def _param_vjp_torch_func(self, x: Tensor, w: Tensor, n: int, keep: int) -> dict[str, Tensor]:
        """:meth:`param_vjp` by reverse-mode :func:`torch.func.vjp`: one pass for the summed
        members, vmapped over the kept ones. ``x`` and ``w`` have the same shape."""
        batch = x.shape[:-1]
        kept = batch[:keep]
        xf = x.reshape(kept.numel(), -1, self.dim)
        wf = w.reshape(kept.numel(), -1, self.dim)
        params = self.params()

        def one(xb: Tensor, wb: Tensor) -> dict[str, Tensor]:
            _, pullback = torch.func.vjp(lambda p: self._call_with(p, xb, n), params)
            return pullback(wb)[0]

        grads = _differentiating(self, lambda: torch.func.vmap(one, randomness="same")(xf, wf))
        return {k: g.reshape((*kept, *params[k].shape)) for k, g in grads.items()}

    def _step_param_vjp(self, x: Tensor, w: Tensor, n: int, keep: int) -> tuple[Tensor, dict[str, Tensor]]:
        r"""(:math:`f_n(x)`, :meth:`param_vjp` of ``w`` at ``x``) in one go: kernel
        differentiation calls it every step with the noise as ``w``. Default: the two
        separately; override it where they share work (a network's forward pass)."""
        return self.step(x, n), self._param_vjp(x, w, n, keep)

    def _vjp_param_vjp(self, x: Tensor, w: Tensor, n: int, keep: int) -> tuple[Tensor, dict[str, Tensor]]:
        r"""(:math:`Df_n(x)^\top w`, :meth:`param_vjp` of ``w``) for one covector ``w`` of shape
        ``(..., dim)``: one step of backpropagation with respect to the state and every
        parameter. Default: the two separately; override it where they share a reverse pass."""
        return self._vjp(x, w[..., None], n)[..., 0], self._param_vjp(x, w, n, keep)

    def _call_with(self, params: dict[str, Tensor], x: Tensor, n: int) -> Tensor:
        """``step`` with the parameters named in ``params`` replaced (for :mod:`torch.func` and
        training loops), by :func:`torch.func.functional_call`; a map may override it to compute
        the step from ``params`` directly (:class:`~chaosgrad.models.NeuralMap` does)."""
        return torch.func.functional_call(self, params, (x, n))


#: What the fast default derivatives catch before falling back to :mod:`torch.func`: a step
#: that refuses the extra column axis (a fixed ensemble shape), an operation without a
#: (double) backward, a step that detaches its output from autograd.
_FAST_PATH_ERRORS = (RuntimeError, TypeError, ValueError, IndexError)


def _fast_or_torch_func(map: Map, kind: str, fast: Callable[[], Any], fallback: Callable[[], Any]) -> Any:
    """The fast default derivative ``fast`` (columns as ensemble members, batched reverse mode),
    checked once per map and ``kind`` against the :mod:`torch.func` version ``fallback``.

    The fast path relies on the Map contract (leading axes are independent members), which
    a step can break without raising. So the first call on a map
    runs both and returns the :mod:`torch.func` result: if :mod:`torch.func` fails,
    :func:`_differentiating` names what ``step`` must do (as before); if the fast path raises
    (a step written for a fixed ensemble shape) or disagrees (a step that mixes members, e.g.
    by ``.item()`` of a sum over all entries, or draws unseeded random numbers; a warning says
    so), the map keeps :mod:`torch.func` for
    ``kind``; otherwise later calls take the fast path alone. The choice is stored in
    ``map._default_derivatives`` (``kind``: ``"fast"`` or ``"torch.func"``).
    """
    chosen = map.__dict__.setdefault("_default_derivatives", {})
    if chosen.get(kind) == "fast":
        return fast()
    if chosen.get(kind) == "torch.func":
        return fallback()
    try:
        result = fast()
    except _FAST_PATH_ERRORS:
        result = None
    reference = fallback()
    chosen[kind] = "fast" if result is not None and _agree(result, reference) else "torch.func"
    if result is not None and chosen[kind] != "fast":
        warnings.warn(f"the default {kind} of {type(map).__name__}.step by batched reverse mode disagrees with "
                      "torch.func's: step mixes ensemble members (leading axes must be independent: no sum or "
                      ".item() over all entries), or draws random numbers from an unseeded generator (seed it by "
                      "the step index n); using torch.func",
                      RuntimeWarning, stacklevel=4)
    return reference


def _agree(a: Tensor | dict[str, Tensor], b: Tensor | dict[str, Tensor]) -> bool:
    """Equal to 1e-8 of the largest entry (the fast and torch.func derivatives differ by ulps)."""
    pairs = [(a[k], b[k]) for k in b] if isinstance(b, dict) else [(a, b)]
    if isinstance(b, dict) and a.keys() != b.keys():
        return False
    return all(x.shape == y.shape and (y.numel() == 0 or bool((x - y).abs().max() <= 1e-8 * (1 + y.abs().max())))
               for x, y in pairs)


def _columns_as_members(x: Tensor, k: int) -> Tensor:
    """States ``(..., dim)`` repeated as ``k`` members ``(..., k, dim)``: contiguous, detached, recording."""
    return x.detach()[..., None, :].expand(*x.shape[:-1], k, x.shape[-1]).contiguous().requires_grad_(True)


def _pullback(map: Map, x: Tensor, n: int, cotangents: Tensor) -> Tensor:
    r"""One reverse pass with the rows of ``cotangents`` ``(..., m, dim)`` as ``m`` members at ``x``:
    row :math:`j` of the result is :math:`Df_n(x)^\top w_j`."""
    state = _columns_as_members(x, cotangents.shape[-2])
    with torch.enable_grad():
        y = map.step(state, n)
        if not y.requires_grad:  # the output ignores the state
            return torch.zeros_like(state)
        (grad,) = torch.autograd.grad(y, state, cotangents, allow_unused=True)
    return torch.zeros_like(state) if grad is None else grad


def _jacobian(map: Map, x: Tensor, n: int) -> Tensor:
    r""":math:`Df_n(x)`, shape ``(..., dim, dim)``: one reverse pass with the ``dim`` unit covectors."""
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    return _pullback(map, x, n, eye.expand(*x.shape[:-1], *eye.shape))


def _jacobian_pays(x: Tensor, k: int, passes: int) -> bool:
    """Whether forming the Jacobian (a reverse pass of ``dim`` members per state) costs less than
    ``passes`` reverse passes of ``k`` members, or is small anyway (at most 2**15 numbers, where
    the per-operation overhead dominates); measured by benchmarks/bench_default_derivatives.py."""
    states, dim = x[..., 0].numel(), x.shape[-1]
    return states * dim * dim <= max(passes * states * dim * k, 2**15)


def _jvp_by_reverse_mode(map: Map, x: Tensor, V: Tensor, n: int) -> Tensor:
    r""":math:`Df_n(x)\,V` by reverse mode, the columns of ``V`` as ensemble members.

    Few columns: the double-backward identity :math:`Df\,V = \partial_u \langle Df^\top u, V\rangle`
    (one reverse pass recorded with a dummy covector ``u``, then differentiated with respect to
    ``u``: about three reverse passes of ``k`` members). Many columns, or a small problem: the
    Jacobian from one reverse pass of ``dim`` members, times ``V``. Both beat forward-mode AD here:
    PyTorch's forward mode gives Python numbers in ``step`` a zero tangent whose arithmetic runs
    through Python decompositions, about 2 ms per RK4 step whatever the size."""
    k = V.shape[-1]
    if _jacobian_pays(x, k, passes=3):
        return _jacobian(map, x, n) @ V
    state = _columns_as_members(x, k)
    with torch.enable_grad():
        y = map.step(state, n)
        if not y.requires_grad:  # the output ignores the state
            return torch.zeros_like(V)
        u = torch.zeros_like(y, requires_grad=True)
        (pulled,) = torch.autograd.grad(y, state, u, create_graph=True, allow_unused=True)
        if pulled is None or not pulled.requires_grad:  # the output ignores the state, or is affine in it
            return _jacobian(map, x, n) @ V
        (tangent,) = torch.autograd.grad(pulled, u, V.mT, allow_unused=True)
    return (torch.zeros_like(y) if tangent is None else tangent).mT


def _vjp_by_reverse_mode(map: Map, x: Tensor, W: Tensor, n: int) -> Tensor:
    r""":math:`Df_n(x)^\top W` by one reverse pass with the columns of ``W`` as ensemble members
    (the gradient of :math:`\sum_j \langle w_j, f_n(x_j)\rangle` at copies :math:`x_j = x`), or,
    for more columns than ``dim``, the Jacobian's transpose times ``W``."""
    if _jacobian_pays(x, W.shape[-1], passes=1):
        return _jacobian(map, x, n).mT @ W
    return _pullback(map, x, n, W.mT).mT


def _param_vjp_summed(map: Map, x: Tensor, w: Tensor, n: int) -> dict[str, Tensor]:
    r""":meth:`Map.param_vjp` with ``keep = 0``: the gradient of :math:`\sum \langle w, f_n(x;\gamma)\rangle`
    with respect to every parameter, by one reverse pass."""
    params = {name: p.detach().requires_grad_(True) for name, p in map.params().items()}
    if not params:
        return {}
    with torch.enable_grad():
        total = (map._call_with(params, x.detach(), n) * w).sum()
        if not total.requires_grad:  # the output ignores every parameter
            return {name: torch.zeros_like(p) for name, p in params.items()}
        grads = torch.autograd.grad(total, list(params.values()), allow_unused=True)
    return {name: torch.zeros_like(p) if g is None else g for (name, p), g in zip(params.items(), grads)}


def _differentiating(map: Map, derivative: Callable[[], Tensor]) -> Any:
    """Run a :mod:`torch.func` derivative of ``map.step``; a failure inside it (NumPy or
    ``.item()`` in ``step``, in-place updates of captured tensors) is re-raised with what
    ``step`` must do instead, the original error chained."""
    try:
        return derivative()
    except (RuntimeError, TypeError) as error:
        kind = type(error) if type(error) in (RuntimeError, TypeError) else RuntimeError
        raise kind(
            f"differentiating {type(map).__name__}.step with torch.func failed: {error}. The default "
            "derivatives need step written with torch operations on its inputs (no NumPy, no .item() "
            "or float() of a tensor, no in-place update of a tensor it does not own); otherwise "
            "override _jvp and _vjp with closed forms"
        ) from error


def _broadcast(x: Tensor, V: Tensor) -> tuple[Tensor, Tensor]:
    """Expand states ``(..., d)`` and columns ``(..., d, k)`` to a common ensemble shape."""
    batch = torch.broadcast_shapes(x.shape[:-1], V.shape[:-2])
    return x.expand(*batch, x.shape[-1]), V.expand(*batch, *V.shape[-2:])
