"""Sum-of-squares polynomial flow: ``sos``."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from .base import check, register, soft_clamp
from .monotone import MonotoneAutoregressive
from .nets import ACTIVATIONS, MADE, autoregressive_order


@register("sos")
class SOS(MonotoneAutoregressive):
    """Autoregressive flow whose transformer integrates a sum of squared polynomials (closed form, no quadrature):

        z_i = b + c x_i + ∫_0^{tanh(x_i)} Σ_k p_k(u)² du,    p_k(u) = Σ_{j<=r} a_kj u^j,    c > 0,

    with b, c and the coefficients a given by a MADE conditioner on x_<i.
    Jaini, Selby & Yu (2019), "Sum-of-Squares Polynomial Flow". The integral of a squared polynomial is a
    polynomial: its coefficients are the self-convolution of a_k, integrated term by term, so the map and
    log dz/dx = log(c + Σ_k p_k(tanh x)² (1 - tanh² x)) are exact.

    Departure from the paper, on purpose: a polynomial of degree 2r + 1 in x explodes for large |x| (one
    outlier reaching a stack of these layers overflows). Here the polynomial acts on tanh(x), a bounded
    reparameterization, and the positive linear term c x carries the tails. The map stays a smooth strictly
    increasing bijection of the real line with linear tails, and the root of z = F(x) lies in the exact bracket
    [(z - b - Q(1)) / c, (z - b - Q(-1)) / c], where Q is the polynomial integral (Q is increasing on [-1, 1]).

    Cheap direction: density (data -> latent), one MADE pass. Sampling (latent -> data) solves z_i = F(x_i)
    for each variable in autoregressive order (safeguarded Newton/bisection inside the exact bracket,
    vectorized over the batch) to ``inverse_tolerance`` = 1e-9 relative to 1 + |x|.

    Options:
      hidden: widths of the MADE conditioner's hidden layers.
      degree: degree r of each polynomial (the transformer's polynomial has degree 2r + 1).
      polynomials: number k of squared polynomials summed.
      activation: activation of the MADE conditioner.
      order: ``alternate`` (natural, then reversed, by position in the stack) or ``random``.
      scale_bound: bound on |log c|.
    """

    inverse_tolerance = 1e-9
    product: Tensor  # buffer, not persistent (rebuilt from ``degree``)

    def __init__(
        self,
        dim: int,
        *,
        hidden: list[int] = [64, 64],
        degree: int = 3,
        polynomials: int = 3,
        activation: str = "relu",
        order: Literal["alternate", "random"] = "alternate",
        scale_bound: float = 5.0,
        index: int = 0,
        context: int = 0,
    ) -> None:
        super().__init__()
        check(all(h > 0 for h in hidden), "hidden", "layer widths must be positive integers")
        check(0 <= degree <= 10, "degree", "must be an integer between 0 and 10")
        check(polynomials >= 1, "polynomials", "must be an integer >= 1")
        check(activation in ACTIVATIONS, "activation", f"must be one of {', '.join(ACTIVATIONS)}")
        check(scale_bound > 0, "scale_bound", "must be > 0")
        self.dim, self.degree, self.polynomials, self.scale_bound = dim, degree, polynomials, scale_bound
        n_coef = polynomials * (degree + 1)
        self.made = MADE(dim, hidden, 2 + n_coef, autoregressive_order(dim, index, order), activation, context)
        # The MADE's last layer starts at zero. Squares have zero gradient at zero, so coefficients starting at
        # zero would never move: a learnable offset, small and random, shared by the variables, is added to them
        # (the layer starts near, not at, the identity).
        self.coefficient_offset = nn.Parameter(0.1 * torch.randn(n_coef))
        # product[i, j, m] = 1 when i + j == m: squares polynomial coefficients by one contraction.
        r = torch.arange(degree + 1)
        product = r[:, None, None] + r[None, :, None] == torch.arange(2 * degree + 1)[None, None, :]
        self.register_buffer("product", product.float(), persistent=False)

    def _parts(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Offset b, slope c and the coefficients q_m of Σ_k p_k(u)² (lowest degree first)."""
        b = params[..., 0]
        c = soft_clamp(params[..., 1], self.scale_bound).exp()
        a = params[..., 2:] + self.coefficient_offset
        a = a.unflatten(-1, (self.polynomials, self.degree + 1))
        squares = torch.einsum("...ki,...kj->...ij", a, a)
        q = torch.einsum("...ij,ijm->...m", squares, self.product.to(params.dtype))
        return b, c, q

    def transform(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        b, c, q = self._parts(params)
        u = torch.tanh(x)
        powers = u[..., None] ** torch.arange(q.shape[-1] + 1, device=x.device, dtype=x.dtype)  # u^0 .. u^(2r+1)
        integral = (q * powers[..., 1:] / torch.arange(1, q.shape[-1] + 1, device=x.device, dtype=x.dtype)).sum(-1)
        density = (q * powers[..., :-1]).sum(-1)
        return b + c * x + integral, torch.log(c + density * (1 - u * u))

    def bracket(self, z: Tensor, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, c, q = self._parts(params)
        m = torch.arange(1, q.shape[-1] + 1, device=z.device, dtype=z.dtype)
        at_one = (q / m).sum(-1)  # Q(1)
        at_minus_one = (q * (-1.0) ** m / m).sum(-1)  # Q(-1)
        lo, hi = (z - b - at_one) / c, (z - b - at_minus_one) / c
        pad = 1e-6 * (1 + lo.abs() + hi.abs())  # rounding must not leave the root just outside
        return lo - pad, hi + pad, (lo + hi) / 2
