"""Family-specific checks that the registry-wide loops in test_layers.py cannot express."""

from __future__ import annotations

import pytest
import torch

from flowcli.layers import build_layer
from flowcli.layers.spline import rational_quadratic

SPLINES = ["spline_coupling", "spline_autoregressive"]


def perturbed(name: str, dim: int, options: dict | None = None) -> torch.nn.Module:
    torch.manual_seed(0)
    layer = build_layer(name, dim, 0, options or {}).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return layer


@pytest.mark.parametrize("name", SPLINES)
def test_spline_is_finite_with_finite_gradients_far_outside_and_at_the_bound(name: str) -> None:
    layer = perturbed(name, 3, {"bound": 5.0})
    values = [-1e3, -5.0, -5.0 + 1e-12, 0.3, 5.0 - 1e-12, 5.0, 1e3]
    x = torch.tensor([[a, b, c] for a in values for b in values[:3] for c in values[-3:]], dtype=torch.float64)
    x.requires_grad_(True)
    z, ladj = layer(x)
    assert torch.isfinite(z).all() and torch.isfinite(ladj).all()
    (z.sum() + ladj.sum()).backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters() if p.grad is not None)
    # Identity tails: far outside the bound every coordinate passes through unchanged.
    far = x.detach().abs() > 5
    assert torch.equal(z.detach()[far], x.detach()[far])
    # The inverse is finite with finite gradients too, and returns the inputs.
    zz = z.detach().clone().requires_grad_(True)
    x_back, ladj_inv = layer.inverse(zz)
    (x_back.sum() + ladj_inv.sum()).backward()
    assert torch.isfinite(zz.grad).all()
    torch.testing.assert_close(x_back.detach(), x.detach(), atol=1e-8, rtol=1e-8)


def test_spline_is_continuous_at_the_bound_and_starts_at_the_identity() -> None:
    params = torch.randn(4, 2, 3 * 8 - 1, dtype=torch.float64)
    edge = torch.tensor([-2.0, 2.0], dtype=torch.float64)
    eps = 1e-9
    inner, _ = rational_quadratic((edge - edge.sign() * eps).expand(4, 2), params, 2.0)
    outer, _ = rational_quadratic((edge + edge.sign() * eps).expand(4, 2), params, 2.0)
    torch.testing.assert_close(inner, outer, atol=1e-8, rtol=0)
    x = torch.linspace(-3, 3, 13, dtype=torch.float64)
    y, ladj = rational_quadratic(x, torch.zeros(13, 23, dtype=torch.float64), 2.0)
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(ladj, torch.zeros_like(ladj))


def test_spline_inverse_has_no_nan_from_rounding_in_float32() -> None:
    torch.manual_seed(3)
    params = 3 * torch.randn(20000, 23)
    y = torch.empty(20000).uniform_(-5, 5)
    x, ladj = rational_quadratic(y, params, 5.0, inverse=True)
    assert torch.isfinite(x).all() and torch.isfinite(ladj).all()
    back, _ = rational_quadratic(x, params, 5.0)
    assert (back - y).abs().max() < 1e-3


def test_planar_inverse_meets_its_tolerance_near_the_invertibility_limit() -> None:
    torch.manual_seed(0)
    layer = build_layer("planar", 3, 0, {}).double()
    with torch.no_grad():
        layer.w.copy_(torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64))
        layer.u.copy_(-30 * layer.w)  # w·u very negative: w·û = m(w·u) is just above -1
    with torch.no_grad():
        _, w_u_hat = layer._u_hat()
    assert -1 < w_u_hat.item() < -0.99
    x = torch.randn(500, 3, dtype=torch.float64) * 3
    z, ladj = layer(x)
    x_back, ladj_inv = layer.inverse(z)
    assert (x_back - x).abs().max() < layer.inverse_tolerance
    assert (ladj + ladj_inv).abs().max() < layer.inverse_tolerance


def test_radial_inverse_at_and_near_the_centre() -> None:
    layer = perturbed("radial", 4)
    x = layer.center.detach()[None] + torch.tensor([[0.0], [1e-12], [1e-3], [50.0]], dtype=torch.float64)
    z, ladj = layer(x)
    x_back, ladj_inv = layer.inverse(z)
    assert torch.isfinite(ladj).all()
    torch.testing.assert_close(x_back, x, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(ladj + ladj_inv, torch.zeros_like(ladj), atol=1e-10, rtol=0)


def test_iaf_is_maf_with_its_directions_swapped() -> None:
    iaf = perturbed("iaf", 4)
    maf = build_layer("maf", 4, 0, {}).double()
    maf.load_state_dict(iaf.state_dict())
    x = torch.randn(8, 4, dtype=torch.float64)
    for (a, la), (b, lb) in [(iaf(x), maf.inverse(x)), (iaf.inverse(x), maf(x))]:
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(la, lb)
