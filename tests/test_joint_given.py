"""Sampling given discrete values from the joint model itself (``joint_given.py``): the labels drawn follow
the discrete part's exact conditional probabilities, the numbers follow the flow given the drawn labels,
and rows with a given number (or too many combinations to enumerate) go to the conditional network."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch

import flowcli
from flowcli import joint_given
from flowcli.errors import DataError
from flowcli.model import Model

LEVELS = {"a": ["p", "q", "r", "s"], "b": ["u", "v", "w"], "c": ["x", "y"]}
NO_NETWORK = {"training": {"epochs": 2, "conditional": False}}


def chain_table(n: int, seed: int = 0) -> pd.DataFrame:
    """Three labels in a chain a -> b -> c, with combinations that never occur (a = s only with b = w)."""
    rng = np.random.default_rng(seed)
    a = rng.choice(4, n, p=[0.4, 0.3, 0.2, 0.1])
    b = np.where(a == 3, 2, (a + (rng.random(n) < 0.3)) % 3)
    c = (rng.random(n) < np.where(b == 2, 0.9, 0.2)).astype(int)
    return pd.DataFrame({k: np.array(v)[codes] for (k, v), codes in zip(LEVELS.items(), (a, b, c), strict=True)})


@pytest.fixture(scope="module")
def chain_model() -> Model:
    return flowcli.fit(chain_table(4000), NO_NETWORK, seed=0, threads=1)


def exact_conditional(model: Model, given: dict[str, str]) -> pd.Series:
    """P(other labels | given) by enumerating every row of the joint's discrete part: the reference."""
    rows = pd.DataFrame(list(itertools.product(*LEVELS.values())), columns=list(LEVELS))
    rows = rows[np.logical_and.reduce([rows[k] == v for k, v in given.items()])]
    p = np.exp(model.log_prob(rows))
    others = [k for k in LEVELS if k not in given]
    return pd.Series(p / p.sum(), index=pd.MultiIndex.from_frame(rows[others]))


@pytest.mark.parametrize("given", [{"c": "x"}, {"b": "w"}, {"a": "q"}, {"a": "s", "c": "y"}])
def test_labels_drawn_given_labels_follow_the_joint_exactly(chain_model: Model, given: dict[str, str]) -> None:
    """Given the last label (every label before it enumerated), a middle one (enumerated and drawn head by
    head), the first one (drawn head by head) and two: the shares of the others are the joint's conditional."""
    n = 40_000
    drawn = chain_model.sample(n, given=given, seed=1)
    assert len(drawn) == n and all((drawn[k] == v).all() for k, v in given.items())
    expected = exact_conditional(chain_model, given)
    others = list(expected.index.names)
    shares = drawn.value_counts(subset=others, normalize=True).reindex(expected.index, fill_value=0.0)
    bound = 4 * np.sqrt(expected * (1 - expected) / n) + 1e-3
    assert (np.abs(shares - expected) <= bound).all(), pd.DataFrame({"drawn": shares, "exact": expected})


def test_combinations_that_never_occur_are_not_drawn_given_either_label(chain_model: Model) -> None:
    for given, column, never in [({"a": "s"}, "b", ["u", "v"]), ({"b": "u"}, "a", ["s"])]:
        drawn = chain_model.sample(20_000, given=given, seed=2)
        assert drawn[column].isin(never).mean() < 0.005, (given, drawn[column].value_counts())


def test_the_same_seed_draws_the_same_rows(chain_model: Model) -> None:
    given = pd.DataFrame({"c": ["x", "y", None], "b": [None, "v", None]})
    first = chain_model.sample(50, given=given, seed=7)
    assert first.equals(chain_model.sample(50, given=given, seed=7))
    assert not first.equals(chain_model.sample(50, given=given, seed=8))


def species_table(n: int, seed: int = 0) -> pd.DataFrame:
    """Mass depends on the species; hours are exactly 0 in 40% of rows (an atom); 5% of masses missing."""
    rng = np.random.default_rng(seed)
    species = rng.choice(["Adelie", "Gentoo", "Chinstrap"], n, p=[0.6, 0.35, 0.05])
    mass = np.where(species == "Gentoo", 5000.0, 3700.0) + rng.normal(0, 300, n)
    busy = rng.random(n) < np.where(species == "Gentoo", 0.9, 0.4)
    hours = np.where(busy, np.round(rng.gamma(4, 8, n), 1), 0.0)
    frame = pd.DataFrame({"species": species, "mass": mass.round(1), "hours": hours})
    frame.loc[rng.random(n) < 0.05, "mass"] = np.nan
    return frame


