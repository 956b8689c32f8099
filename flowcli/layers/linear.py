"""Elementwise and linear layers: ``linear`` (LU), ``actnorm``, ``permute``."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from .base import Layer, register


@register("linear")
class LULinear(Layer):
    """Invertible linear map z = W x + b with W = P L (U + diag(s)), invertible by construction.

    Kingma & Dhariwal (2018), "Glow", section 3.2 (LU-decomposed 1x1 convolution). P is a fixed
    permutation, L unit lower-triangular, U strictly upper-triangular, s = sign * exp(log_s) never zero.
    log|det| = sum(log_s). Both directions cost one pass (the inverse uses two triangular solves).

    Options:
      init: ``orthogonal`` (a random rotation, volume-preserving, mixes all dimensions) or ``identity``.
    """

    # buffers
    perm: Tensor
    sign: Tensor
    eye: Tensor

    def __init__(self, dim: int, *, init: Literal["orthogonal", "identity"] = "orthogonal") -> None:
        super().__init__()
        if init == "orthogonal":
            q, _ = torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64))
            p, lower, u = torch.linalg.lu(q)
        else:
            p = lower = u = torch.eye(dim, dtype=torch.float64)
        diag = torch.diagonal(u)
        self.register_buffer("perm", p.to(torch.get_default_dtype()))
        self.register_buffer("sign", torch.sign(diag).to(torch.get_default_dtype()))
        self.lower = nn.Parameter(torch.tril(lower, -1).to(torch.get_default_dtype()))
        self.upper = nn.Parameter(torch.triu(u, 1).to(torch.get_default_dtype()))
        self.log_s = nn.Parameter(diag.abs().log().to(torch.get_default_dtype()))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("eye", torch.eye(dim))

    def _factors(self) -> tuple[Tensor, Tensor]:
        lower = torch.tril(self.lower, -1) + self.eye
        upper = torch.triu(self.upper, 1) + torch.diag(self.sign * self.log_s.exp())
        return lower, upper

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        lower, upper = self._factors()
        weight = self.perm @ lower @ upper
        z = x @ weight.T + self.bias
        return z, self.log_s.sum().expand(x.shape[0])

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        lower, upper = self._factors()
        rhs = (z - self.bias) @ self.perm  # = (P^T (z - b)^T)^T
        y = torch.linalg.solve_triangular(lower, rhs.T, upper=False, unitriangular=True)
        x = torch.linalg.solve_triangular(upper, y, upper=True).T
        return x, -self.log_s.sum().expand(z.shape[0])


@register("actnorm")
class ActNorm(Layer):
    """Per-dimension affine z = (x - loc) * exp(-log_scale), initialized from the first batch.

    Kingma & Dhariwal (2018), "Glow", section 3.1. The data-dependent initialization gives each
    dimension zero mean and unit variance at the start of training. Both directions are one pass.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        self.loc.copy_(x.mean(0))
        self.log_scale.copy_(x.std(0).clamp_min(1e-6).log() if x.shape[0] > 1 else torch.zeros_like(self.loc))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = (x - self.loc) * torch.exp(-self.log_scale)
        return z, (-self.log_scale.sum()).expand(x.shape[0])

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        x = z * torch.exp(self.log_scale) + self.loc
        return x, self.log_scale.sum().expand(z.shape[0])


@register("permute")
class Permute(Layer):
    """Fixed permutation of the dimensions (log|det| = 0), to let later layers mix other dimensions.

    Options:
      order: ``reverse`` or ``random`` (drawn once from the seed and stored in the checkpoint).
    """

    # buffers
    perm: Tensor
    inverse_perm: Tensor

    def __init__(self, dim: int, *, order: Literal["reverse", "random"] = "reverse") -> None:
        super().__init__()
        perm = torch.randperm(dim) if order == "random" else torch.arange(dim).flip(0)
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", torch.argsort(perm))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x[:, self.perm], x.new_zeros(x.shape[0])

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return z[:, self.inverse_perm], z.new_zeros(z.shape[0])
