"""Masked autoregressive flow ``maf`` and its directions swapped, ``iaf``."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from .base import Layer, check, register, soft_clamp
from .nets import ACTIVATIONS, MADE, autoregressive_order


@register("maf")
class MAF(Layer):
    """Masked autoregressive flow z_i = x_i * exp(s_i(x_<i)) + t_i(x_<i), with a MADE conditioner.

    Papamakarios, Pavlakou & Murray (2017), "Masked Autoregressive Flow for Density Estimation".
    Density (forward, data -> latent) costs one network pass; sampling (inverse) costs ``dim`` passes.

    Options:
      hidden: widths of the MADE's hidden layers.
      activation: relu, elu, gelu, tanh or silu.
      order: ``alternate`` (natural, then reversed, by position in the stack) or ``random``.
      scale_bound: bound on |log scale| per dimension.
    """

    conditional = True

    def __init__(
        self,
        dim: int,
        *,
        hidden: list[int] = [128, 128],
        activation: str = "relu",
        order: Literal["alternate", "random"] = "alternate",
        scale_bound: float = 5.0,
        index: int = 0,
        context: int = 0,
    ) -> None:
        super().__init__()
        check(all(h > 0 for h in hidden), "hidden", "layer widths must be positive integers")
        check(activation in ACTIVATIONS, "activation", f"must be one of {', '.join(ACTIVATIONS)}")
        check(scale_bound > 0, "scale_bound", "must be > 0")
        self.dim, self.scale_bound = dim, scale_bound
        self.made = MADE(dim, hidden, 2, autoregressive_order(dim, index, order), activation, context)

    def _scale_shift(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        params = self.made(x, context)
        return soft_clamp(params[..., 0], self.scale_bound), params[..., 1]

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        log_s, shift = self._scale_shift(x, context)
        return x * log_s.exp() + shift, log_s.sum(1)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        def invert(z_i: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
            log_s = soft_clamp(params[..., 0], self.scale_bound)
            return (z_i - params[..., 1]) * (-log_s).exp(), -log_s

        return self.made.solve(z, invert, context)


@register("iaf")
class IAF(MAF):
    """Inverse autoregressive flow: the MAF transform with its two directions swapped.

    Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling (2016), "Improved Variational Inference
    with Inverse Autoregressive Flow". Sampling (inverse, latent -> data) is x_i = z_i * exp(s_i(z_<i))
    + t_i(z_<i), one network pass; density (forward, data -> latent) solves for z variable by
    variable, ``dim`` sequential steps (done as one network pass split into slices, MADE.solve).
    The paper's gated update x = σ z + (1 - σ) m is this affine map with s = log σ and t = (1 - σ) m.

    Options: as ``maf`` (hidden, activation, order, scale_bound).
    """

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return MAF.inverse(self, x, context)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return MAF.forward(self, z, context)
