"""Planar flow: ``planar``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Layer, register

# m(a) = -1 + MARGIN + softplus(a + shift) > -1, with m(0) = 0 so that u = 0 gives û = 0 (the
# identity). The margin keeps w·û away from -1 in floating point too: the paper's -1 + softplus(a)
# rounds to exactly -1 for a < -37 in float64, where the map stops being invertible.
_MARGIN = 1e-4
_M_SHIFT = math.log(math.expm1(1 - _MARGIN))


@register("planar")
class Planar(Layer):
    """Planar flow z = x + û tanh(w·x + b) (one hidden unit; stack many with ``repeat:``).

    Rezende & Mohamed (2015), "Variational Inference with Normalizing Flows", section 4.1 and
    appendix A.1. Invertibility is guaranteed by the û reparameterization
    û = u + (m(w·u) - w·u) w / |w|², m(a) = -1 + softplus(a), so that w·û = m(w·u) > -1; here m is
    shifted so that m(0) = 0 and the layer starts at the identity (u = 0), and kept 1e-4 above -1.

    Density (forward, data -> latent) is one pass, with log|det| = log(1 + (1 - tanh²(w·x + b)) w·û).
    Sampling (inverse) is numerical: dotting z = x + û tanh(w·x + b) with w gives the scalar equation
    α + (w·û) tanh(α) = w·z + b for α = w·x + b, increasing in α and bracketed by
    [w·z + b - |w·û|, w·z + b + |w·û|]; it is solved per row by Newton steps safeguarded by
    bisection, vectorized over the batch, until x is recovered within ``inverse_tolerance`` (1e-6,
    in float64; float32 stops at its rounding level), then x = z - û tanh(α).

    Options: none (the flow's width comes from stacking; ``- type: planar`` with ``repeat: 16``).
    """

    inverse_tolerance = 1e-6
    max_iterations = 100

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(dim) / math.sqrt(dim))
        self.u = nn.Parameter(torch.zeros(dim))
        self.b = nn.Parameter(torch.zeros(()))

    def _u_hat(self) -> tuple[Tensor, Tensor]:
        """û and w·û (> -1 by construction)."""
        wu = self.w @ self.u
        w_u_hat = F.softplus(wu + _M_SHIFT) - (1 - _MARGIN)
        u_hat = self.u + (w_u_hat - wu) * self.w / (self.w @ self.w).clamp_min(torch.finfo(self.w.dtype).tiny)
        return u_hat, w_u_hat

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        u_hat, w_u_hat = self._u_hat()
        h = torch.tanh(x @ self.w + self.b)
        return x + h[:, None] * u_hat, torch.log1p((1 - h * h) * w_u_hat)

    def _solve(self, target: Tensor, wu: Tensor, tol: float) -> Tensor:
        """The root α of α + wu tanh(α) = target, per row (no autograd)."""
        radius = wu.abs()
        lo, hi = target - radius, target + radius
        alpha = target.clone()
        for _ in range(self.max_iterations):
            t = torch.tanh(alpha)
            g = alpha + wu * t - target
            hi = torch.where(g > 0, alpha, hi)
            lo = torch.where(g > 0, lo, alpha)
            slope = 1 + wu * (1 - t * t)
            newton = alpha - g / slope.clamp_min(1e-300 if alpha.dtype == torch.float64 else 1e-30)
            ok = (newton > lo) & (newton < hi)
            new = torch.where(ok, newton, 0.5 * (lo + hi))
            step = (new - alpha).abs()
            alpha = new
            if bool((step <= tol).all()):
                break
        return alpha

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        u_hat, w_u_hat = self._u_hat()
        target = z @ self.w + self.b
        with torch.no_grad():
            # |x error| <= |û| |α error|, so solve α to a tolerance scaled by 1 / |û|.
            tol = 1e-2 * self.inverse_tolerance / max(1.0, float(u_hat.norm()))
            alpha = self._solve(target.detach(), w_u_hat.detach(), tol)
        # One Newton step with autograd on: the same value, with the gradient of the implicit solution.
        t = torch.tanh(alpha)
        alpha = alpha - (alpha + w_u_hat * t - target) / (1 + w_u_hat * (1 - t * t))
        h = torch.tanh(alpha)
        return z - h[:, None] * u_hat, -torch.log1p((1 - h * h) * w_u_hat)
