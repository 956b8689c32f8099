"""The hand-written forward and backward of the rational-quadratic spline (flowcli/layers/rqs_autograd.py)
against finite differences (gradcheck) and against the autograd reference ``_rational_quadratic_autograd``:
values, log-dets and every gradient, in the tails, near knots, at the bounds and for extreme parameters.

The last tests break the backward on purpose and check that these comparisons notice.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from flowcli.layers import build_layer, rqs_autograd, spline
from flowcli.layers.rqs_autograd import MIN_BIN, RationalQuadraticForward, _softmax_over_bins
from flowcli.layers.spline import _rational_quadratic_autograd, rational_quadratic

BOUND = 3.0
Spline = Callable[[Tensor, Tensor, float], tuple[Tensor, Tensor]]


def moderate_params(rows: int, columns: int, bins: int) -> Tensor:
    """(rows, columns, 3 * bins - 1) standard normal, laid out parameter-major in memory as MADE's output is."""
    g = torch.Generator().manual_seed(bins)
    return torch.randn(rows, 3 * bins - 1, columns, generator=g, dtype=torch.float64).transpose(1, 2)


def extreme_params(rows: int, columns: int, bins: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """(rows, columns, 3 * bins - 1): ordinary rows, then very peaked and very flat softmaxes, derivatives
    near MIN_DERIVATIVE and large ones, laid out parameter-major in memory as MADE's output is."""
    g = torch.Generator().manual_seed(bins)
    p = torch.randn(rows, 3 * bins - 1, columns, generator=g, dtype=torch.float64) * 1.5
    p[1::4, :bins] *= 8  # peaked widths: most bins at the MIN_BIN floor
    p[2::4, bins : 2 * bins] *= 8  # peaked heights: slopes near 1 / MIN_BIN and near MIN_BIN
    p[3::4, 2 * bins :] = torch.where(p[3::4, 2 * bins :] > 0, 9.0, -9.0)  # derivatives ~9 and ~MIN_DERIVATIVE
    return p.to(dtype).transpose(1, 2)


def knots(params: Tensor, bound: float) -> Tensor:
    """The x knots (..., bins + 1) of ``params``, as the reference places them (its float32 ``k * MIN_BIN``)."""
    bins = (params.shape[-1] + 1) // 3
    soft = torch.softmax(params[..., :bins].double(), dim=-1)
    left = torch.cat([torch.zeros_like(soft[..., :1]), torch.cumsum(soft, -1)], -1)
    offsets = (torch.arange(bins + 1) * MIN_BIN).to(torch.float64)
    return (left * (1 - MIN_BIN * bins) + offsets) * (2 * bound) - bound


def inputs(params: Tensor, bound: float, offset: float) -> Tensor:
    """Points (rows, columns) of every kind: random ones inside, tails, far tails, the bounds approached
    from both sides, and points ``offset`` on either side of interior knots."""
    rows, columns = params.shape[:2]
    g = torch.Generator().manual_seed(rows)
    v = (torch.rand(rows, columns, generator=g, dtype=torch.float64) * 2 - 1) * bound * 0.999
    k = knots(params, bound)  # (rows, columns, bins + 1)
    pick = torch.randint(1, k.shape[-1] - 1, (rows, columns), generator=g)
    side = torch.where(torch.rand(rows, columns, generator=g) < 0.5, -1.0, 1.0).double()
    near = k.gather(-1, pick.unsqueeze(-1)).squeeze(-1) + offset * side
    v = torch.where(torch.arange(rows * columns).view(rows, columns) % 3 == 1, near, v)
    special = [-1e3, -bound - 0.5, bound + 0.5, 1e3, -bound - offset, bound + offset, -bound + offset, bound - offset]
    v.view(-1)[: len(special)] = torch.tensor(special, dtype=torch.float64)
    return v.to(params.dtype)


def values_and_gradients(f: Spline, v: Tensor, params: Tensor, bound: float) -> list[Tensor]:
    """out, ladj, and the gradients of out . g_out + ladj . g_ladj w.r.t. v and params (fixed random g's)."""
    v, params = v.detach().requires_grad_(), params.detach().requires_grad_()
    out, ladj = f(v, params, bound)
    g = torch.Generator().manual_seed(7)
    g_out = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)
    g_ladj = torch.randn(ladj.shape, generator=g, dtype=torch.float64).to(out.dtype)
    grads = torch.autograd.grad((out * g_out).sum() + (ladj * g_ladj).sum(), [v, params])
    return [out.detach(), ladj.detach(), *grads]


