"""Base distributions of the latent space, registered by their YAML ``type`` name.

A base provides ``log_prob(z)`` (one value per row) and ``sample(n)``. A base defined on a subset of
the reals (e.g. the unit cube) returns a ``bridge()`` layer that the model appends to the flow, so any
stack of layers can be used with it.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from .layers.base import Layer

BASES: dict[str, type["Base"]] = {}


def register_base(name: str) -> Callable[[type["Base"]], type["Base"]]:
    def decorate(cls: type[Base]) -> type[Base]:
        if name in BASES:
            raise RuntimeError(f"base type {name!r} registered twice")
        BASES[name] = cls
        cls.type_name = name
        return cls

    return decorate


class Base(nn.Module):
    """A distribution over the latent space R^dim (or a subset, with a bridge layer)."""

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


def build_base(type_name: str, dim: int, options: dict) -> Base:
    return BASES[type_name](dim, **options)
