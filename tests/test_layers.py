"""Every registered layer, in float64: inverse round trip, log|det| against autograd, both directions.

Looped over the registry, so a new layer family is tested here without writing a new test.
Parameters are perturbed away from the identity-like initialization first: at the identity every
log|det| is zero and these checks could not fail.
"""

from __future__ import annotations

import pytest
import torch

from flowcli.layers import LAYERS, build_layer

DIMS = [1, 2, 5]


def make_layer(name: str, dim: int, index: int = 0) -> torch.nn.Module:
    torch.manual_seed(0)
    layer = build_layer(name, dim, index, {}).double()
    x = torch.randn(64, dim, dtype=torch.float64) * 2 + 1
    layer.initialize(x)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return layer.eval()


def sample_inputs(dim: int, n: int = 16) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(n, dim, dtype=torch.float64) * 1.5


@pytest.mark.parametrize("index", [0, 1])
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_inverse_round_trip(name: str, dim: int, index: int) -> None:
    layer = make_layer(name, dim, index)
    x = sample_inputs(dim)
    with torch.no_grad():
        z, ladj_fwd = layer(x)
        x_back, ladj_inv = layer.inverse(z)
    assert z.shape == x.shape and ladj_fwd.shape == (x.shape[0],)
    tol = getattr(layer, "inverse_tolerance", 1e-8)
    torch.testing.assert_close(x_back, x, atol=tol, rtol=tol)
    torch.testing.assert_close(ladj_fwd + ladj_inv, torch.zeros_like(ladj_fwd), atol=max(tol, 1e-8), rtol=0)
    if any(True for _ in layer.parameters()):
        assert not torch.allclose(z, x), "a perturbed layer should not be the identity"


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_log_det_matches_autograd_jacobian(name: str, dim: int) -> None:
    layer = make_layer(name, dim, index=1)
    x = sample_inputs(dim, n=6)
    with torch.no_grad():
        _, ladj = layer(x)
        z, _ = layer(x)
        _, ladj_inv = layer.inverse(z)
    for i in range(x.shape[0]):
        jac = torch.autograd.functional.jacobian(lambda row: layer(row[None])[0][0], x[i])
        sign, logabsdet = torch.linalg.slogdet(jac)
        assert sign != 0
        torch.testing.assert_close(ladj[i], logabsdet, atol=1e-6, rtol=1e-6)
        jac_inv = torch.autograd.functional.jacobian(lambda row: layer.inverse(row[None])[0][0], z[i])
        torch.testing.assert_close(ladj_inv[i], torch.linalg.slogdet(jac_inv)[1], atol=1e-6, rtol=1e-6)


# Autoregressive layers (a MADE conditioner) whose hidden layers are narrower than the data: MADE.solve then
# solves the variables past the hidden units' last degree together, in one step (a wide table's sampling).
MADE_LAYERS = [name for name in sorted(LAYERS) if hasattr(build_layer(name, 2, 0, {}), "made")]


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("name", MADE_LAYERS)
def test_narrow_made_inverse_solves_groups_exactly(name: str, grad: bool) -> None:
    dim = 9
    torch.manual_seed(0)
    layer = build_layer(name, dim, 1, {"hidden": [3, 3]}).double()
    layer.initialize(torch.randn(64, dim, dtype=torch.float64))
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    layer.eval()
    groups = layer.made._groups()
    assert [k for k, _ in groups] == sorted(k for k, _ in groups) and groups[-1][1] == dim
    assert any(stop - k > 1 for k, stop in groups), "the test must exercise a step that solves several variables"
    x = sample_inputs(dim)
    with torch.set_grad_enabled(grad):
        z, ladj_fwd = layer(x)
        x_back, ladj_inv = layer.inverse(z.detach())
    tol = getattr(layer, "inverse_tolerance", 1e-8)
    torch.testing.assert_close(x_back.detach(), x, atol=tol, rtol=tol)
    torch.testing.assert_close((ladj_fwd + ladj_inv).detach(), torch.zeros_like(ladj_fwd), atol=max(tol, 1e-8), rtol=0)
    jac_inv = torch.autograd.functional.jacobian(lambda row: layer.inverse(row[None])[0][0], z[0].detach())
    torch.testing.assert_close(ladj_inv[0].detach(), torch.linalg.slogdet(jac_inv)[1], atol=1e-6, rtol=1e-6)
