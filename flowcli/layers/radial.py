"""Radial flow: ``radial``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Layer, register


@register("radial")
class Radial(Layer):
    """Radial flow z = x + β (x - x0) / (α + r), r = |x - x0| (stack many with ``repeat:``).

    Rezende & Mohamed (2015), "Variational Inference with Normalizing Flows", section 4.1 and
    appendix A.2. Invertibility is guaranteed by the standard constraint β ≥ -α, here
    α = softplus(a) > 0 and β = -α + softplus(b') > -α; a = b' = 0 gives β = 0, the identity.

    Density (forward, data -> latent) is one pass, with
    log|det| = (d - 1) log(1 + β/(α + r)) + log(1 + β α / (α + r)²).
    Sampling (inverse) reduces to a scalar equation in r: taking norms of z - x0 = (x - x0)(1 + β/(α + r))
    gives ρ = r (1 + β/(α + r)) with ρ = |z - x0|, i.e. r² + (α + β - ρ) r - α ρ = 0, whose one
    non-negative root is taken in closed form (the cancellation-free formula for each sign), so the
    inverse is exact up to rounding: ``inverse_tolerance`` is 1e-8 in float64. Then
    x = x0 + (z - x0) / (1 + β/(α + r)).

    Options: none (the flow's width comes from stacking; ``- type: radial`` with ``repeat: 16``).
    """

    inverse_tolerance = 1e-8

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.center = nn.Parameter(torch.randn(dim))  # x0, spread over the standardized data
        self.a = nn.Parameter(torch.zeros(()))
        self.b = nn.Parameter(torch.zeros(()))

    def _alpha_beta(self) -> tuple[Tensor, Tensor]:
        alpha = F.softplus(self.a)
        return alpha, F.softplus(self.b) - alpha

    def _ladj(self, r: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
        h = 1 / (alpha + r)
        return (self.dim - 1) * torch.log1p(beta * h) + torch.log1p(beta * alpha * h * h)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        alpha, beta = self._alpha_beta()
        diff = x - self.center
        r = torch.linalg.vector_norm(diff, dim=1)
        z = x + (beta / (alpha + r))[:, None] * diff
        return z, self._ladj(r, alpha, beta)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        alpha, beta = self._alpha_beta()
        diff = z - self.center
        rho = torch.linalg.vector_norm(diff, dim=1)
        p = alpha + beta - rho
        root = torch.sqrt(p * p + 4 * alpha * rho)
        # r = (-p + root) / 2, written without subtracting nearly equal numbers: both forms have a
        # positive denominator on the branch where they are used (see the docstring), so neither is NaN.
        positive = p >= 0
        r = torch.where(positive, 2 * alpha * rho / torch.where(positive, p + root, 1.0), 0.5 * (root - p))
        x = self.center + diff / (1 + beta / (alpha + r))[:, None]
        return x, -self._ladj(r, alpha, beta)