@pytest.fixture(scope="module")
def species_model() -> Model:
    config = {"layers": [{"type": "maf", "hidden": [32]}], "training": {"epochs": 30, "conditional": False}}
    return flowcli.fit(species_table(4000), config, seed=0, threads=1)


def test_numbers_given_a_label_come_from_the_flow_given_that_label(species_model: Model) -> None:
    """Given a label, the numbers are the joint flow's p(c | d): the same distribution as the joint samples
    that hold that label, and complete (a missing state is never drawn)."""
    joint = species_model.sample(60_000, seed=3).dropna()
    for species in ["Gentoo", "Adelie"]:
        drawn = species_model.sample(20_000, given={"species": species}, seed=4)
        assert not drawn.isna().any().any()
        held = joint[joint["species"] == species]
        for column in ["mass", "hours"]:
            assert abs(drawn[column].mean() - held[column].mean()) < 0.05 * held[column].std(), (species, column)
        assert abs((drawn["hours"] == 0).mean() - (held["hours"] == 0).mean()) < 0.02
    assert species_model.sample(2000, given={"species": "Gentoo"}, seed=5)["mass"].mean() > 4700


def test_a_given_atom_is_a_discrete_condition(species_model: Model) -> None:
    """hours = 0 is an atom: the joint answers it, and the species follow P(species | hours = 0)."""
    drawn = species_model.sample(20_000, given={"hours": 0.0}, seed=6)
    assert (drawn["hours"] == 0).all()
    rows = species_table(4000)
    expected = rows.loc[rows["hours"] == 0, "species"].value_counts(normalize=True)
    shares = drawn["species"].value_counts(normalize=True).reindex(expected.index)
    np.testing.assert_allclose(shares, expected, atol=0.03)


def test_a_given_number_needs_the_network(species_model: Model) -> None:
    with pytest.raises(DataError, match="training.conditional: false"):
        species_model.sample(5, given={"species": "Gentoo", "mass": 4900.0})


def test_multiple_imputation_of_label_only_rows_needs_no_network(species_model: Model) -> None:
    """`impute --draws` of rows whose known cells are all labels (or atoms) is the joint's; conditional means,
    and rows with a known number, need the network, which this model was fitted without."""
    rows = pd.DataFrame({"species": ["Gentoo", "Adelie"], "hours": [np.nan, 0.0]})
    drawn = species_model.impute(rows, draws=3, seed=0)
    assert len(drawn) == 6 and not drawn[["species", "mass", "hours"]].isna().any().any()
    assert (drawn["hours"].to_numpy()[3:] == 0).all()
    with pytest.raises(DataError, match="training.conditional: false"):
        species_model.impute(rows)
    with pytest.raises(DataError, match="impute --draws of a row with a known number"):
        species_model.impute(pd.DataFrame({"species": ["Gentoo"], "mass": [4900.0], "hours": [np.nan]}), draws=2)


