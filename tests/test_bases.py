"""Every registered base, looped over the registry: normalized, sampled from its own density, finite.

Learnable parameters are perturbed first, so the checks do not only hold at the initialization.
"""

from __future__ import annotations

import math

import pytest
import torch

from flowcli.bases import BASES, SigmoidBridge, build_base


def make_base(name: str, dim: int) -> torch.nn.Module:
    torch.manual_seed(0)
    base = build_base(name, dim, {}).double()
    with torch.no_grad():
        for p in base.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return base


def support(base: torch.nn.Module) -> tuple[float, float]:
    """An interval holding (nearly) all the mass of every coordinate."""
    return (0.0, 1.0) if base.bridge() is not None else (-60.0, 60.0)


def grid(lo: float, hi: float, points: int, dim: int) -> tuple[torch.Tensor, float]:
    """Cell midpoints of a regular grid on [lo, hi]^dim and the volume of one cell."""
    step = (hi - lo) / points
    axis = torch.linspace(lo + step / 2, hi - step / 2, points, dtype=torch.float64)
    mesh = torch.stack(torch.meshgrid(*[axis] * dim, indexing="ij"), -1).reshape(-1, dim)
    return mesh, step**dim


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("name", sorted(BASES))
def test_base_density_integrates_to_one(name: str, dim: int) -> None:
    base = make_base(name, dim)
    lo, hi = support(base)
    points, cell = grid(lo, hi, 20000 if dim == 1 else 600, dim)
    with torch.no_grad():
        total = base.log_prob(points).exp().sum().item() * cell
    assert abs(total - 1) < 5e-3, total


@pytest.mark.parametrize("name", sorted(BASES))
def test_samples_follow_the_density(name: str) -> None:
    """Box probabilities and E[tanh z] from samples agree with the same quantities integrated on a grid."""
    base = make_base(name, 2)
    lo, hi = support(base)
    points, cell = grid(lo, hi, 600, 2)
    with torch.no_grad():
        mass = base.log_prob(points).exp() * cell
        samples = base.sample(40000, torch.Generator().manual_seed(1))
        assert samples.dtype == torch.float64 and samples.shape == (40000, 2)
        assert torch.isfinite(base.log_prob(samples)).all()
    middle = 0.5 * (lo + hi)
    width = 0.25 * (hi - lo) if base.bridge() is not None else 1.0
    # Box edges fall on grid cell edges, so the grid sums are exact midpoint rules over each box.
    boxes = [(middle - width, middle + width), (middle, math.inf), (-math.inf, middle - width)]
    for a, b in boxes:
        in_grid = ((points >= a) & (points < b)).all(1)
        in_sample = ((samples >= a) & (samples < b)).all(1)
        expected = mass[in_grid].sum().item()
        assert abs(in_sample.double().mean().item() - expected) < 0.015, (a, b, expected)
    expected_tanh = (torch.tanh(points) * mass[:, None]).sum(0)
    torch.testing.assert_close(torch.tanh(samples).mean(0), expected_tanh, atol=0.02, rtol=0)


@pytest.mark.parametrize("name", sorted(BASES))
def test_sampling_is_reproducible_with_a_generator(name: str) -> None:
    base = make_base(name, 3)
    with torch.no_grad():
        a = base.sample(100, torch.Generator().manual_seed(5))
        b = base.sample(100, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_sigmoid_bridge_round_trip_and_log_det() -> None:
    bridge = SigmoidBridge()
    x = torch.tensor([[-800.0, -3.0, 0.0], [0.5, 4.0, 800.0]], dtype=torch.float64)
    z, ladj = bridge(x)
    assert torch.isfinite(ladj).all() and ((z >= 0) & (z <= 1)).all()
    moderate = x[:, 1:2].clone()
    z_moderate, ladj_moderate = bridge(moderate)
    back, ladj_inv = bridge.inverse(z_moderate)
    torch.testing.assert_close(back, moderate)
    torch.testing.assert_close(ladj_inv, -ladj_moderate)
    for row in torch.tensor([[-3.0, 0.2], [1.0, 5.0]], dtype=torch.float64):
        jac = torch.autograd.functional.jacobian(lambda r: bridge(r[None])[0][0], row)
        torch.testing.assert_close(bridge(row[None])[1][0], torch.linalg.slogdet(jac)[1])


def test_base_options_are_validated_like_layer_options() -> None:
    from flowcli.config import parse_config
    from flowcli.errors import ConfigError

    config = parse_config({"base": {"type": "mixture", "components": 3}, "layers": ["actnorm"]})
    assert config.base.options == {"components": 3}
    with pytest.raises(ConfigError, match="base.componets: unknown key.*did you mean 'components'"):
        parse_config({"base": {"type": "mixture", "componets": 3}, "layers": ["actnorm"]})
    with pytest.raises(ConfigError, match="base.df: expected number"):
        parse_config({"base": {"type": "studentt", "df": "many"}, "layers": ["actnorm"]})
    with pytest.raises(ConfigError, match="components: must be an integer >= 1"):
        build_base("mixture", 2, {"components": 0})
