"""Coupling layers: ``additive_coupling`` (NICE) and ``affine_coupling`` (RealNVP).

Half of the dimensions pass through unchanged and parameterize an elementwise map of the other
half, so both directions cost one network pass and the Jacobian is triangular.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .base import Layer, check, register, soft_clamp
from .nets import ACTIVATIONS, bound_inputs, coupling_mask, mlp


class _Coupling(Layer):
    """Shared plumbing: split by a mask, run the conditioner (on the conditioning half and the context), merge back."""

    conditional = True

    n_params: int = 1
    # buffers: indices of the transformed and of the conditioning dimensions
    transformed: Tensor
    conditioning: Tensor

    def __init__(self, dim: int, hidden: list[int], activation: str, mask: str, index: int, context: int = 0) -> None:
        super().__init__()
        check(all(h > 0 for h in hidden), "hidden", "layer widths must be positive integers")
        check(activation in ACTIVATIONS, "activation", f"must be one of {', '.join(ACTIVATIONS)}")
        transformed = coupling_mask(dim, index, mask)
        self.register_buffer("transformed", transformed.nonzero().flatten())
        self.register_buffer("conditioning", (~transformed).nonzero().flatten())
        n_b = len(self.transformed)
        self.context = context
        self.net = mlp(len(self.conditioning) + context, hidden, n_b * self.n_params, activation)

    def _params(self, x_a: Tensor, context: Tensor | None) -> Tensor:
        # Bounded inputs: the shift and scale stay what the network learnt near the data (nets.py).
        inputs = bound_inputs(x_a)
        if self.context:
            inputs = torch.cat([inputs, context if context is not None else x_a.new_zeros(len(x_a), self.context)], 1)
        return self.net(inputs).view(x_a.shape[0], len(self.transformed), self.n_params)

    def _couple(self, x: Tensor, inverse: bool, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x_a, x_b = x[:, self.conditioning], x[:, self.transformed]
        y_b, ladj = self._transform(x_b, self._params(x_a, context), inverse)
        y = x.clone()
        y[:, self.transformed] = y_b
        return y, ladj

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(x, False, context)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(z, True, context)

    def _transform(self, x_b: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        raise NotImplementedError  # pragma: no cover


@register("additive_coupling")
class AdditiveCoupling(_Coupling):
    """NICE additive coupling z_b = x_b + t(x_a), volume-preserving (log|det| = 0).

    Dinh, Krueger & Bengio (2015), "NICE: Non-linear Independent Components Estimation".
    Both directions are one pass. Follow with ``actnorm`` or ``linear`` to learn scales.

    Options:
      hidden: widths of the conditioner MLP's hidden layers.
      activation: relu, elu, gelu, tanh or silu.
      mask: ``alternate`` (every other dimension) or ``half``; flips with the position in the stack.
    """

    n_params = 1

    def __init__(
        self,
        dim: int,
        *,
        hidden: list[int] = [64, 64],
        activation: str = "relu",
        mask: Literal["alternate", "half"] = "alternate",
        index: int = 0,
        context: int = 0,
    ) -> None:
        super().__init__(dim, hidden, activation, mask, index, context)

    def _transform(self, x_b: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        shift = params[..., 0]
        y_b = x_b - shift if inverse else x_b + shift
        return y_b, x_b.new_zeros(x_b.shape[0])


@register("affine_coupling")
class AffineCoupling(_Coupling):
    """RealNVP affine coupling z_b = x_b * exp(s(x_a)) + t(x_a).

    Dinh, Sohl-Dickstein & Bengio (2017), "Density estimation using Real NVP". Both directions are
    one pass. log s is softly clamped to (-scale_bound, scale_bound) so a bad step cannot overflow.

    Options:
      hidden: widths of the conditioner MLP's hidden layers.
      activation: relu, elu, gelu, tanh or silu.
      mask: ``alternate`` (every other dimension) or ``half``; flips with the position in the stack.
      scale_bound: bound on |log scale| per layer.
    """

    n_params = 2

    def __init__(
        self,
        dim: int,
        *,
        hidden: list[int] = [64, 64],
        activation: str = "relu",
        mask: Literal["alternate", "half"] = "alternate",
        scale_bound: float = 5.0,
        index: int = 0,
        context: int = 0,
    ) -> None:
        check(scale_bound > 0, "scale_bound", "must be > 0")
        super().__init__(dim, hidden, activation, mask, index, context)
        self.scale_bound = scale_bound

    def _transform(self, x_b: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        log_s = soft_clamp(params[..., 0], self.scale_bound)
        shift = params[..., 1]
        if inverse:
            return (x_b - shift) * (-log_s).exp(), -log_s.sum(1)
        return x_b * log_s.exp() + shift, log_s.sum(1)
