"""An MLP that also gives its Jacobian, exactly and without autograd, for ``residual`` and ``cnf``.

Both layers need Jacobian-vector products and Jacobian traces of a small MLP at every step. For
y = W_L a(... a(W_1 x + b_1) ...) + b_L the Jacobian is W_L D_{L-1} W_{L-1} ... D_1 W_1 with D_l the
diagonal of activation slopes, so products are propagated layer by layer from the slopes recorded in the
forward pass. This works the same under ``torch.inference_mode`` (where autograd is off, as when a model
scores a file) and under autograd (training backpropagates through it), costs one small matrix product per
layer, and needs no second pass through the network.

With ``lipschitz=c`` every weight matrix is divided by max(1, σ_max(W) / c), σ_max computed exactly
(``torch.linalg.matrix_norm(W, 2)``; the matrices here are small): with 1-Lipschitz activations the
network is then c-Lipschitz in both training and evaluation, with no power-iteration state to drift
(Behrmann et al. 2019 and Chen et al. 2019 estimate σ by power iteration; exact is affordable here).
"""

from __future__ import annotations

from itertools import pairwise
from typing import cast

import torch
from torch import Tensor, nn

LIPSWISH_SCALE = 1.1  # max slope of x * sigmoid(x) is about 1.0998 (Chen et al. 2019)


def _lipswish(x: Tensor) -> tuple[Tensor, Tensor]:
    s = torch.sigmoid(x)
    return x * s / LIPSWISH_SCALE, (s + x * s * (1 - s)) / LIPSWISH_SCALE


def _tanh(x: Tensor) -> tuple[Tensor, Tensor]:
    y = torch.tanh(x)
    return y, 1 - y * y


def _elu(x: Tensor) -> tuple[Tensor, Tensor]:
    e = torch.expm1(torch.clamp(x, max=0))
    return torch.where(x > 0, x, e), torch.where(x > 0, torch.ones_like(x), e + 1)


def _softplus(x: Tensor) -> tuple[Tensor, Tensor]:
    return nn.functional.softplus(x), torch.sigmoid(x)


# name -> function returning (activation, slope); all are 1-Lipschitz, and all but elu are smooth.
ACTIVATIONS_WITH_SLOPE = {"lipswish": _lipswish, "tanh": _tanh, "elu": _elu, "softplus": _softplus}


class JacobianMLP(nn.Module):
    """MLP ``n_in -> hidden -> n_out`` with forward Jacobian products; the last layer starts at zero."""

    def __init__(
        self, n_in: int, hidden: list[int], n_out: int, activation: str = "tanh", lipschitz: float | None = None
    ) -> None:
        super().__init__()
        sizes = [n_in, *hidden, n_out]
        linears = [nn.Linear(a, b) for a, b in pairwise(sizes)]
        nn.init.zeros_(linears[-1].weight)
        nn.init.zeros_(linears[-1].bias)
        self.linears = nn.ModuleList(linears)
        self.activation = ACTIVATIONS_WITH_SLOPE[activation]
        self.lipschitz = lipschitz

    def _layers(self) -> list[nn.Linear]:
        # ModuleList is typed as holding Modules; every entry of ``self.linears`` is an nn.Linear (``__init__``).
        return cast(list[nn.Linear], list(self.linears))

    def weights(self) -> list[Tensor]:
        """The weight matrices as used: spectrally normalized to norm <= ``lipschitz`` when it is set."""
        if self.lipschitz is None:
            return [lin.weight for lin in self._layers()]
        return [
            w / torch.clamp(torch.linalg.matrix_norm(w, 2) / self.lipschitz, min=1)
            for w in (lin.weight for lin in self._layers())
        ]

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Output, the weights used, and the activation slopes of each hidden layer (for ``jvp``)."""
        weights = self.weights()
        layers = self._layers()
        slopes: list[Tensor] = []
        h = x
        for w, lin in zip(weights[:-1], layers[:-1], strict=False):
            h, slope = self.activation(nn.functional.linear(h, w, lin.bias))
            slopes.append(slope)
        return nn.functional.linear(h, weights[-1], layers[-1].bias), weights, slopes

    @staticmethod
    def jvp(weights: list[Tensor], slopes: list[Tensor], v: Tensor) -> Tensor:
        """J v for tangents ``v`` of shape (batch, ..., k): the Jacobian with respect to the first k inputs.

        Extra axes between batch and k hold several tangents per row (k columns of the identity give the
        full Jacobian, transposed).
        """
        extra = v.dim() - 2
        h = v @ weights[0][:, : v.shape[-1]].T
        for w, slope in zip(weights[1:], slopes, strict=False):
            h = (h * slope.view(slope.shape[0], *([1] * extra), slope.shape[1])) @ w.T
        return h

    @classmethod
    def jacobian(cls, weights: list[Tensor], slopes: list[Tensor], k: int) -> Tensor:
        """Full Jacobian (batch, n_out, k) with respect to the first k inputs (needs a hidden layer)."""
        n = slopes[0].shape[0]
        eye = torch.eye(k, dtype=weights[0].dtype, device=weights[0].device).expand(n, k, k)
        return cls.jvp(weights, slopes, eye).transpose(1, 2)
