"""The discrete part of a row (flowcli/discrete.py) and the flow conditioned on it (model.Flow).

log p(row) = log P(d) + log p(c | d): P(d) sums to 1 exactly over every combination of codes, its
latent mapping round-trips and samples with the model's probabilities, fitting it learns which
combinations never occur, every conditional layer is a bijection with the right log|det| for each
context, and the continuous density given each discrete value integrates to that value's probability.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch

from flowcli.config import parse_config
from flowcli.discrete import DiscreteModel, fit_discrete
from flowcli.fitting import fit
from flowcli.layers import LAYERS, build_layer

LEVELS = [3, 2, 4]


def perturbed_model(levels: list[int] = LEVELS) -> DiscreteModel:
    torch.manual_seed(0)
    model = DiscreteModel(levels).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def all_codes(levels: list[int]) -> torch.Tensor:
    return torch.tensor(list(itertools.product(*[range(k) for k in levels])))


def test_probabilities_of_every_combination_sum_to_one_exactly() -> None:
    model = perturbed_model()
    p = model.log_prob(all_codes(LEVELS)).exp().detach()
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-12)
    assert float(p.std()) > 1e-3, "perturbed weights should make the combinations unequal"


def test_a_head_depends_only_on_the_features_before_it() -> None:
    model = perturbed_model()
    codes = all_codes(LEVELS)
    logits = model.logits(model.one_hot(codes))
    first = logits[:, :3]
    assert torch.allclose(first, first[:1].expand_as(first)), "the first feature's head sees no input"
    second = logits[:, 3:5]
    same_first = codes[:, 0] == 1
    assert torch.allclose(second[same_first], second[same_first][:1].expand(int(same_first.sum()), 2))
    assert not torch.allclose(second[codes[:, 0] == 0][0], second[codes[:, 0] == 2][0])


def test_latent_round_trip_and_sampled_shares_follow_the_probabilities() -> None:
    model = perturbed_model()
    codes = all_codes(LEVELS)
    assert torch.equal(model.decode(model.encode(codes)), codes)
    generator = torch.Generator().manual_seed(0)
    n = 200_000
    drawn = model.decode(torch.randn(n, len(LEVELS), generator=generator, dtype=torch.float64))
    index = {tuple(c.tolist()): i for i, c in enumerate(codes)}
    counts = np.bincount([index[tuple(c)] for c in drawn.tolist()], minlength=len(codes)) / n
    expected = model.log_prob(codes).exp().detach().numpy()
    assert np.all(np.abs(counts - expected) <= 4 * np.sqrt(expected * (1 - expected) / n) + 1e-4)


def test_fitting_learns_which_combinations_never_occur() -> None:
    """A city is always in its own country: the fit keeps the pairs the data never show under 0.5%."""
    rng = np.random.default_rng(0)
    n = 5000
    city = rng.choice(6, size=n, p=[0.3, 0.2, 0.2, 0.15, 0.1, 0.05])
    country = city // 2  # cities 0, 1 in country 0; 2, 3 in 1; 4, 5 in 2
    weekday = rng.integers(0, 7, size=n)  # independent of both
    codes = torch.tensor(np.column_stack([country, city, weekday]))
    model = DiscreteModel([3, 6, 7])
    model.initialize(codes[:4000])
    report = fit_discrete(model, codes[:4000], codes[4000:], torch.Generator().manual_seed(0))
    assert report["val_nll"] < report["start_val_nll"] - 0.5
    drawn = model.decode(torch.randn(20000, 3, generator=torch.Generator().manual_seed(1))).numpy()
    assert np.mean(drawn[:, 1] // 2 != drawn[:, 0]) < 0.005
    for k in range(6):
        assert abs(np.mean(drawn[:, 1] == k) - np.mean(city[:4000] == k)) < 0.01  # the training share


def test_a_rare_label_learns_its_combinations_although_the_validation_nll_has_flattened() -> None:
    """A 3% species lives on one island of three (beside two independent flags): its conditional is learnt
    after the validation NLL, which the common rows dominate, has flattened, so early stopping waits
    ``MIN_STEPS``. P(another island | that species), mean of four fits: 1.8% with patience alone, 0.7%."""
    rng = np.random.default_rng(0)
    n = 5000
    species = rng.choice(3, size=n, p=[0.6, 0.37, 0.03])
    island = np.where(species == 0, rng.integers(0, 3, n), np.where(species == 1, 0, 1))
    codes = torch.tensor(np.column_stack([species, island, rng.integers(0, 2, (n, 2))]))
    elsewhere = []
    for seed in range(4):
        torch.manual_seed(seed)  # the network's initial weights
        model = DiscreteModel([3, 3, 2, 2])
        model.initialize(codes[:4500])
        fit_discrete(model, codes[:4500], codes[4500:], torch.Generator().manual_seed(0))
        with torch.no_grad():
            island_head = model.logits(model.one_hot(torch.tensor([[2, 0, 0, 0]])))[0, 3:6]
        elsewhere.append(1 - float(torch.softmax(island_head, 0)[1]))
    assert np.mean(elsewhere) < 0.01, elsewhere


def test_an_all_categorical_table_sums_to_one_exactly() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    a = rng.choice(["x", "y", "z"], size=n, p=[0.5, 0.3, 0.2])
    b = np.where(rng.random(n) < np.where(a == "x", 0.8, 0.3), "on", "off")
    frame = pd.DataFrame({"a": a, "b": b})
    model = fit(frame, parse_config({"training": {"epochs": 2}}), device=torch.device("cpu"), seed=0)
    cells = pd.DataFrame([(x, y) for x in "xyz" for y in ("on", "off")], columns=["a", "b"])
    p = np.exp(model.log_prob(cells))
    assert p.sum() == pytest.approx(1.0, abs=1e-9)
    empirical = frame.value_counts(normalize=True).reindex(list(zip(cells["a"], cells["b"], strict=True)))
    np.testing.assert_allclose(p, empirical.to_numpy(), atol=0.02)


CONDITIONAL = sorted(name for name, cls in LAYERS.items() if cls.conditional)


def test_the_conditional_layers_are_the_autoregressive_and_coupling_families() -> None:
    assert {"maf", "iaf", "affine_coupling", "spline_autoregressive", "umnn", "sos"} <= set(CONDITIONAL)


def make_conditional(name: str, dim: int, context: int) -> torch.nn.Module:
    torch.manual_seed(0)
    layer = build_layer(name, dim, 1, {}, context).double()
    layer.initialize(torch.randn(64, dim, dtype=torch.float64))
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return layer.eval()


@pytest.mark.parametrize("dim", [1, 3])
@pytest.mark.parametrize("name", CONDITIONAL)
def test_conditional_layers_invert_and_log_det_for_each_context(name: str, dim: int) -> None:
    layer = make_conditional(name, dim, context=4)
    torch.manual_seed(1)
    x = torch.randn(5, dim, dtype=torch.float64)
    contexts = torch.eye(4, dtype=torch.float64)[torch.tensor([0, 1, 2, 3, 1])]
    with torch.no_grad():
        z, ladj = layer(x, contexts)
        back, ladj_inv = layer.inverse(z, contexts)
        other, _ = layer(x, contexts.roll(1, 0))
    tol = getattr(layer, "inverse_tolerance", 1e-8)
    torch.testing.assert_close(back, x, atol=tol, rtol=tol)
    torch.testing.assert_close(ladj + ladj_inv, torch.zeros_like(ladj), atol=max(tol, 1e-8), rtol=0)
    assert not torch.allclose(z, other), "the context should change the map"
    for i in range(len(x)):
        c = contexts[i : i + 1]
        jac = torch.autograd.functional.jacobian(lambda row, c=c: layer(row[None], c)[0][0], x[i])
        torch.testing.assert_close(ladj[i], torch.linalg.slogdet(jac)[1], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("preset", ["default", "maf"])
def test_continuous_density_given_each_category_integrates_to_its_probability(preset: str) -> None:
    """p(c | d) P(d) integrated over c on a grid, in the units of the data, is P(d) for each d."""
    rng = np.random.default_rng(0)
    n = 2000
    group = rng.choice(["a", "b", "c"], size=n, p=[0.6, 0.3, 0.1])
    value = np.where(
        group == "a", rng.normal(0, 1, n), np.where(group == "b", rng.normal(5, 0.5, n), rng.gamma(2, 2, n))
    )
    frame = pd.DataFrame({"group": group, "value": value * 10 + 100})
    model = fit(frame, preset, epochs=5, seed=0)
    grid = np.linspace(-400, 600, 40001)
    step = grid[1] - grid[0]
    discrete = model.flow.discrete
    assert discrete is not None
    for code, (label, share) in enumerate((("a", 0.6), ("b", 0.3), ("c", 0.1))):
        rows = pd.DataFrame({"group": label, "value": grid})
        mass = np.exp(model.log_prob(rows)).sum() * step
        probability = float(discrete.log_prob(torch.tensor([[code]])).exp())
        assert mass == pytest.approx(probability, rel=2e-3)
        assert probability == pytest.approx(share, abs=0.03)
