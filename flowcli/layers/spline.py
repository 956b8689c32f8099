"""Monotone rational-quadratic spline flows: ``spline_coupling`` and ``spline_autoregressive``.

Durkan, Bekasov, Murray & Papamakarios (2019), "Neural Spline Flows". Each transformed variable goes
through a monotone piecewise rational-quadratic function on [-bound, bound] with ``bins`` bins, whose
knots and knot derivatives come from a conditioner network; outside the interval the map is the
identity (the tails), so the spline is a bijection of the whole real line.

The spline math is one function, ``rational_quadratic``, used by both layers. Its arithmetic runs in
``rqs_autograd`` (without an autograd graph; a hand-written backward for training); the autograd version
here, ``_rational_quadratic_autograd``, is the reference it is tested against and the inverse under
autograd. Both are written for speed and robustness:

* every input is first clamped into [-bound, bound] and the spline is evaluated there, then
  ``torch.where`` selects the identity for the tails. Both branches are finite everywhere, so the
  gradient of the unused branch is 0 * finite = 0 and never NaN (a masked branch evaluated on
  out-of-range inputs is what gives other implementations NaN gradients);
* the inverse uses the numerically stable root ``2c / (-b - sqrt(b^2 - 4ac))`` with the discriminant
  clamped at 0, so rounding can never produce the square root of a negative number;
* few, small kernels: the widths and heights share one softmax and one cumulative sum, the bin is found by a comparison-sum against the interior knots, and only the handful of
  values a point needs are gathered before the remaining arithmetic, which runs on (batch, dim)
  tensors rather than (batch, dim, bins) ones.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Layer, check, register
from .coupling import _Coupling
from .nets import ACTIVATIONS, MADE, autoregressive_order
from .rqs_autograd import DERIVATIVE_SHIFT as _DERIVATIVE_SHIFT
from .rqs_autograd import MIN_BIN, MIN_DERIVATIVE, RationalQuadraticForward, rational_quadratic_lean


def spline_param_count(bins: int) -> int:
    """Per variable: ``bins`` widths, ``bins`` heights and ``bins - 1`` interior knot derivatives."""
    return 3 * bins - 1


def rational_quadratic(v: Tensor, params: Tensor, bound: float, inverse: bool = False) -> tuple[Tensor, Tensor]:
    """Elementwise monotone rational-quadratic spline with identity tails, in either direction.

    ``v`` has any shape ``S``; ``params`` has shape ``S + (3 * bins - 1,)``: unnormalized widths,
    unnormalized heights and unconstrained interior derivatives. All zeros give the identity (evenly
    spaced knots, derivatives 1). The end derivatives are 1 so the spline joins the identity tails
    with a continuous slope. Returns the output and log|d output / d v|, both of shape ``S``.

    Runs in ``rqs_autograd``, without an autograd graph: the forward direction with a hand-written backward
    when a gradient is needed, both directions as plain arithmetic when none is (scoring, sampling). The
    inverse under autograd is ``_rational_quadratic_autograd``.
    """
    grad = torch.is_grad_enabled() and (v.requires_grad or params.requires_grad)
    if inverse and grad:
        return _rational_quadratic_autograd(v, params, bound, inverse=True)
    shape = v.shape
    if params.dtype != v.dtype:
        dtype = torch.promote_types(v.dtype, params.dtype)
        v, params = v.to(dtype), params.to(dtype)
    columns = shape[-1] if v.dim() > 0 else 1
    v2, params2 = v.reshape(-1, columns), params.reshape(-1, columns, params.shape[-1])
    if grad:
        out, ladj = RationalQuadraticForward.apply(v2, params2, bound)
    else:
        out, ladj = rational_quadratic_lean(v2, params2, bound, inverse)
    return out.reshape(shape), ladj.reshape(shape)


def _rational_quadratic_autograd(
    v: Tensor, params: Tensor, bound: float, inverse: bool = False
) -> tuple[Tensor, Tensor]:
    """``rational_quadratic`` differentiated by autograd: the inverse, and the reference the forward of
    ``rqs_autograd`` is tested against (values, log-dets and every gradient)."""
    bins = (params.shape[-1] + 1) // 3
    logits, raw_derivatives = params.split([2 * bins, bins - 1], dim=-1)
    # Widths and heights together: one softmax over a (..., 2, bins) view. The bin sizes, as shares of
    # the interval, are MIN_BIN + share * softmax; that affine map is applied only to gathered values.
    soft = torch.softmax(logits.unflatten(-1, (2, bins)), dim=-1)
    share = 1 - MIN_BIN * bins

    inside = (v >= -bound) & (v <= bound)
    vc = v.clamp(-bound, bound)  # the spline is only ever evaluated on finite in-range values
    u = (vc + bound) / (2 * bound)  # position as a share of the interval
    k = torch.arange(bins, device=v.device)
    with torch.no_grad():  # the bin index is discrete: find it without building a graph
        searched = soft[..., 1 if inverse else 0, : bins - 1]  # bins are found among the y knots when inverting
        right_edges = torch.cumsum(searched, dim=-1) * share + (k[1:] * MIN_BIN).to(soft.dtype)
        index = (u.unsqueeze(-1) >= right_edges).sum(-1, keepdim=True)  # (..., 1) in [0, bins-1]
    # The left knot is the sum of the sizes of the bins below: a masked sum, whose backward is one
    # multiplication (a differentiable cumsum + gather costs two flips, a cumsum and a scatter).
    below = (k < index).unsqueeze(-2).to(soft.dtype)  # (..., 1, bins)
    left = ((soft * below).sum(-1) * share + index * MIN_BIN) * (2 * bound) - bound  # (..., 2): x0, y0
    size = (torch.gather(soft, -1, index.unsqueeze(-2).expand(*soft.shape[:-1], 1)).squeeze(-1) * share + MIN_BIN) * (
        2 * bound
    )  # (..., 2): width, height
    x0, y0 = left[..., 0], left[..., 1]
    width, height = size[..., 0], size[..., 1]
    # The derivatives at the bin's two knots: gather the raw values first, so the softplus runs on two
    # numbers per point instead of bins - 1; the end knots have derivative 1 (the identity tails').
    ends = torch.cat([index - 1, index], dim=-1)  # (..., 2)
    raw = torch.gather(raw_derivatives, -1, ends.clamp(0, bins - 2))
    derivative = MIN_DERIVATIVE + F.softplus(raw + _DERIVATIVE_SHIFT)
    derivative = torch.where((ends < 0) | (ends > bins - 2), torch.ones_like(derivative), derivative)
    d0, d1 = derivative[..., 0], derivative[..., 1]
    slope = height / width
    curvature = d0 + d1 - 2 * slope

    if inverse:
        dy = vc - y0
        a = height * (slope - d0) + dy * curvature
        b = height * d0 - dy * curvature
        c = -slope * dy
        root = torch.sqrt((b * b - 4 * a * c).clamp_min(0))
        xi = (2 * c / (-b - root)).clamp(0, 1)  # the stable root: -b - root < 0 since b > 0 on the bin
        out = x0 + xi * width
    else:
        xi = (vc - x0) / width
    t = xi * (1 - xi)
    denominator = slope + curvature * t
    if not inverse:
        out = y0 + height * (slope * xi * xi + d0 * t) / denominator
    numerator = d1 * xi * xi + 2 * slope * t + d0 * (1 - xi) * (1 - xi)
    ladj = 2 * torch.log(slope) + torch.log(numerator) - 2 * torch.log(denominator)
    if inverse:
        ladj = -ladj
    return torch.where(inside, out, v), torch.where(inside, ladj, torch.zeros_like(ladj))


def _check_spline_options(bins: int, bound: float, hidden: list[int], activation: str) -> None:
    check(bins >= 2, "bins", "must be an integer >= 2")
    check(bins * MIN_BIN < 0.5, "bins", f"must be < {int(0.5 / MIN_BIN)}")
    check(bound > 0, "bound", "must be > 0")
    check(all(h > 0 for h in hidden), "hidden", "layer widths must be positive integers")
    check(activation in ACTIVATIONS, "activation", f"must be one of {', '.join(ACTIVATIONS)}")


@register("spline_coupling")
class SplineCoupling(_Coupling):
    """Rational-quadratic spline coupling: z_b = RQS(x_b; θ(x_a)), identity outside [-bound, bound].

    Durkan, Bekasov, Murray & Papamakarios (2019), "Neural Spline Flows" (RQ-NSF (C)). Both
    directions cost one network pass (the inverse solves a quadratic per variable in closed form).

    Options:
      bins: number of spline bins (default 8); the conditioner outputs 3 * bins - 1 values per variable.
      bound: the spline acts on [-bound, bound] (default 5, in standardized units); identity outside.
      hidden: widths of the conditioner MLP's hidden layers.
      activation: relu, elu, gelu, tanh or silu.
      mask: ``alternate`` (every other dimension) or ``half``; flips with the position in the stack.
    """

    def __init__(
        self,
        dim: int,
        *,
        bins: int = 8,
        bound: float = 5.0,
        hidden: list[int] = [64, 64],
        activation: str = "relu",
        mask: Literal["alternate", "half"] = "alternate",
        index: int = 0,
        context: int = 0,
    ) -> None:
        _check_spline_options(bins, bound, hidden, activation)
        self.n_params = spline_param_count(bins)  # read by _Coupling to size the conditioner
        super().__init__(dim, hidden, activation, mask, index, context)
        self.bound = bound

    def _transform(self, x_b: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        y_b, ladj = rational_quadratic(x_b, params, self.bound, inverse)
        return y_b, ladj.sum(1)


@register("spline_autoregressive")
class SplineAutoregressive(Layer):
    conditional = True
    # The inverse is exact in closed form, but solving variable by variable compounds rounding: an error in
    # x_i moves the spline parameters of every later variable. For splines at the MIN_BIN/MIN_DERIVATIVE
    # limits (slopes up to ~1e3) that leaves float64 round trips near 1e-7, not 1e-12.
    inverse_tolerance = 1e-6

    """Autoregressive rational-quadratic spline flow (RQ-NSF (AR)) with a MADE conditioner.

    Durkan, Bekasov, Murray & Papamakarios (2019), "Neural Spline Flows"; the conditioner is MADE
    (Germain et al. 2015) as in MAF (Papamakarios et al. 2017). z_i = RQS(x_i; θ_i(x_<i)), identity
    outside [-bound, bound]. Density (forward, data -> latent) costs one network pass; sampling
    (inverse) costs ``dim`` sequential steps, done as one network pass split into slices (MADE.solve).

    Options:
      bins: number of spline bins (default 8); the MADE outputs 3 * bins - 1 values per variable.
      bound: the spline acts on [-bound, bound] (default 5, in standardized units); identity outside.
      hidden: widths of the MADE's hidden layers.
      activation: relu, elu, gelu, tanh or silu.
      order: ``alternate`` (natural, then reversed, by position in the stack) or ``random``.
    """

    def __init__(
        self,
        dim: int,
        *,
        bins: int = 8,
        bound: float = 5.0,
        hidden: list[int] = [128, 128],
        activation: str = "relu",
        order: Literal["alternate", "random"] = "alternate",
        index: int = 0,
        context: int = 0,
    ) -> None:
        super().__init__()
        _check_spline_options(bins, bound, hidden, activation)
        self.bound = bound
        order_ = autoregressive_order(dim, index, order)
        self.made = MADE(dim, hidden, spline_param_count(bins), order_, activation, context)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z, ladj = rational_quadratic(x, self.made(x, context), self.bound)
        return z, ladj.sum(1)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        def invert(z_i: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
            return rational_quadratic(z_i, params, self.bound, True)

        return self.made.solve(z, invert, context)