def test_more_combinations_than_the_limit_go_to_the_network(
    chain_model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given c (the last label), a and b are enumerated: 12 combinations. Above the limit the row is the
    network's question (here unfitted, so an error); below it, the joint's."""
    monkeypatch.setattr(joint_given, "MAX_COMBINATIONS", 11)
    with pytest.raises(DataError, match="training.conditional: false"):
        chain_model.sample(5, given={"c": "x"})
    assert (chain_model.sample(5, given={"a": "p"})["a"] == "p").all()  # nothing before a to enumerate
    monkeypatch.setattr(joint_given, "MAX_COMBINATIONS", 12)
    assert (chain_model.sample(5, given={"c": "x"})["c"] == "x").all()
    # The limit is per distinct given row: other rows in the batch never push one over it.
    assert (
        chain_model.sample(3, given=pd.DataFrame({"c": ["x", "y", "x"]}))["c"].tolist()
        == ["x"] * 3 + ["y"] * 3 + ["x"] * 3
    )


def test_which_rows_the_joint_answers(species_model: Model) -> None:
    frame = pd.DataFrame({"species": ["Gentoo", None, "Adelie", None], "hours": [None, 0.0, 12.5, None]})
    from flowcli.questions import encode_cells

    cells = encode_cells(species_model, frame)
    answerable = joint_given.answerable_rows(species_model, cells.x, cells.known)
    assert answerable.tolist() == [True, True, False, True]


def test_a_label_given_on_the_device_of_the_model(chain_model: Model) -> None:
    """The codes are drawn on the model's device with the caller's generator (CPU here)."""
    generator = torch.Generator(device=chain_model.device).manual_seed(0)
    x = np.full((3, 3), np.nan)
    x[:, 2] = 0.5
    observed = np.zeros((3, 3), dtype=bool)
    observed[:, 2] = True
    features, answered = joint_given.draw(chain_model, x, observed, generator)
    assert answered.all() and (features[:, 2] == 0.5).all() and np.isfinite(features).all()


def test_labels_scored_alone_are_the_joints_exact_marginals(chain_model: Model) -> None:
    """A file with some of the label columns: log P(its labels), the others summed out, exactly as the sum of
    the full rows' probabilities; with --target, log P(targets | the row's other labels). No network."""
    rows = pd.DataFrame(list(itertools.product(*LEVELS.values())), columns=list(LEVELS))
    p = np.exp(chain_model.log_prob(rows))
    for columns in (["c"], ["b"], ["a", "c"], ["b", "c"]):
        frame = rows[columns].drop_duplicates().reset_index(drop=True)
        expected = np.log(
            [p[np.logical_and.reduce([rows[k] == v for k, v in r.items()])].sum() for _, r in frame.iterrows()]
        )
        np.testing.assert_allclose(chain_model.log_prob(frame), expected, atol=1e-9)
    frame = rows[["a", "c"]].drop_duplicates().reset_index(drop=True)
    joint = np.array([p[(rows["a"] == a) & (rows["c"] == c)].sum() for a, c in frame.itertuples(index=False)])
    of_c = np.array([p[rows["c"] == c].sum() for c in frame["c"]])
    np.testing.assert_allclose(chain_model.log_prob(frame, target=["a"]), np.log(joint / of_c), atol=1e-9)
    by_c = pd.Series(np.exp(chain_model.log_prob(frame, target=["a"]))).groupby(frame["c"]).sum()
    np.testing.assert_allclose(by_c, 1.0, atol=1e-9)  # P(a | c) sums to 1 over a


def test_an_atom_scored_alone_is_its_probability(species_model: Model) -> None:
    frame = pd.DataFrame({"hours": [0.0], "species": ["Gentoo"]})
    p_atom = np.exp(species_model.log_prob(frame[["hours"]]))[0]
    p_given = np.exp(species_model.log_prob(frame, target=["hours"]))[0]
    joint = species_model.sample(100_000, seed=9)
    assert abs(p_atom - (joint["hours"] == 0).mean()) < 0.01
    assert abs(p_given - (joint.loc[joint["species"] == "Gentoo", "hours"] == 0).mean()) < 0.015
    # A number that is not an atom is a density: the network's question (unfitted here: an error).
    with pytest.raises(DataError, match="training.conditional: false"):
        species_model.log_prob(pd.DataFrame({"hours": [12.5]}))


def test_scores_of_a_label_with_missing_cells_are_among_its_values() -> None:
    """c is missing in 30% of the rows: a score of c is its probability among its labels, "missing" not one
    of them (as the network scores it and as rows are drawn given labels), so the labels' scores sum to 1
    and match the shares drawn given the same condition."""
    frame = chain_table(4000)
    frame.loc[np.random.default_rng(1).random(len(frame)) < 0.3, "c"] = None
    model = flowcli.fit(frame, NO_NETWORK, seed=0, threads=1)
    rows = pd.DataFrame(list(itertools.product(LEVELS["b"], LEVELS["c"])), columns=["b", "c"])
    given_b = pd.Series(np.exp(model.log_prob(rows, target=["c"]))).groupby(rows["b"]).sum()
    np.testing.assert_allclose(given_b, 1.0, atol=1e-9)
    np.testing.assert_allclose(np.exp(model.log_prob(rows[["c"]].drop_duplicates())).sum(), 1.0, atol=1e-9)
    drawn = model.sample(40_000, given={"b": "w"}, seed=3)["c"].value_counts(normalize=True)
    scored = np.exp(model.log_prob(rows[rows["b"] == "w"], target=["c"]))
    np.testing.assert_allclose(scored, drawn.reindex(rows.loc[rows["b"] == "w", "c"]).to_numpy(), atol=0.01)
