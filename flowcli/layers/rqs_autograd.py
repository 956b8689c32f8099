"""The rational-quadratic spline of ``spline.rational_quadratic`` without an autograd graph: both directions
for scoring and sampling, and the forward direction (data -> latent) for training, with its backward
written by hand (``RationalQuadraticForward``).

The values are those of the reference ``spline._rational_quadratic_autograd`` (to rounding); the speed
comes from two things:

* parameter-major layout: ``params`` of shape (rows, columns, 3 * bins - 1) is read as (rows, 3 * bins - 1,
  columns), which is how ``MADE`` lays out its output in memory (a free view), so every per-bin operation
  (the softmax, the cumulative sum, the bin search) runs over an outer axis of contiguous rows of
  ``columns`` values. A softmax over a last axis of 8 values is pathologically slow on CPU (2.5 ms for
  512 x 16 x 2 rows of 8 here, against 0.1 ms for the same softmax over the outer axis);
* no graph and few operations: on (512, 16) tensors each operation costs more in dispatch than in
  arithmetic. The backward computes the gradients w.r.t. the input and the parameters from the few
  intermediate values a point needs: 54 operations forward and 61 backward for an 8-bin layer, against
  77 and 108 (and autograd's bookkeeping) for the reference.

The constraints (``MIN_BIN``, ``MIN_DERIVATIVE``, the end derivatives fixed at 1, the identity tails) live
here so that the reference in ``spline.py`` and this module share them.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

MIN_BIN = 1e-3  # smallest bin width and height, as a share of the interval: keeps the slopes bounded
MIN_DERIVATIVE = 1e-3  # smallest knot derivative: keeps the map strictly monotone
# softplus(raw + shift) + MIN_DERIVATIVE == 1 at raw == 0, so a zero network output is the identity.
DERIVATIVE_SHIFT = math.log(math.expm1(1 - MIN_DERIVATIVE))
CHUNK_POINTS = 16384  # values per chunk when scoring (rational_quadratic_lean)


class _Bins(NamedTuple):
    """Where each point falls, shapes for ``v`` of (rows, columns) and ``bins`` bins."""

    soft: Tensor  # (rows, 2, bins, columns): softmax of the width and height logits
    below: Tensor  # (rows, bins, columns), bool: bin j lies below the point's bin
    bin_index: Tensor  # (rows, 1, columns), int64: the bin of the point
    left_share: Tensor  # (rows, 2, 1, columns): softmax mass below the bin (x, y)
    size_share: Tensor  # (rows, 2, 1, columns): softmax mass of the bin (width, height)
    left: Tensor  # (rows, 2, columns): the bin's left knot x0, y0
    size: Tensor  # (rows, 2, columns): the bin's width, height
    raw_index: Tensor  # (rows, 2, columns), int64: rows of ``pm`` holding the two knot derivatives (clamped)
    end: Tensor  # (rows, 2, columns), bool: the knot is an end knot (derivative 1, no parameter)
    z: Tensor  # (rows, 2, columns): raw + shift of the bin's two knot derivatives
    derivative: Tensor  # (rows, 2, columns): the bin's two knot derivatives d0, d1


def _locate(vc: Tensor, pm: Tensor, bound: float, bins: int, inverse: bool = False) -> _Bins:
    """The bin of each clamped point ``vc`` (rows, columns) and its knots, from parameter-major ``pm``;
    ``inverse``: ``vc`` is an output, found among the y knots.

    The arithmetic follows ``spline._rational_quadratic_autograd`` where it decides something (the bin
    search) and where the reference rounds in a particular way (``index * MIN_BIN`` is computed in the
    default dtype there, so it is here), so that both agree to rounding. Written in few operations: on
    (512, 16) tensors each costs more in dispatch than in arithmetic.
    """
    share = 1 - MIN_BIN * bins
    soft = _softmax_over_bins(pm[:, : 2 * bins].unflatten(1, (2, bins)))
    # cumulative[:, :, j] = the shares of the bins below bin j, summed in order (the reference's masked
    # sum): the left knots themselves, not a difference of sums that would cost x0 its last bits.
    cumulative = F.pad(torch.cumsum(soft, dim=2), (0, 0, 1, 0))
    u = ((vc + bound) / (2 * bound)).unsqueeze(1)
    # The right edges of the bins as shares of the interval; the last one never counts (inf), so
    # ``below`` has a row per bin and the bin index is its sum.
    below = u >= torch.add(
        _edge_offsets(bins, soft.dtype, soft.device), cumulative[:, 1 if inverse else 0, 1:], alpha=share
    )
    index = below.sum(1, keepdim=True)
    at = index.unsqueeze(1).expand(-1, 2, -1, -1)
    size_share = torch.gather(soft, 2, at)
    left_share = torch.gather(cumulative, 2, at)
    left = torch.add(index * MIN_BIN, left_share.squeeze(2), alpha=share).mul_(2 * bound).sub_(bound)
    size = size_share.squeeze(2).mul(share * 2 * bound).add_(MIN_BIN * 2 * bound)
    # Knot derivatives: gather the two raw values first (clamped into range at the end knots, whose
    # derivative is 1 whatever was gathered), so the softplus runs on two numbers per point.
    unclamped = index + _derivative_rows(bins, vc.device)  # rows of pm for knots index and index + 1
    raw_index = unclamped.clamp(2 * bins, 3 * bins - 2)
    end = unclamped != raw_index
    z = torch.gather(pm, 1, raw_index).add_(DERIVATIVE_SHIFT)
    derivative = F.softplus(z).add_(MIN_DERIVATIVE).masked_fill_(end, 1.0)
    return _Bins(soft, below, index, left_share, size_share, left, size, raw_index, end, z, derivative)


def _softmax_over_bins(logits: Tensor) -> Tensor:
    """``torch.softmax(logits, dim=2)`` for ``logits`` of shape (rows, 2, bins, columns), contiguous.

    On CPU, torch's softmax over a middle axis is fast only when the axes inside it hold a multiple of 16
    values: on (512, 2, 8, columns), 0.15 ms for 16 columns, 0.99 ms for 15, 0.41 ms for 20, 9.4 ms for 300.
    With the rows moved inside the bins (one copy each way, 0.05 ms for 15 columns) the inner axes hold
    rows x columns values and the softmax takes 0.14 ms for 15 columns, 3.9 ms for 300. The same values to
    rounding: a share's last bit may depend on the rows batched with it."""
    if logits.device.type != "cpu" or logits.shape[-1] % 16 == 0:
        return torch.softmax(logits, dim=2)
    bins_outside = torch.softmax(logits.permute(1, 2, 0, 3).contiguous(), dim=1)  # (2, bins, rows, columns)
    return bins_outside.permute(2, 0, 1, 3).contiguous()


