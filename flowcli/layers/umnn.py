"""Unconstrained monotonic neural network flow: ``umnn``."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from .base import check, register
from .monotone import MonotoneAutoregressive, expand_bracket
from .nets import ACTIVATIONS, MADE, autoregressive_order, bound_inputs, mlp

# g = softplus(h + SHIFT) + FLOOR equals 1 when the integrand network outputs h = 0 (its initial state),
# so a fresh layer is z = x + b(x_<i) with b = 0: the identity. FLOOR bounds the slope below, which keeps
# log g finite and the inverse well conditioned (an x error is about the z rounding error divided by g).
FLOOR = 1e-3
SHIFT = math.log(math.expm1(1.0 - FLOOR))


@register("umnn")
class UMNN(MonotoneAutoregressive):
    """Autoregressive flow whose transformer is the integral of a positive network:

        z_i = b(x_<i) + ∫_0^{x_i} g(s, ξ(x_<i)) ds,    g > 0,    log|det| = Σ_i log g(x_i, ξ(x_<i)).

    Wehenkel & Louppe (2019), "Unconstrained Monotonic Neural Networks". A MADE conditioner (Germain et al.
    2015) gives the embedding ξ and the offset b of each variable; one integrand network g, shared by all
    variables, maps (s, ξ) to a positive number (softplus output, smooth, so the quadrature converges fast).

    The integral is computed by Gauss–Legendre quadrature with ``steps`` nodes on [0, x_i]; log|det| uses
    g at x_i, which is the derivative of the exact integral. Both agree with the derivative of the
    computed map to the quadrature's accuracy (on standardized inputs with randomly perturbed networks,
    measured: 1e-12 in log|det| with 16 nodes, 1e-14 with 24; keep ``integrand_activation`` smooth, and raise
    ``steps`` for very wiggly integrands).

    Cheap direction: density (data -> latent), one MADE pass plus ``steps`` + 1 integrand evaluations per
    value. Sampling (latent -> data) solves z_i = F(x_i) for each variable in autoregressive order
    (safeguarded Newton/bisection on a bracket, vectorized over the batch), to ``inverse_tolerance`` = 1e-9
    relative to 1 + |x|: about 5-15 quadratures per variable.

    Options:
      hidden: widths of the MADE conditioner's hidden layers.
      embedding: size of the per-variable embedding ξ passed from the conditioner to the integrand.
      integrand_hidden: widths of the integrand network's hidden layers.
      integrand_activation: activation of the integrand network (smooth ones keep the quadrature exact).
      activation: activation of the MADE conditioner.
      steps: number of Gauss–Legendre nodes.
      order: ``alternate`` (natural, then reversed, by position in the stack) or ``random``.
    """

    inverse_tolerance = 1e-9

    def __init__(
        self,
        dim: int,
        *,
        hidden: list[int] = [64, 64],
        embedding: int = 8,
        integrand_hidden: list[int] = [32, 32],
        integrand_activation: str = "silu",
        activation: str = "relu",
        steps: int = 32,
        order: Literal["alternate", "random"] = "alternate",
        index: int = 0,
        context: int = 0,
    ) -> None:
        super().__init__()
        check(all(h > 0 for h in hidden), "hidden", "layer widths must be positive integers")
        check(all(h > 0 for h in integrand_hidden), "integrand_hidden", "layer widths must be positive integers")
        check(embedding >= 1, "embedding", "must be an integer >= 1")
        check(activation in ACTIVATIONS, "activation", f"must be one of {', '.join(ACTIVATIONS)}")
        check(integrand_activation in ACTIVATIONS, "integrand_activation", f"must be one of {', '.join(ACTIVATIONS)}")
        check(2 <= steps <= 512, "steps", "must be an integer between 2 and 512")
        self.dim, self.embedding = dim, embedding
        self.made = MADE(dim, hidden, embedding + 1, autoregressive_order(dim, index, order), activation, context)
        self.integrand = mlp(1 + embedding, integrand_hidden, 1, integrand_activation)
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        # Nodes mapped from [-1, 1] to [0, 1]; the integral over [0, x] is then x * Σ w_k g(x t_k).
        # Kept in numpy float64 and cast per call (not buffers): a buffer cast to float32 for training and
        # back to float64 for evaluation would keep float32-rounded nodes and lose quadrature accuracy.
        self._nodes, self._weights = (nodes + 1) / 2, weights / 2

    def _g(self, s: Tensor, xi: Tensor) -> Tensor:
        """The positive integrand at points ``s`` (..., k) with embeddings ``xi`` (..., embedding).

        The network sees ``s`` softly bounded (nets.bound_inputs), so beyond the data the map continues
        with about the slope it has at their edge: an unbounded network extrapolated g down to its floor
        there, a slope of 1e-3 per layer, and a hurried fit drew 3.6% of its samples at 1e15 robust units."""
        inputs = torch.cat([bound_inputs(s)[..., None], xi[..., None, :].expand(*s.shape, self.embedding)], -1)
        return nn.functional.softplus(self.integrand(inputs)[..., 0] + SHIFT) + FLOOR

    def transform(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        xi, b = params[..., : self.embedding], params[..., self.embedding]
        # The quadrature nodes and the end point x go through the integrand network in one call.
        nodes = torch.as_tensor(self._nodes, dtype=x.dtype, device=x.device)
        weights = torch.as_tensor(self._weights, dtype=x.dtype, device=x.device)
        points = torch.cat([x[..., None] * nodes, x[..., None]], -1)
        g = self._g(points, xi)
        integral = x * (g[..., :-1] * weights).sum(-1)
        return b + integral, g[..., -1].log()

    def bracket(self, z: Tensor, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # g has no useful global bound, so grow [-1, 1] by doubling until it holds the root.
        lo, hi = expand_bracket(lambda x: self.transform(x, params), z, -torch.ones_like(z), torch.ones_like(z))
        return lo, hi, z - params[..., self.embedding]
