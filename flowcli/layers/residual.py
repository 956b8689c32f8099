"""Invertible residual block: ``residual``."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from .base import Layer, check, register
from .mlp_jacobian import ACTIVATIONS_WITH_SLOPE, JacobianMLP

EXACT_BLOCK_FLOATS = 2**22  # rows per exact log-det block are chosen so a block's Jacobians stay about this size
EVAL_SERIES_SEED = 0  # fixed probes make the series estimate deterministic in evaluation (dim > exact_max_dim)


@register("residual")
class Residual(Layer):
    """Invertible residual block z = x + g(x), with g an MLP made c-Lipschitz (c < 1) by spectral normalization.

    Behrmann, Grathwohl, Chen, Duvenaud & Jacobsen (2019), "Invertible Residual Networks";
    Chen, Behrmann, Duvenaud & Jacobsen (2019), "Residual Flows for Invertible Generative Modeling".

    Invertibility: each weight matrix is divided by max(1, σ_max / c), σ_max computed exactly, and the
    activations are 1-Lipschitz, so Lip(g) <= c < 1 and x + g(x) is a bijection of R^d.

    log|det(I + J_g)|:
      * evaluation (``model.eval()``; every score, sample and encode): exact, slogdet of I + J_g with the
        Jacobian from the network's layer slopes, when dim <= ``exact_max_dim``; above that the power series
        truncated at ``eval_terms`` terms with fixed Hutchinson probes (deterministic, but a noisy estimate
        with one probe per row: raise ``exact_max_dim`` for exact scores on wider tables, at O(dim³) per row).
      * training: the power series log det(I + J) = Σ_k (-1)^(k+1) tr(J^k) / k with a Hutchinson trace
        estimator (one Gaussian probe per row). ``estimator: roulette`` (default) is the unbiased Russian-
        roulette estimator of Chen et al.: ``terms`` terms always, then one more term at a time until a stop
        drawn with probability ``roulette_stop`` per term, each reweighted by its survival probability (its
        variance is finite when Lip(g)² < 1 - roulette_stop; the series terms shrink as Lip(g)^k).
        ``truncated`` stops at ``terms`` terms (biased, as in Behrmann et al.). Gradients backpropagate
        through the estimate (no Neumann-series gradient trick: the networks here are small).

    Cheap direction: density (data -> latent): one network pass plus the log-det (in evaluation, a dim x dim
    slogdet per row). Sampling (latent -> data): fixed-point iteration x <- z - g(x), a contraction with
    rate c, stopped when the bound c/(1-c) |Δx| on the distance to the fixed point is below
    ``inverse_tolerance`` = 1e-9 (relative to 1 + |x|); each iteration is one network pass.

    Options:
      hidden: widths of the hidden layers of g.
      activation: lipswish (Chen et al.), tanh, elu or softplus (all 1-Lipschitz).
      lipschitz: the bound c on each layer's spectral norm, in (0, 1).
      estimator: roulette (unbiased) or truncated, for the training log-det.
      terms: series terms always computed in training (all of them for ``truncated``).
      roulette_stop: probability of stopping after each further term (``roulette``), in (0, 1).
      exact_max_dim: largest dimension for the exact evaluation log-det.
      eval_terms: series terms in evaluation above ``exact_max_dim``.
      max_iterations: cap on fixed-point iterations of the inverse.
    """

    inverse_tolerance = 1e-9

    def __init__(
        self,
        dim: int,
        *,
        hidden: list[int] = [64, 64],
        activation: str = "lipswish",
        lipschitz: float = 0.9,
        estimator: Literal["roulette", "truncated"] = "roulette",
        terms: int = 4,
        roulette_stop: float = 0.5,
        exact_max_dim: int = 64,
        eval_terms: int = 30,
        max_iterations: int = 2000,
    ) -> None:
        super().__init__()
        check(len(hidden) >= 1 and all(h > 0 for h in hidden), "hidden", "needs at least one positive width")
        check(activation in ACTIVATIONS_WITH_SLOPE, "activation", f"must be one of {', '.join(ACTIVATIONS_WITH_SLOPE)}")
        check(0 < lipschitz < 1, "lipschitz", "must be in (0, 1)")
        check(terms >= 1, "terms", "must be an integer >= 1")
        check(0 < roulette_stop < 1, "roulette_stop", "must be in (0, 1)")
        check(exact_max_dim >= 0, "exact_max_dim", "must be an integer >= 0")
        check(eval_terms >= 1, "eval_terms", "must be an integer >= 1")
        check(max_iterations >= 1, "max_iterations", "must be an integer >= 1")
        self.dim, self.lipschitz, self.estimator, self.terms = dim, lipschitz, estimator, terms
        self.roulette_stop = roulette_stop
        self.exact_max_dim, self.eval_terms, self.max_iterations = exact_max_dim, eval_terms, max_iterations
        self.g = JacobianMLP(dim, hidden, dim, activation, lipschitz=lipschitz)

    # -- log|det(I + J_g)| ---------------------------------------------------------------------------
    def _exact_log_det(self, weights: list[Tensor], slopes: list[Tensor]) -> Tensor:
        eye = torch.eye(self.dim, dtype=weights[0].dtype, device=weights[0].device)
        rows = max(1, EXACT_BLOCK_FLOATS // (self.dim * max(s.shape[1] for s in slopes)))
        parts = []
        for start in range(0, slopes[0].shape[0], rows):
            block = [s[start : start + rows] for s in slopes]
            parts.append(torch.linalg.slogdet(eye + JacobianMLP.jacobian(weights, block, self.dim))[1])
        return torch.cat(parts)

    def _series_log_det(
        self,
        weights: list[Tensor],
        slopes: list[Tensor],
        n_terms: int,
        roulette: bool,
        generator: torch.Generator | None,
    ) -> Tensor:
        """Σ_{k<=N} (-1)^(k+1)/k · vᵀJᵏv / P(N >= k), v ~ N(0, I); N = n_terms, plus a geometric tail if roulette."""
        n = slopes[0].shape[0]
        ref = slopes[0]
        extra = 0
        if roulette:
            u = torch.rand((), dtype=torch.float64, generator=generator)
            # Geometric number of further terms: P(extra >= j) = (1 - roulette_stop)^j.
            extra = math.floor(math.log(max(float(u), 1e-300)) / math.log(1 - self.roulette_stop))
        v = torch.randn(n, self.dim, dtype=ref.dtype, generator=generator, device=ref.device)
        w = v
        total = ref.new_zeros(n)
        for k in range(1, n_terms + extra + 1):
            w = JacobianMLP.jvp(weights, slopes, w)
            survival = (1 - self.roulette_stop) ** max(0, k - n_terms) if roulette else 1.0  # P(N >= k)
            total = total + ((-1) ** (k + 1) / (k * survival)) * (w * v).sum(-1)
        return total

    def _log_det(self, weights: list[Tensor], slopes: list[Tensor]) -> Tensor:
        if not self.training:
            if self.dim <= self.exact_max_dim:
                return self._exact_log_det(weights, slopes)
            generator = torch.Generator(device=slopes[0].device).manual_seed(EVAL_SERIES_SEED)
            return self._series_log_det(weights, slopes, self.eval_terms, False, generator)
        return self._series_log_det(weights, slopes, self.terms, self.estimator == "roulette", None)

    # -- the two directions ----------------------------------------------------------------------------
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        gx, weights, slopes = self.g(x)
        return x + gx, self._log_det(weights, slopes)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        bound = self.lipschitz / (1 - self.lipschitz)  # |x_k - x*| <= bound * |x_k - x_(k-1)|
        eps = torch.finfo(z.dtype).eps
        with torch.no_grad():
            x = z.detach().clone()
            for _ in range(self.max_iterations):
                x_next = z - self.g(x)[0]
                change = (x_next - x).abs()
                x = x_next
                scale = 1 + x.abs()
                if bool((bound * change <= torch.clamp(self.inverse_tolerance * scale, min=16 * eps * scale)).all()):
                    break
        gx, weights, slopes = self.g(x)
        if torch.is_grad_enabled():
            # One Newton step on F(x) = x + g(x) - z at the fixed point, with autograd on: by the implicit
            # function theorem it carries the exact derivatives dx/dz = (I + J)^-1 (and for the weights).
            jac = torch.eye(self.dim, dtype=z.dtype, device=z.device) + JacobianMLP.jacobian(weights, slopes, self.dim)
            x = x - torch.linalg.solve(jac.detach(), (x + gx - z)[..., None])[..., 0]
        return x, -self._log_det(weights, slopes)
