"""Base distributions of the latent space, registered by their YAML ``type`` name.

A base provides ``log_prob(z)`` (one value per row) and ``sample(n)``. A base defined on a subset of
the reals (e.g. the unit cube) returns a ``bridge()`` layer that the model appends to the flow, so any
stack of layers can be used with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers.base import Layer, check
from .registry import Registry


class Base(nn.Module):
    """A distribution over the latent space R^dim (or a subset, with a bridge layer)."""

    type_name: ClassVar[str]  # set by ``register_base``
    _anchor: Tensor  # a buffer: declared so the type checker knows it is a tensor, not a submodule

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        # A buffer so the base follows the model's device and dtype for sampling.
        self.register_buffer("_anchor", torch.zeros(()))

    def log_prob(self, z: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def bridge(self) -> Layer | None:
        """A layer mapping R^dim onto the base's support, appended after the flow; None for R^dim."""
        return None


BASES: Registry[Base] = Registry("base")


def register_base(name: str) -> Callable[[type[Base]], type[Base]]:
    """Class decorator that makes a base available as ``base: {type: <name>}`` in the YAML config."""
    return BASES.register(name)


@register_base("normal")
class StandardNormal(Base):
    """The standard normal N(0, I)."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)

    def log_prob(self, z: Tensor) -> Tensor:
        return -0.5 * (z.pow(2).sum(1) + self.dim * math.log(2 * math.pi))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        a = self._anchor
        return torch.randn(n, self.dim, generator=generator, device=a.device, dtype=a.dtype)


class SigmoidBridge(Layer):
    """Elementwise logistic sigmoid, R^dim -> (0, 1)^dim: the bridge to the ``uniform`` base.

    log|det| = sum(log σ(x) + log σ(-x)) = -sum(softplus(x) + softplus(-x)), computed without forming
    σ(x), so it stays finite where σ(x) rounds to 0 or 1. Both directions are one pass. Not a
    registered layer type: it is only correct as the last layer before a base on the unit cube.
    """

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return torch.sigmoid(x), -(F.softplus(x) + F.softplus(-x)).sum(1)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        log_z, log_1mz = torch.log(z), torch.log1p(-z)
        return log_z - log_1mz, -(log_z + log_1mz).sum(1)


@register_base("uniform")
class Uniform(Base):
    """The uniform distribution on the unit cube (0, 1)^dim, as in the inverse-CDF view of flows.

    The model appends a ``SigmoidBridge`` after the last layer, so any stack maps the data onto the
    cube; the flow then learns the (multivariate) CDF-like map that makes the data uniform. With an
    empty stack this is the logistic distribution. Samples lie in (0, 1): exact zeros, which
    ``torch.rand`` can produce, are moved to the smallest positive number so the bridge stays finite.
    ``decode`` expects latent values in (0, 1).
    """

    def __init__(self, dim: int) -> None:
        super().__init__(dim)

    def log_prob(self, z: Tensor) -> Tensor:
        inside = ((z >= 0) & (z <= 1)).all(1)
        return torch.where(inside, 0.0, -math.inf).to(z.dtype)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        a = self._anchor
        u = torch.rand(n, self.dim, generator=generator, device=a.device, dtype=a.dtype)
        return u.clamp_min(torch.finfo(a.dtype).tiny)

    def bridge(self) -> Layer:
        return SigmoidBridge()


@register_base("studentt")
class StudentT(Base):
    """Independent Student-t coordinates with learnable degrees of freedom ν, one per dimension.

    For heavy-tailed data: a flow of bounded Lipschitz constant cannot turn a normal's light tails into
    heavy ones (Jaini, Kobyzev, Yu & Brubaker 2020, "Tails of Lipschitz Triangular Flows"), a heavy-tailed
    base can. ν = exp(θ) stays positive; the t density with ν degrees of freedom and unit scale.

    Options:
      df: initial degrees of freedom of every dimension (default 10; learned during the fit).
    """

    def __init__(self, dim: int, *, df: float = 10.0) -> None:
        super().__init__(dim)
        check(df > 0, "df", "must be > 0")
        self.log_df = nn.Parameter(torch.full((dim,), math.log(df)))

    @property
    def df(self) -> Tensor:
        return self.log_df.exp()

    def log_prob(self, z: Tensor) -> Tensor:
        nu = self.df
        half = 0.5 * (nu + 1)
        norm = torch.lgamma(half) - torch.lgamma(0.5 * nu) - 0.5 * torch.log(nu * math.pi)
        return (norm - half * torch.log1p(z * z / nu)).sum(1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        # t = N / sqrt(χ²_ν / ν), with χ²_ν = 2 Gamma(ν / 2); both draws use the caller's generator.
        a = self._anchor
        nu = self.df.detach().to(a.dtype)
        normal = torch.randn(n, self.dim, generator=generator, device=a.device, dtype=a.dtype)
        gamma = torch._standard_gamma((0.5 * nu).expand(n, self.dim).contiguous(), generator=generator)
        chi2 = (2 * gamma).clamp_min(torch.finfo(a.dtype).tiny)
        return normal / torch.sqrt(chi2 / nu)


@register_base("mixture")
class GaussianMixture(Base):
    """A learnable mixture of Gaussians with diagonal covariances.

    p(z) = Σ_k w_k N(z; μ_k, diag(σ_k²)), with w = softmax(logits) and σ = exp(log σ). Diagonal rather
    than full covariances: the flow before it already provides the correlations, and a diagonal
    component costs O(dim) instead of O(dim²) per point. Initialized near the standard normal: unit
    scales, equal weights, means drawn from N(0, 0.2²) so the components can separate while training.

    Options:
      components: number of mixture components (default 8).
    """

    def __init__(self, dim: int, *, components: int = 8) -> None:
        super().__init__(dim)
        check(components >= 1, "components", "must be an integer >= 1")
        self.logits = nn.Parameter(torch.zeros(components))
        self.means = nn.Parameter(0.2 * torch.randn(components, dim))
        self.log_scales = nn.Parameter(torch.zeros(components, dim))

    def log_prob(self, z: Tensor) -> Tensor:
        standardized = (z[:, None, :] - self.means) * torch.exp(-self.log_scales)  # (n, components, dim)
        per_component = (
            -0.5 * standardized.pow(2).sum(-1) - self.log_scales.sum(-1) - 0.5 * self.dim * math.log(2 * math.pi)
        )
        return torch.logsumexp(per_component + torch.log_softmax(self.logits, 0), dim=1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        a = self._anchor
        weights = torch.softmax(self.logits.detach().to(a.dtype), 0)
        component = torch.multinomial(weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, device=a.device, dtype=a.dtype)
        return self.means[component] + torch.exp(self.log_scales[component]) * noise


def build_base(type_name: str, dim: int, options: dict[str, Any]) -> Base:
    return BASES[type_name](dim, **options)
