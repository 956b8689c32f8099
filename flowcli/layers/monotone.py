"""Autoregressive flows with a strictly increasing elementwise transformer z_i = F(x_i; params(x_<i)).

Shared by ``umnn`` and ``sos``: both define F as an integral of a positive function, so F has no closed-form
inverse. The density direction is one MADE pass; sampling inverts F by a bracketed 1-D root solve for each
variable in autoregressive order (``MADE.solve`` keeps the network work to one pass in total), vectorized over
the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .base import Layer
from .nets import MADE

# F(x) -> (F(x), dF/dx), elementwise over a batch.
MonotoneFn = Callable[[Tensor], tuple[Tensor, Tensor]]


def expand_bracket(
    fn: MonotoneFn, target: Tensor, lo: Tensor, hi: Tensor, max_doublings: int = 64
) -> tuple[Tensor, Tensor]:
    """Widen [lo, hi] (lo < 0 < hi) by doubling each end until F(lo) <= target <= F(hi) everywhere."""
    for _ in range(max_doublings):
        low_bad = fn(lo)[0] > target
        high_bad = fn(hi)[0] < target
        if not (low_bad.any() or high_bad.any()):
            break
        lo = torch.where(low_bad, 2 * lo, lo)
        hi = torch.where(high_bad, 2 * hi, hi)
    return lo, hi


@torch.no_grad()
def solve_monotone(
    fn: MonotoneFn, target: Tensor, lo: Tensor, hi: Tensor, x0: Tensor, tol: float, max_iter: int = 100
) -> Tensor:
    """Solve F(x) = target for an increasing F, given a bracket F(lo) <= target <= F(hi).

    Safeguarded Newton (as ``rtsafe`` in Numerical Recipes): a Newton step is taken when it lands inside
    the current bracket and is less than half the previous step, otherwise the bracket is bisected (Newton
    alone can bounce between the ends of the bracket on an S-shaped F). Convergence is guaranteed by the
    bisections, and steps are Newton's near the root (fast). Stops when every Newton correction is below
    ``tol * (1 + |x|)`` or the bracket reaches the floating-point resolution of x.
    """
    eps = torch.finfo(target.dtype).eps
    x = torch.minimum(torch.maximum(x0, lo), hi)
    last_step = hi - lo
    for _ in range(max_iter):
        f, df = fn(x)
        r = f - target
        lo = torch.where(r <= 0, x, lo)
        hi = torch.where(r >= 0, x, hi)
        step = r / df
        newton = x - step
        use_newton = (newton >= lo) & (newton <= hi) & torch.isfinite(newton) & (step.abs() <= 0.5 * last_step)
        x_next = torch.where(use_newton, newton, 0.5 * (lo + hi))
        last_step = (x_next - x).abs()
        scale = 1 + x.abs()
        done = (step.abs() <= torch.clamp(tol * scale, min=8 * eps * scale)) | (hi - lo <= 4 * eps * scale)
        x = torch.where(done, x, x_next)
        if bool(done.all()):
            break
    return x


class MonotoneAutoregressive(Layer):
    """Base of autoregressive layers with an increasing transformer and a numerical inverse.

    Subclasses set ``self.made`` (a MADE with ``n_params`` outputs per variable) and implement
    ``transform(x, params) -> (z, log dz/dx)`` elementwise (``x`` of any shape, ``params`` with one extra
    trailing axis) and ``bracket(z, params) -> (lo, hi, x0)``: an interval holding the solution and a first
    guess. ``inverse_tolerance`` is the tolerance of the root solve on x (relative to 1 + |x|).
    """

    made: MADE
    inverse_tolerance: float = 1e-9
    conditional = True

    def transform(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def bracket(self, z: Tensor, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z, log_deriv = self.transform(x, self.made(x, context))
        return z, log_deriv.sum(1)

    def _invert_group(self, z: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """x with F(x; params) = z for a group of variables over the batch (``MADE.solve``), and log|dx/dz|."""

        def fn(x: Tensor) -> tuple[Tensor, Tensor]:
            f, log_deriv = self.transform(x, params)
            return f, log_deriv.exp()

        with torch.no_grad():
            lo, hi, x0 = self.bracket(z, params)
            x_root = solve_monotone(fn, z.detach(), lo.detach(), hi.detach(), x0.detach(), self.inverse_tolerance)
        # One last Newton step, taken with autograd on: it polishes the root, and (implicit function theorem)
        # gives the exact derivatives dx/dz = 1/F'(x) and dx/dparams = -dF/dparams / F'(x).
        f, log_deriv = self.transform(x_root, params)
        x = x_root - (f - z) / log_deriv.detach().exp()
        return x, -log_deriv

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.made.solve(z, self._invert_group, context)
