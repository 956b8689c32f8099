"""Conditioner networks shared by the coupling and autoregressive layers."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


def mlp(n_in: int, hidden: Sequence[int], n_out: int, activation: str = "relu") -> nn.Sequential:
    """A plain MLP whose last layer starts at zero, so the layer it conditions starts as the identity."""
    sizes = [n_in, *hidden]
    modules: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        modules += [nn.Linear(a, b), ACTIVATIONS[activation]()]
    last = nn.Linear(sizes[-1], n_out)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    modules.append(last)
    return nn.Sequential(*modules)


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (MADE, Germain et al. 2015)."""

    def __init__(self, n_in: int, n_out: int, mask: Tensor) -> None:
        super().__init__(n_in, n_out)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Masked autoencoder: output ``[..., i, :]`` depends only on inputs that come before ``i`` in ``order``.

    Germain, Gregor, Murray & Larochelle (2015), "MADE: Masked Autoencoder for Distribution Estimation".
    ``order`` is a permutation of ``range(dim)``; returns a tensor of shape ``(batch, dim, n_params)``.
    """

    def __init__(self, dim: int, hidden: Sequence[int], n_params: int, order: Tensor, activation: str = "relu") -> None:
        super().__init__()
        self.dim, self.n_params = dim, n_params
        degree_in = torch.empty(dim, dtype=torch.long)
        degree_in[order] = torch.arange(1, dim + 1)  # variable order[k] is the (k+1)-th to be generated
        # Hidden degrees cycle through 1..dim-1 so every hidden unit can feed some output; 0 when dim == 1.
        low, span = min(1, dim - 1), max(1, dim - 1)
        degrees = [degree_in]
        layers: list[nn.Module] = []
        for width in hidden:
            degree_h = torch.arange(width) % span + low
            mask = (degree_h[:, None] >= degrees[-1][None, :])
            layers += [MaskedLinear(len(degrees[-1]), width, mask), ACTIVATIONS[activation]()]
            degrees.append(degree_h)
        degree_out = degree_in.repeat_interleave(n_params)
        mask = degree_out[:, None] > degrees[-1][None, :]
        last = MaskedLinear(len(degrees[-1]), dim * n_params, mask)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        layers.append(last)
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).view(*x.shape[:-1], self.dim, self.n_params)


def autoregressive_order(dim: int, index: int, order: str) -> Tensor:
    """Variable order of an autoregressive layer: alternating natural/reversed by stack position, or random."""
    if order == "random":
        return torch.randperm(dim)
    natural = torch.arange(dim)
    return natural if index % 2 == 0 else natural.flip(0)


def coupling_mask(dim: int, index: int, mask: str) -> Tensor:
    """Boolean mask of the dimensions a coupling layer *transforms*; the others condition it.

    ``alternate`` transforms every other dimension, ``half`` the second half; both flip with the
    layer's position in the stack so consecutive coupling layers transform complementary sets.
    """
    i = torch.arange(dim)
    if mask == "half":
        transformed = i >= dim // 2
    else:
        transformed = i % 2 == 1
    if dim == 1:
        transformed = torch.ones(1, dtype=torch.bool)
    elif index % 2 == 1:
        transformed = ~transformed
    return transformed