def assert_matches_reference(v: Tensor, params: Tensor, bound: float, envelope: bool = False) -> None:
    """Values and gradients equal to the reference's within 1e-10 (relative to the largest), or, with
    ``envelope``, within that plus the reference's own rounding envelope at each point: how much its
    results move when v moves by 4 ulps of the bound, as they do when x0 is rounded differently. With
    extreme parameters (bins at the MIN_BIN floor, slopes ~1e3, derivatives ~1e-3) that amplification
    reaches 1e-8, and the softmax kernels of the two implementations differ in the last bit."""
    new = values_and_gradients(rational_quadratic, v, params, bound)
    ref = values_and_gradients(_rational_quadratic_autograd, v, params, bound)
    noise = [torch.zeros_like(r) for r in ref]
    if envelope:
        step = 4 * torch.finfo(torch.float64).eps * bound
        for shifted in (v + step, v - step):
            moved = values_and_gradients(_rational_quadratic_autograd, shifted, params, bound)
            noise = [torch.maximum(n, (m - r).abs()) for n, m, r in zip(noise, moved, ref, strict=True)]
    for name, a, b, n in zip(["out", "ladj", "d/dv", "d/dparams"], new, ref, noise, strict=True):
        tolerance = 1e-10 * (1 + b.abs().max()) + 1e-10 * b.abs() + n
        excess = (a - b).abs() - tolerance
        assert excess.max() <= 0, (name, (a - b).abs().max().item(), excess.max().item())


@pytest.mark.parametrize("bins", [2, 3, 8, 16])
def test_gradcheck_in_float64_everywhere_but_on_kinks(bins: int) -> None:
    params = extreme_params(8, 3, bins)
    v = inputs(params, BOUND, offset=1e-4)  # gradcheck steps by 1e-6: stay clear of knots and bounds
    assert ((v.abs() > BOUND).any() and (v.abs() < BOUND).any()).item()
    v, params = v.requires_grad_(), params.detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: RationalQuadraticForward.apply(a, b, BOUND), (v, params))


@pytest.mark.parametrize("bins", [2, 8])
def test_gradcheck_of_the_parameters_exactly_at_the_bounds(bins: int) -> None:
    # A step in v at the bound crosses into the tail (log|det| has a kink there); a step in params does not.
    # A larger step than gradcheck's 1e-6: at the bound, log|det| ~ 0 comes out of cancelling terms whose
    # rounding (~1e-10 with the steepest bins) would dominate a difference quotient over 2e-6.
    params = extreme_params(6, 2, bins).detach().requires_grad_()
    v = torch.tensor([-BOUND, BOUND], dtype=torch.float64).expand(6, 2).contiguous()
    assert torch.autograd.gradcheck(lambda b: RationalQuadraticForward.apply(v, b, BOUND), (params,), eps=1e-4)


@pytest.mark.parametrize("bins", [2, 3, 8, 16])
@pytest.mark.parametrize("offset", [1e-9, 1e-4])
@pytest.mark.parametrize("columns", [5, 16])  # the two ways of the softmax over bins (_softmax_over_bins)
def test_values_and_gradients_match_the_autograd_reference(bins: int, offset: float, columns: int) -> None:
    params = moderate_params(64, columns, bins)
    v = inputs(params, BOUND, offset)
    v[0, :2] = torch.tensor([-BOUND, BOUND], dtype=torch.float64)  # exactly at the bounds
    assert_matches_reference(v, params, BOUND)
    assert_matches_reference(v, params.contiguous(), BOUND)  # a (rows, columns, n) contiguous layout too


