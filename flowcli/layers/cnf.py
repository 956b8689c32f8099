"""Continuous normalizing flow: ``cnf``."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .base import Layer, check, register
from .mlp_jacobian import ACTIVATIONS_WITH_SLOPE, JacobianMLP

ADAPTIVE_SOLVERS = ("dopri5", "dopri8", "bosh3", "adaptive_heun")
FIXED_SOLVERS = ("rk4", "midpoint", "euler")
EVAL_PROBE_SEED = 0  # fixed Hutchinson probes keep evaluation deterministic when the trace is estimated


def _odeint() -> Any:
    """torchdiffeq's ``odeint``, imported on first use (it pulls in scipy: seconds that models without a
    cnf layer should not pay). The import runs outside inference mode: torchdiffeq builds its Butcher
    tableaus at import, and tensors created under ``torch.inference_mode`` (as when a model scores a file)
    could never again be used where autograd is on, e.g. in training afterwards in the same process."""
    with torch.inference_mode(False):
        from torchdiffeq import odeint
    return odeint


@register("cnf")
class CNF(Layer):
    """Continuous normalizing flow: z = x(T) where dx/dt = f(x, t), f an MLP with time as an extra input.

    Chen, Rubanova, Bettencourt & Duvenaud (2018), "Neural Ordinary Differential Equations"; Grathwohl,
    Chen, Bettencourt, Sutskever & Duvenaud (2019), "FFJORD: Free-form Continuous Dynamics for Scalable
    Reversible Generative Models". Solved with torchdiffeq (the ODE library of those papers).

    log|det dz/dx| = ∫_0^T tr(∂f/∂x(x(t), t)) dt, integrated alongside the state. The trace is exact
    (Jacobian of the MLP from its layer slopes, no autograd) when ``trace: exact``, or ``auto`` and
    dim <= ``exact_max_dim``; otherwise Hutchinson's estimator εᵀ(∂f/∂x)ε with one Gaussian probe per row,
    drawn once per solve (FFJORD). Evaluation (``model.eval()``) uses the exact trace for dim <=
    ``exact_max_dim`` even under ``trace: hutchinson``; above it, fixed probes (deterministic scores, but
    a noisy estimate: set ``trace: exact`` for exact scores on wide tables, at dim Jacobian products per step).

    Solver: ``solver`` (dopri5 default; adaptive: dopri5, dopri8, bosh3, adaptive_heun with ``atol``/``rtol``;
    fixed grid: rk4, midpoint, euler with ``steps`` steps). Training uses ``atol``/``rtol``; evaluation
    uses the tighter ``eval_tolerance`` for both (but not below ten machine epsilons of the dtype), so
    scores, samples and round trips are accurate in float64. Gradients backpropagate through the solver's
    steps (no adjoint method: it recomputes the trajectory backwards, which is slower and, for these small
    networks, not needed for memory).

    Time: the ODE is integrated over s in [0, 1] as dx/ds = T f(x, sT), so the horizon T (``T``, learnable
    unless ``learn_T: false``) is just a scale. The last layer of f starts at zero: a new layer is the
    identity.

    Cheap direction: both directions cost one ODE solve (forward integrates 0 -> T, inverse T -> 0);
    neither is closed form. ``inverse_tolerance`` = 1e-6: the round-trip error of two float64 solves at
    ``eval_tolerance``.

    Options:
      hidden: widths of the hidden layers of f.
      activation: tanh (default), softplus, lipswish or elu (smooth ones suit adaptive solvers).
      T: integration time (initial value when learnable).
      learn_T: learn T during training.
      solver, atol, rtol, steps: ODE solver, its training tolerances, steps for fixed-grid solvers.
      eval_tolerance: atol and rtol in evaluation.
      trace: auto, exact or hutchinson (for training).
      exact_max_dim: largest dimension with the exact trace under ``auto`` and in evaluation.
    """

    inverse_tolerance = 1e-6
    raw_T: Tensor  # an nn.Parameter when learn_T, else a buffer

    def __init__(
        self,
        dim: int,
        *,
        hidden: list[int] = [32, 32],
        activation: str = "tanh",
        T: float = 1.0,
        learn_T: bool = True,
        solver: Literal["dopri5", "dopri8", "bosh3", "adaptive_heun", "rk4", "midpoint", "euler"] = "dopri5",
        atol: float = 1e-5,
        rtol: float = 1e-5,
        steps: int = 20,
        eval_tolerance: float = 1e-8,
        trace: Literal["auto", "exact", "hutchinson"] = "auto",
        exact_max_dim: int = 10,
    ) -> None:
        super().__init__()
        check(len(hidden) >= 1 and all(h > 0 for h in hidden), "hidden", "needs at least one positive width")
        check(activation in ACTIVATIONS_WITH_SLOPE, "activation", f"must be one of {', '.join(ACTIVATIONS_WITH_SLOPE)}")
        check(T > 0, "T", "must be > 0")
        check(atol > 0, "atol", "must be > 0")
        check(rtol > 0, "rtol", "must be > 0")
        check(eval_tolerance > 0, "eval_tolerance", "must be > 0")
        check(steps >= 1, "steps", "must be an integer >= 1")
        check(exact_max_dim >= 0, "exact_max_dim", "must be an integer >= 0")
        self.dim, self.solver, self.atol, self.rtol, self.steps = dim, solver, atol, rtol, steps
        self.eval_tolerance, self.trace, self.exact_max_dim = eval_tolerance, trace, exact_max_dim
        self.f = JacobianMLP(dim + 1, hidden, dim, activation)
        # T = softplus(raw) > 0; stored as a parameter or, if fixed, a buffer (so checkpoints carry it).
        raw = torch.tensor(math.log(math.expm1(T)))
        if learn_T:
            self.raw_T = nn.Parameter(raw)
        else:
            self.register_buffer("raw_T", raw)

    def _exact_trace(self) -> bool:
        if not self.training:
            return self.trace == "exact" or self.dim <= self.exact_max_dim
        return self.trace == "exact" or (self.trace == "auto" and self.dim <= self.exact_max_dim)

    def _solve(self, x: Tensor, reverse: bool) -> tuple[Tensor, Tensor]:
        """Integrate the state and ∫ T tr(∂f/∂x) ds from s=0 to 1 (or 1 to 0 when ``reverse``)."""
        T = nn.functional.softplus(self.raw_T)
        exact = self._exact_trace()
        probe: Tensor | None = None
        if not exact:
            generator = None if self.training else torch.Generator(device=x.device).manual_seed(EVAL_PROBE_SEED)
            probe = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)

        def dynamics(s: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            h = state[0]
            time = (s * T).to(h.dtype).expand(h.shape[0], 1)
            out, weights, slopes = self.f(torch.cat([h, time], 1))
            if probe is None:
                trace = torch.diagonal(JacobianMLP.jacobian(weights, slopes, self.dim), dim1=1, dim2=2).sum(-1)
            else:
                trace = (JacobianMLP.jvp(weights, slopes, probe) * probe).sum(-1)
            return T * out, T * trace

        if self.training:
            atol, rtol = self.atol, self.rtol
        else:
            atol = rtol = max(self.eval_tolerance, 10 * torch.finfo(x.dtype).eps)
        options = {"step_size": 1.0 / self.steps} if self.solver in FIXED_SOLVERS else None
        times = torch.tensor([1.0, 0.0] if reverse else [0.0, 1.0], dtype=x.dtype, device=x.device)
        state = (x, x.new_zeros(x.shape[0]))
        path = _odeint()(dynamics, state, times, method=self.solver, atol=atol, rtol=rtol, options=options)
        return path[0][-1], path[1][-1]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._solve(x, reverse=False)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        # Integrating from s=1 back to 0 accumulates -∫ tr, which is log|det dx/dz|.
        return self._solve(z, reverse=True)