def _edge_offsets(bins: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(bins, 1): k * MIN_BIN for k = 1 .. bins - 1, computed as the reference does (in the default dtype),
    then inf. Cached: four small operations per call otherwise, out of about a hundred."""
    if _compiling():  # dynamo would trace through the cache's wrapper, with a warning
        return _make_edge_offsets(bins, dtype, device)
    return _cached_edge_offsets(bins, dtype, device)


def _make_edge_offsets(bins: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    offsets = (torch.arange(1, bins, device=device) * MIN_BIN).to(dtype)
    return torch.cat([offsets, offsets.new_full((1,), math.inf)]).unsqueeze(-1)


def _derivative_rows(bins: int, device: torch.device) -> Tensor:
    """(2, 1): the row of ``pm`` holding the raw derivative of knot k is k + 2 * bins - 1 (interior knots)."""
    if _compiling():
        return _make_derivative_rows(bins, device)
    return _cached_derivative_rows(bins, device)


def _make_derivative_rows(bins: int, device: torch.device) -> Tensor:
    return torch.tensor([[2 * bins - 1], [2 * bins]], device=device)


def _compiling() -> bool:
    check = getattr(torch.compiler, "is_compiling", None)  # torch >= 2.3
    return bool(check()) if check is not None else False


_cached_edge_offsets = functools.lru_cache(maxsize=64)(_make_edge_offsets)
_cached_derivative_rows = functools.lru_cache(maxsize=64)(_make_derivative_rows)


def _parameter_major(params: Tensor) -> Tensor:
    """``params`` (rows, columns, n) as (rows, n, columns), contiguous (a free view for ``MADE`` outputs)."""
    return params.transpose(1, 2).contiguous()


class _Saved(NamedTuple):
    """What the backward needs, (rows, columns) unless said otherwise."""

    bins: _Bins
    inside: Tensor  # bool
    xs: Tensor  # (rows, 2, columns): 1 - xi, xi
    squares: Tensor  # (rows, 2, columns): (1 - xi)^2, xi^2
    t: Tensor  # xi (1 - xi)
    slope: Tensor  # height / width
    curvature: Tensor  # d0 + d1 - 2 slope
    denominator: Tensor  # slope + curvature t
    numerator: Tensor  # d1 xi^2 + 2 slope t + d0 (1 - xi)^2
    ratio: Tensor  # (out - y0) / height = (slope xi^2 + d0 t) / denominator
    jacobian: Tensor  # d out / d v = slope^2 numerator / denominator^2


def _evaluate(v: Tensor, pm: Tensor, bound: float, bins: int) -> tuple[Tensor, Tensor, _Saved]:
    """Output, log|d out / d v| and the intermediates of the backward, for ``v`` (rows, columns)."""
    vc = v.clamp(-bound, bound)
    inside = vc == v  # also false for NaN, as in the reference
    b = _locate(vc, pm, bound, bins)
    x0, y0 = b.left.unbind(1)
    width, height = b.size.unbind(1)
    slope = height / width
    xi = (vc - x0) / width
    xs = torch.stack([1 - xi, xi], dim=1)
    squares = xs * xs
    t = xi * xs[:, 0]
    curvature = torch.add(b.derivative.sum(1), slope, alpha=-2)
    denominator = torch.addcmul(slope, curvature, t)
    ratio = torch.addcmul(slope * squares[:, 1], b.derivative[:, 0], t).div_(denominator)
    out = torch.addcmul(y0, height, ratio)
    numerator = torch.addcmul((b.derivative * squares).sum(1), slope, t, value=2)
    jacobian = (slope / denominator).square_().mul_(numerator)
    ladj = torch.log(jacobian)
    saved = _Saved(b, inside, xs, squares, t, slope, curvature, denominator, numerator, ratio, jacobian)
    return torch.where(inside, out, v), torch.where(inside, ladj, 0.0), saved


def _evaluate_inverse(v: Tensor, pm: Tensor, bound: float, bins: int) -> tuple[Tensor, Tensor]:
    """The inverse's output and log|d out / d v| for ``v`` (rows, columns): the stable root of the quadratic
    ``2c / (-b - sqrt(b^2 - 4ac))``, the discriminant clamped at 0, as ``spline._rational_quadratic_autograd``."""
    vc = v.clamp(-bound, bound)
    inside = vc == v
    located = _locate(vc, pm, bound, bins, inverse=True)
    x0, y0 = located.left.unbind(1)
    width, height = located.size.unbind(1)
    d0, d1 = located.derivative.unbind(1)
    slope = height / width
    curvature = d0 + d1 - 2 * slope
    dy = vc - y0
    a = height * (slope - d0) + dy * curvature
    b = height * d0 - dy * curvature
    c = -slope * dy
    root = torch.sqrt((b * b - 4 * a * c).clamp_min(0))
    xi = (2 * c / (-b - root)).clamp(0, 1)
    out = x0 + xi * width
    t = xi * (1 - xi)
    denominator = slope + curvature * t
    numerator = d1 * xi * xi + 2 * slope * t + d0 * (1 - xi) * (1 - xi)
    ladj = -torch.log(slope * slope * numerator / (denominator * denominator))
    return torch.where(inside, out, v), torch.where(inside, ladj, 0.0)


def rational_quadratic_lean(v: Tensor, params: Tensor, bound: float, inverse: bool = False) -> tuple[Tensor, Tensor]:
    """``spline.rational_quadratic(v, params, bound, inverse)`` for ``v`` of shape (rows, columns), computed
    without recording a graph: for scoring and sampling.

    The values are processed in chunks of about ``CHUNK_POINTS`` (of rows; of columns for a single row,
    as ``MADE.solve`` passes one variable) so that the (rows, 2, bins, columns) intermediates stay in
    cache: scoring 65,536 rows at once is memory-bound (3.2 ms per 1,000 rows for one 8-bin layer of 16
    columns, against 1.6 ms in chunks of 1,024 rows).
    """
    bins = (params.shape[-1] + 1) // 3

    def evaluate(v: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        if inverse:
            return _evaluate_inverse(v, _parameter_major(params), bound, bins)
        out, ladj, _ = _evaluate(v, _parameter_major(params), bound, bins)
        return out, ladj

    dim = 1 if v.shape[0] == 1 else 0
    step = CHUNK_POINTS if dim == 1 else max(1, CHUNK_POINTS // max(1, v.shape[1]))
    if v.shape[dim] <= step:
        return evaluate(v, params)
    pieces = [evaluate(*chunk) for chunk in zip(v.split(step, dim), params.split(step, dim), strict=True)]
    return torch.cat([out for out, _ in pieces], dim), torch.cat([ladj for _, ladj in pieces], dim)


def _local_gradients(go: Tensor, gl: Tensor, s: _Saved) -> tuple[Tensor, Tensor, Tensor]:
    """The gradients of ``go * out + gl * ladj`` (inside points; zero ``go``, ``gl`` elsewhere) w.r.t. xi and
    the slope, divided by the width, and w.r.t. the two knot derivatives (rows, 2, columns).

    With t = xi (1 - xi), c = d0 + d1 - 2 s, den = s + c t, R = (s xi^2 + d0 t) / den, out = y0 + h R,
    num = d0 (1 - xi)^2 + d1 xi^2 + 2 s t and ladj = 2 log s + log num - 2 log den:

        d out / d xi = w J (J = d out / d v)      d ladj / d xi = (2 (d1 xi - d0 (1 - xi) + s q)) / num - 2 c q / den
        d out / d s = h (xi^2 - R (1 - 2 t)) / den   d ladj / d s = 2 / s + 2 t / num - 2 (1 - 2 t) / den
        d out / d (d0, d1) = h t (1 - R, -R) / den   d ladj / d (d0, d1) = ((1 - xi)^2, xi^2) / num - 2 t / den

    where q = 1 - 2 xi = dt / dxi.
    """
    d = s.bins.derivative
    width, height = s.bins.size.unbind(1)
    inv_den, inv_num, inv_width = s.denominator.reciprocal(), s.numerator.reciprocal(), width.reciprocal()
    go_h = go * height * inv_den
    gl_num, gl_t_den = gl * inv_num, gl * s.t * inv_den
    # Both knot derivatives at once.
    a = go_h * s.t
    b = a * s.ratio
    g_derivative = torch.addcmul(torch.stack([a - b, -b], dim=1), s.squares, gl_num.unsqueeze(1))
    g_derivative.sub_(gl_t_den.unsqueeze(1), alpha=2)
    one_minus_2t = 1 - 2 * s.t
    out_slope = torch.addcmul(s.squares[:, 1], s.ratio, one_minus_2t, value=-1)
    ladj_slope = torch.addcmul(torch.addcmul(s.slope.reciprocal(), s.t, inv_num), one_minus_2t, inv_den, value=-1)
    g_slope_w = torch.addcmul(go_h * out_slope, gl, ladj_slope, value=2).mul_(inv_width)
    q = s.xs[:, 0] - s.xs[:, 1]
    dx = d * s.xs  # d0 (1 - xi), d1 xi
    half_d_num = torch.addcmul(dx[:, 1] - dx[:, 0], s.slope, q)
    ladj_xi = torch.addcmul(half_d_num * inv_num, s.curvature * q, inv_den, value=-1)
    g_xi_w = torch.addcmul(go * s.jacobian, gl * ladj_xi, inv_width, value=2)
    return g_xi_w, g_slope_w, g_derivative


def _parameter_gradients(
    g_left: Tensor, g_size: Tensor, g_derivative: Tensor, b: _Bins, bound: float, bins: int
) -> Tensor:
    """The gradient w.r.t. the parameter-major parameters (rows, 3 * bins - 1, columns), from the gradients
    w.r.t. the bin's left knots and sizes (rows, 2, columns) and its two knot derivatives.

    Every share below the bin moves the left knot, the bin's own share moves its size; then the softmax's
    backward, soft * (g - sum(g * soft)). Masks are multiplied in, not selected with ``torch.where``, which
    is an order of magnitude slower on (rows, 2, bins, columns) tensors.
    """
    scale = 2 * bound * (1 - MIN_BIN * bins)  # d(knot or size) / d(softmax share)
    a = (g_left * scale).unsqueeze(2)
    c = (g_size * scale).unsqueeze(2)
    c_size = c * b.size_share
    dot = torch.addcmul(c_size, a, b.left_share)  # sum_j g_soft_j * soft_j
    g_pm = b.soft.new_zeros(b.soft.shape[0], 3 * bins - 1, b.soft.shape[-1])
    g_logits = g_pm[:, : 2 * bins].unflatten(1, (2, bins))
    g_logits.copy_(b.below.unsqueeze(1)).mul_(a).sub_(dot).mul_(b.soft)
    g_logits.scatter_add_(2, b.bin_index.unsqueeze(1).expand(-1, 2, -1, -1), c_size)
    g_raw = (g_derivative * torch.sigmoid(b.z)).masked_fill_(b.end, 0.0)  # softplus' = sigmoid
    return g_pm.scatter_add_(1, b.raw_index, g_raw)  # two end knots may share a clamped row; they add 0


class RationalQuadraticForward(torch.autograd.Function):
    """(v, params, bound) -> (out, ladj) of ``spline.rational_quadratic`` in the forward direction, for ``v``
    of shape (rows, columns) and ``params`` (rows, columns, 3 * bins - 1), with a hand-written first-order
    backward (no double backward)."""

    @staticmethod
    def forward(ctx: Any, v: Tensor, params: Tensor, bound: float) -> tuple[Tensor, Tensor]:
        bins = (params.shape[-1] + 1) // 3
        out, ladj, saved = _evaluate(v, _parameter_major(params), bound, bins)
        ctx.bound, ctx.bins = bound, bins
        ctx.save_for_backward(*saved.bins, *saved[1:])
        return out, ladj

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor, grad_ladj: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        tensors = ctx.saved_tensors
        n = len(_Bins._fields)
        s = _Saved(_Bins(*tensors[:n]), *tensors[n:])
        go = torch.where(s.inside, grad_out, 0.0)
        gl = torch.where(s.inside, grad_ladj, 0.0)
        g_xi_w, g_slope_w, g_derivative = _local_gradients(go, gl, s)
        grad_v = torch.where(s.inside, g_xi_w, grad_out) if ctx.needs_input_grad[0] else None
        if not ctx.needs_input_grad[1]:
            return grad_v, None, None
        # x0 and w reach the outputs through xi = (v - x0) / w and the slope h / w; h through the slope and
        # out = y0 + h R.
        g_left = torch.stack([-g_xi_w, go], dim=1)
        g_width = torch.addcmul(g_slope_w * s.slope, g_xi_w, s.xs[:, 1]).neg_()
        g_size = torch.stack([g_width, torch.addcmul(g_slope_w, go, s.ratio)], dim=1)
        g_pm = _parameter_gradients(g_left, g_size, g_derivative, s.bins, ctx.bound, ctx.bins)
        return grad_v, g_pm.transpose(1, 2), None
