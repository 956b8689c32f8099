"""``ContextAffine``: the elementwise affine map of the continuous features given a row's discrete part.

The model builder puts one at the start of the flow of every table with discrete features (``model.Flow``),
before the config's layers: z = x * exp(s(c)) + t(c), with s and t an MLP of the context c (the one-hot
discrete part). It gives every config, including those whose layers take no context (linear, planar,
radial, residual, cnf), a density of the continuous columns that moves and scales with the categories
and states of the row (a species' own mean and spread of each measurement); conditional layers
(coupling, autoregressive) then model what remains. Its MLP's last layer starts at zero, so it starts as
the identity and the flow as its Gaussian start. Both directions are one pass; log|det| = sum s(c).
"""

from __future__ import annotations

from torch import Tensor

from .base import Layer, soft_clamp
from .nets import mlp

SCALE_BOUND = 5.0  # bound on |log scale| of each feature


class ContextAffine(Layer):
    conditional = True

    def __init__(self, dim: int, context: int, hidden: int = 64) -> None:
        super().__init__()
        self.dim = dim
        self.net = mlp(context, [hidden], 2 * dim)

    def _scale_shift(self, context: Tensor) -> tuple[Tensor, Tensor]:
        params = self.net(context)
        return soft_clamp(params[:, : self.dim], SCALE_BOUND), params[:, self.dim :]

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if context is None:
            return x, x.new_zeros(x.shape[0])
        log_s, shift = self._scale_shift(context)
        return x * log_s.exp() + shift, log_s.sum(1)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if context is None:
            return z, z.new_zeros(z.shape[0])
        log_s, shift = self._scale_shift(context)
        return (z - shift) * (-log_s).exp(), -log_s.sum(1)