@pytest.mark.parametrize("bins", [2, 3, 8, 16])
@pytest.mark.parametrize("offset", [1e-9, 1e-4])
def test_extreme_parameters_match_the_reference_to_its_rounding(bins: int, offset: float) -> None:
    params = extreme_params(64, 5, bins)
    v = inputs(params, BOUND, offset)
    v[0, :2] = torch.tensor([-BOUND, BOUND], dtype=torch.float64)
    assert_matches_reference(v, params, BOUND, envelope=True)


@pytest.mark.parametrize("shape", [(7,), (3, 4, 5), (1, 1), ()])
def test_any_shape_and_the_identity_start(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    v = torch.randn(shape, dtype=torch.float64) * 2
    params = torch.randn(*shape, 3 * 8 - 1, dtype=torch.float64)
    assert_matches_reference(v, params, BOUND)
    out, ladj = rational_quadratic(v.requires_grad_(), torch.zeros_like(params).requires_grad_(), BOUND)
    torch.testing.assert_close(out, v.detach())
    torch.testing.assert_close(ladj, torch.zeros_like(ladj))


def test_scoring_without_a_graph_matches_the_reference_also_in_chunks() -> None:
    rows = rqs_autograd.CHUNK_POINTS // 4 * 2 + 3  # three chunks of 4 columns, the last one short
    params = moderate_params(rows, 4, 8)
    v = inputs(params, BOUND, 1e-9)
    with torch.no_grad():
        new, ref = rational_quadratic(v, params, BOUND), _rational_quadratic_autograd(v, params, BOUND)
    for a, b in zip(new, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    empty = rational_quadratic(v[:0], params[:0], BOUND)
    assert empty[0].shape == (0, 4) and empty[1].shape == (0, 4)


@pytest.mark.parametrize("bins", [2, 3, 8, 16])
def test_inverse_without_a_graph_matches_the_reference_and_round_trips(bins: int) -> None:
    params = moderate_params(64, 5, bins)
    with torch.no_grad():
        y, _ = _rational_quadratic_autograd(inputs(params, BOUND, 1e-9), params, BOUND)
        y[0, :2] = torch.tensor([-BOUND, BOUND], dtype=torch.float64)
        new, ref = rational_quadratic(y, params, BOUND, True), _rational_quadratic_autograd(y, params, BOUND, True)
        for a, b in zip(new, ref, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
        back, ladj = rational_quadratic(new[0], params, BOUND)
    torch.testing.assert_close(back, y, rtol=1e-12, atol=1e-12)
    # Not at the bounds exactly: there the reference's knots (k * MIN_BIN rounded in float32) end ~1e-9 past
    # the bound, so the inverse of the bound lands just inside the spline and its forward just outside.
    interior = y.abs() < BOUND
    torch.testing.assert_close(ladj[interior], -new[1][interior], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("inverse", [False, True])
def test_one_long_variable_is_chunked_by_columns(inverse: bool) -> None:
    # MADE.solve inverts one variable at a time: v of shape (n,), params (n, 3 * bins - 1).
    n = rqs_autograd.CHUNK_POINTS * 2 + 5
    params = moderate_params(n, 1, 8).squeeze(1)
    v = inputs(params.unsqueeze(1), BOUND, 1e-9).squeeze(1)
    with torch.no_grad():
        new = rational_quadratic(v, params, BOUND, inverse)
        ref = _rational_quadratic_autograd(v, params, BOUND, inverse)
    for a, b in zip(new, ref, strict=True):
        assert a.shape == (n,)
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_gradient_of_one_output_and_of_one_input() -> None:
    params = moderate_params(16, 3, 8)
    v = inputs(params, BOUND, 1e-4)
    for pick in (0, 1):  # only out, only ladj: the other output's gradient is zero, not missing
        for wrt in ("v", "params"):
            a, b = v.clone().requires_grad_(wrt == "v"), params.clone().requires_grad_(wrt == "params")
            target = a if wrt == "v" else b
            new = torch.autograd.grad(rational_quadratic(a, b, BOUND)[pick].sum(), target)[0]
            ref = torch.autograd.grad(_rational_quadratic_autograd(a, b, BOUND)[pick].sum(), target)[0]
            torch.testing.assert_close(new, ref, rtol=1e-10, atol=1e-10)


def test_float32_is_as_accurate_as_the_reference_in_float32() -> None:
    params = extreme_params(256, 8, 8)
    v = inputs(params, BOUND, 1e-3)
    truth = values_and_gradients(_rational_quadratic_autograd, v, params, BOUND)
    new = values_and_gradients(rational_quadratic, v.float(), params.float(), BOUND)
    ref = values_and_gradients(_rational_quadratic_autograd, v.float(), params.float(), BOUND)
    for name, n, r, t in zip(["out", "ladj", "d/dv", "d/dparams"], new, ref, truth, strict=True):
        assert n.dtype == torch.float32 and torch.isfinite(n).all(), name
        scale = 1 + t.abs().max().item()
        error_new, error_ref = (n.double() - t).abs().max().item(), (r.double() - t).abs().max().item()
        assert error_new <= max(4 * error_ref, 1e-6 * scale), (name, error_new, error_ref)


def test_the_layer_trains_with_the_same_gradients_as_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    layer = build_layer("spline_autoregressive", 4, 1, {"bins": 8, "hidden": [16]}).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.5 * torch.randn_like(p))
    x = torch.randn(32, 4, dtype=torch.float64) * 2

    def gradients() -> list[Tensor]:
        layer.zero_grad()
        z, ladj = layer(x)
        (0.5 * (z * z).sum() - ladj.sum()).backward()
        return [p.grad.clone() for p in layer.parameters() if p.grad is not None]

    new = gradients()
    monkeypatch.setattr(spline, "rational_quadratic", _rational_quadratic_autograd)
    ref = gradients()
    assert len(new) == len(ref) > 0 and any(g.abs().max() > 0 for g in ref)
    for a, b in zip(new, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- the checks can fail


def _off_by_a_percent(original: Callable) -> Callable:
    def broken(go: Tensor, gl: Tensor, s: object) -> tuple[Tensor, ...]:
        g_xi_w, g_slope_w, g_derivative = original(go, gl, s)
        return g_xi_w, g_slope_w, g_derivative * torch.tensor([[1.01], [1.0]], dtype=g_derivative.dtype)

    return broken


def _tails_leak(original: Callable) -> Callable:
    def broken(v: Tensor, pm: Tensor, bound: float, bins: int) -> tuple[Tensor, Tensor, object]:
        out, ladj, saved = original(v, pm, bound, bins)
        return out, ladj, saved._replace(inside=torch.ones_like(saved.inside))  # type: ignore[attr-defined]

    return broken


@pytest.mark.parametrize(("name", "sabotage"), [("_local_gradients", _off_by_a_percent), ("_evaluate", _tails_leak)])
def test_a_wrong_backward_is_caught(monkeypatch: pytest.MonkeyPatch, name: str, sabotage: Callable) -> None:
    params = moderate_params(4, 3, 8)
    v = inputs(params, BOUND, offset=1e-4)
    v, params = v.requires_grad_(), params.detach().requires_grad_()
    f = lambda a, b: RationalQuadraticForward.apply(a, b, BOUND)  # noqa: E731
    assert torch.autograd.gradcheck(f, (v, params))  # the same checks pass on the real backward
    assert_matches_reference(v, params, BOUND)
    monkeypatch.setattr(rqs_autograd, name, sabotage(getattr(rqs_autograd, name)))
    assert not torch.autograd.gradcheck(f, (v, params), raise_exception=False)
    with pytest.raises(AssertionError):
        assert_matches_reference(v, params, BOUND)


@pytest.mark.parametrize("columns", [1, 15, 16, 17, 300])
def test_softmax_over_bins_is_torchs_softmax_over_the_bins(columns: int) -> None:
    logits = torch.randn(33, 2, 8, columns, dtype=torch.float64) * 4
    soft = _softmax_over_bins(logits)
    assert soft.is_contiguous() and soft.shape == logits.shape
    torch.testing.assert_close(soft, torch.softmax(logits, dim=2), rtol=1e-14, atol=1e-15)
