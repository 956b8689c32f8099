"""Conditional questions on one model (``conditional.py``, ``questions.py``): sample given values, score
targets given the rest, marginalise absent columns, impute. CLI tests: test_conditional_cli.py."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import shipped_conditional_fit

import flowcli
from flowcli import conditional
from flowcli.columns import infer_column
from flowcli.conditional import ConditionalNet, Roles, layout_of, log_prob, prepare
from flowcli.errors import DataError
from flowcli.model import Model

pytestmark = pytest.mark.full_conditional_fit

ISLANDS = {"Adelie": ["Biscoe", "Dream", "Torgersen"], "Gentoo": ["Biscoe"], "Chinstrap": ["Dream"]}


def mixed_table(n: int, seed: int = 0) -> pd.DataFrame:
    """Species (one rare) with islands that depend on them, a mass that depends on the species, hours
    that are exactly 0 for 40% of rows, an integer count, and missing cells."""
    rng = np.random.default_rng(seed)
    species = rng.choice(["Adelie", "Gentoo", "Chinstrap"], n, p=[0.6, 0.37, 0.03])
    island = np.array([rng.choice(ISLANDS[s]) for s in species])
    mass = np.where(species == "Gentoo", 5000.0, 3700.0) + rng.normal(0, 300, n)
    hours = np.where(rng.random(n) < 0.4, 0.0, np.round(rng.gamma(4, 8, n), 1))
    count = rng.poisson(3 + (species == "Gentoo") * 4, n)
    frame = pd.DataFrame({"species": species, "island": island, "mass": mass.round(1), "hours": hours, "count": count})
    frame.loc[rng.random(n) < 0.05, "mass"] = np.nan
    return frame


@pytest.fixture(scope="module")
def mixed_model() -> Model:
    with shipped_conditional_fit():
        return flowcli.fit(mixed_table(3000), epochs=2, seed=0, threads=1)


def gaussian_mixture(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    k = rng.integers(0, 2, n)
    a = np.where(k == 0, -2.0, 2.0) + rng.normal(0, 0.7, n)
    b = np.where(k == 0, 1.0, -1.0) + rng.normal(0, 0.5, n)
    return pd.DataFrame({"a": a, "b": b})


def true_log_p_b_given_a(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    def normal(x: np.ndarray, mean: float, sd: float) -> np.ndarray:
        return np.exp(-0.5 * ((x - mean) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))

    joint = 0.5 * normal(a, -2, 0.7) * normal(b, 1, 0.5) + 0.5 * normal(a, 2, 0.7) * normal(b, -1, 0.5)
    marginal = 0.5 * normal(a, -2, 0.7) + 0.5 * normal(a, 2, 0.7)
    return np.log(joint / marginal)


def test_conditional_log_likelihood_is_close_to_the_closed_form() -> None:
    model = flowcli.fit(gaussian_mixture(4000, 0), epochs=1, seed=0, threads=1)
    test = gaussian_mixture(2000, 1)
    fitted = model.log_prob(test, target=["b"])
    truth = true_log_p_b_given_a(test["a"].to_numpy(), test["b"].to_numpy())
    assert abs(fitted.mean() - truth.mean()) < 0.15
    # And the samples given a follow the true conditional: b's sign is set by a's component.
    drawn = model.sample(2000, given={"a": 2.0}, seed=0)
    assert (drawn["a"] == 2.0).all()
    assert abs(drawn["b"].mean() - (-1.0)) < 0.15 and abs(drawn["b"].std() - 0.5) < 0.1


def test_conditional_densities_integrate_to_one_in_the_columns_units(mixed_model: Model) -> None:
    row = {"species": "Gentoo", "island": "Biscoe", "count": 7}
    # mass: a density in grams (a grid sum); count: probabilities of the integers (a plain sum).
    grid = np.linspace(2000, 8000, 6001)
    frame = pd.DataFrame({**{k: [v] * len(grid) for k, v in row.items()}, "mass": grid})
    density = np.exp(mixed_model.log_prob(frame, target=["mass"]))
    assert np.sum(density) * (grid[1] - grid[0]) == pytest.approx(1.0, abs=0.01)
    counts = pd.DataFrame({"species": ["Gentoo"] * 40, "count": np.arange(40)})
    assert np.exp(mixed_model.log_prob(counts, target=["count"])).sum() == pytest.approx(1.0, abs=0.02)
    # hours: an atom at 0 plus a density beyond it.
    hours = np.linspace(0.05, 400, 8000)
    frame = pd.DataFrame({"species": ["Adelie"] * len(hours), "hours": hours})
    mass_at_zero = np.exp(mixed_model.log_prob(pd.DataFrame({"species": ["Adelie"], "hours": [0.0]}), target=["hours"]))
    beyond = np.exp(mixed_model.log_prob(frame, target=["hours"])).sum() * (hours[1] - hours[0])
    assert mass_at_zero[0] + beyond == pytest.approx(1.0, abs=0.03)


def test_label_probabilities_given_the_rest_sum_to_one(mixed_model: Model) -> None:
    labels = ["Biscoe", "Dream", "Torgersen"]
    frame = pd.DataFrame({"species": ["Chinstrap"] * 3, "island": labels, "mass": [3600.0] * 3})
    probabilities = np.exp(mixed_model.log_prob(frame, target=["island"]))
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-9)


def test_a_file_lacking_columns_is_scored_on_the_columns_it_has(mixed_model: Model) -> None:
    table = mixed_table(500, seed=3)
    marginal = mixed_model.log_prob(table[["species", "island"]])
    assert np.isfinite(marginal).all()
    # The marginal of the discrete pair is a distribution: summed over every pair it is 1.
    pairs = pd.DataFrame(
        [(s, i) for s in ISLANDS for i in ["Biscoe", "Dream", "Torgersen"]], columns=["species", "island"]
    )
    assert np.exp(mixed_model.log_prob(pairs)).sum() == pytest.approx(1.0, abs=1e-9)
    # With every column present the joint flow scores the row, as before.
    complete = table.dropna()
    assert np.allclose(
        mixed_model.log_prob(complete), mixed_model.log_prob_features(mixed_model.schema.to_features(complete)[0])
    )


def test_a_rare_condition_gives_exactly_n_rows_that_hold_it(mixed_model: Model) -> None:
    drawn = mixed_model.sample(1000, given={"species": "Chinstrap"}, seed=1)
    assert len(drawn) == 1000 and (drawn["species"] == "Chinstrap").all()
    # Chinstrap penguins live on Dream only: no sample puts them anywhere else.
    assert (drawn["island"] == "Dream").mean() > 0.97
    # Conditional samples are complete rows.
    assert not drawn.isna().any().any()
    assert list(drawn.columns) == list(mixed_table(5).columns)


def test_given_numbers_are_kept_exactly_and_condition_the_rest(mixed_model: Model) -> None:
    heavy = mixed_model.sample(500, given={"mass": 5123.456}, seed=2)
    light = mixed_model.sample(500, given={"mass": 3601.0}, seed=2)
    assert (heavy["mass"] == 5123.456).all()
    assert (heavy["species"] == "Gentoo").mean() > 0.8 > (light["species"] == "Gentoo").mean()


def test_given_rows_give_n_draws_each_in_input_order(mixed_model: Model) -> None:
    given = pd.DataFrame({"species": ["Gentoo", None, "Chinstrap"], "hours": [0.0, 12.5, None]})
    drawn = mixed_model.sample(4, given=given, seed=3)
    assert len(drawn) == 12
    assert (drawn["species"][:4] == "Gentoo").all() and (drawn["species"][8:] == "Chinstrap").all()
    assert (drawn["hours"][:4] == 0.0).all() and (drawn["hours"][4:8] == 12.5).all()
    again = mixed_model.sample(4, given=given, seed=3)
    pd.testing.assert_frame_equal(drawn, again)


@pytest.mark.parametrize(
    ("given", "fragment"),
    [
        ({"colour": "red"}, "'colour' is not a column"),
        ({"species": "Emperor"}, "unseen category 'Emperor'"),
        ({"hours": -3.0}, "outside the values the column can hold"),
        # count is an integer over 1..17 with an atom at 0: samples are clipped to 1..17, so 18 is never drawn
        ({"count": 18}, "given column 'count', row 1: 18 is outside the values the column can hold"),
        ({"count": -1}, "given column 'count', row 1: -1 is outside the values the column can hold"),
        ({"mass": "heavy"}, "'heavy'"),
        # None in a mapping would otherwise leave the column free: an unconditional answer to a conditional question
        ({"mass": None}, "given column 'mass': None is a missing value, not a condition"),
        ({"species": float("nan")}, "given column 'species': nan is a missing value"),
    ],
)
def test_bad_given_values_are_one_line_errors(mixed_model: Model, given: dict, fragment: str) -> None:
    with pytest.raises(DataError, match=fragment):
        mixed_model.sample(3, given=given)


def test_given_integers_at_the_ends_of_the_training_range_and_on_atoms_are_drawn_given(mixed_model: Model) -> None:
    for value in (0, 1, 17):  # the atom, the smallest and the largest value of the training rows
        drawn = mixed_model.sample(5, given={"count": value}, seed=1)
        assert (drawn["count"] == value).all()
    rows = pd.DataFrame({"count": [3, 40]})  # --given-file: the row is named
    with pytest.raises(DataError, match="given column 'count', row 2: 40 is outside"):
        mixed_model.sample(1, given=rows, seed=1)


def test_dates_outside_the_training_range_are_never_drawn() -> None:
    dates = pd.Series(pd.date_range("2020-01-01", periods=50, freq="D").strftime("%Y-%m-%d"))
    column = infer_column(dates, None)
    assert column.rules.name == "datetime"
    asked = pd.Series(["2019-12-31", "2020-01-01", "2020-02-19", "2020-02-20", None])
    assert column.never_drawn(asked, 0).tolist() == [True, False, False, True, False]


def test_bad_targets_are_errors(mixed_model: Model) -> None:
    table = mixed_table(10, seed=4)
    with pytest.raises(DataError, match="target column 'colour' is not a column"):
        mixed_model.log_prob(table, target=["colour"])
    with pytest.raises(DataError, match="target column 'hours' is not in the data"):
        mixed_model.log_prob(table.drop(columns="hours"), target=["hours"])
    with pytest.raises(DataError, match="no column given"):
        mixed_model.log_prob(table, target=[])
    with pytest.raises(DataError, match="names 'mass' twice"):
        mixed_model.log_prob(table, target=["mass", "mass"])


def test_a_target_string_is_the_command_lines_list(mixed_model: Model) -> None:
    """``target="mass"`` is the column, not its letters; ``"mass,hours"`` two columns, as ``--target`` reads it."""
    table = mixed_table(20, seed=5)
    np.testing.assert_array_equal(
        mixed_model.log_prob(table, target="mass"), mixed_model.log_prob(table, target=["mass"])
    )
    np.testing.assert_array_equal(
        mixed_model.log_prob(table, target="mass, hours"), mixed_model.log_prob(table, target=["mass", "hours"])
    )


def test_a_row_without_its_target_scores_nan_and_others_score(mixed_model: Model) -> None:
    table = mixed_table(20, seed=5).fillna({"mass": 4000.0})
    table.loc[3, "mass"] = np.nan
    scores = mixed_model.log_prob(table, target=["mass"])
    assert np.isnan(scores[3]) and np.isfinite(np.delete(scores, 3)).all()
    # Without targets, a row with no cell of the model's columns observes nothing: probability 1.
    marginal = mixed_model.log_prob(table[["mass"]])
    assert marginal[3] == 0.0 and (np.delete(marginal, 3) < 0).all()


def test_impute_fills_every_gap_and_never_changes_a_known_cell(mixed_model: Model) -> None:
    table = mixed_table(400, seed=6)
    rng = np.random.default_rng(0)
    holes = table.mask(rng.random(table.shape) < 0.2)
    filled = mixed_model.impute(holes, seed=0)
    assert list(filled.columns) == list(table.columns) and len(filled) == len(table)
    assert not filled.isna().any().any()
    known = holes.notna()
    for name in table.columns:
        assert (filled[name][known[name]] == holes[name][known[name]]).all()
    assert filled["count"].dtype == table["count"].dtype  # integers stay integers
    assert set(filled["species"]) <= set(ISLANDS)
    # Conditional means beat the column means on the masked numbers.
    gaps = ~known["mass"] & table["mass"].notna()
    error = np.abs(filled["mass"][gaps] - table["mass"][gaps]).mean()
    floor = np.abs(holes["mass"].mean() - table["mass"][gaps]).mean()
    assert error < 0.7 * floor
    # Species is mostly recoverable from mass and island.
    gaps = ~known["species"]
    assert (filled["species"][gaps] == table["species"][gaps]).mean() > 0.8


def test_multiple_imputation_draws(mixed_model: Model) -> None:
    holes = mixed_table(50, seed=7)
    holes.loc[::2, "hours"] = np.nan
    drawn = mixed_model.impute(holes, draws=5, seed=1)
    assert len(drawn) == 250 and list(drawn["_draw"][:10]) == [1, 2, 3, 4, 5] * 2
    assert (drawn["species"].to_numpy() == np.repeat(holes["species"].to_numpy(), 5)).all()
    gap_draws = drawn["hours"][np.repeat(holes["hours"].isna().to_numpy(), 5)]
    assert gap_draws.notna().all() and gap_draws.nunique() > 10  # draws differ
    with pytest.raises(DataError, match="at least 1"):
        mixed_model.impute(holes, draws=0)


def test_impute_adds_columns_the_frame_lacks(mixed_model: Model) -> None:
    filled = mixed_model.impute(pd.DataFrame({"species": ["Gentoo", "Adelie"], "extra": ["x", "y"]}))
    assert list(filled.columns[:2]) == ["species", "extra"] and {"mass", "hours", "count"} <= set(filled.columns)
    assert filled["mass"][0] > filled["mass"][1]  # Gentoo penguins are heavier


def test_the_network_sees_only_what_each_question_allows() -> None:
    """Changing a cell that is neither observed nor a target, or a target after i, leaves factor i alone."""
    schema = flowcli.fit(mixed_table(200), epochs=1, seed=0, threads=1).schema
    torch.manual_seed(0)
    net = ConditionalNet(layout_of(schema)).double()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    net.eval()
    preprocess = schema.preprocessing().double()
    x = torch.as_tensor(schema.to_features(mixed_table(50, seed=1).dropna())[0])
    columns = net.layout.columns
    observed = torch.zeros(len(x), columns, dtype=torch.bool)
    observed[:, 0] = True  # species
    target = torch.zeros(len(x), columns, dtype=torch.bool)
    target[:, 1] = True  # island
    base = log_prob(net, prepare(net, preprocess, x), Roles(net, observed, target))
    other = x.clone()
    other[:, 3:] = other[:, 3:].flip(0)  # shuffle the other columns (neither observed nor targets)
    assert torch.allclose(base, log_prob(net, prepare(net, preprocess, other), Roles(net, observed, target)))
    changed = x.clone()
    changed[:, 0] = changed[:, 0].flip(0)
    assert not torch.allclose(base, log_prob(net, prepare(net, preprocess, changed), Roles(net, observed, target)))


def test_draws_stay_inside_each_columns_training_range(mixed_model: Model) -> None:
    table = mixed_table(3000)  # the fixture's training rows (the fit holds some out: a range at most this)
    # An extreme condition: the heaviest mass seen; heavy-tailed inverses once sent draws to 1e11 here.
    drawn = mixed_model.sample(3000, given={"mass": float(table["mass"].max())}, seed=4)
    for name in ["hours", "count"]:
        assert table[name].min() <= drawn[name].min() and drawn[name].max() <= table[name].max(), name
    holes = table.head(300).copy()
    holes.loc[::3, "hours"] = np.nan
    filled = mixed_model.impute(holes, seed=0)
    assert filled["hours"].between(table["hours"].min(), table["hours"].max()).all()


def test_conditional_means_are_the_same_every_run(mixed_model: Model) -> None:
    holes = mixed_table(60, seed=8)
    holes.loc[::2, "mass"] = np.nan
    pd.testing.assert_frame_equal(mixed_model.impute(holes), mixed_model.impute(holes))


def test_a_short_fit_gets_a_proportionally_short_network_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The network's step budget scales with the joint's planned epochs (a 5-epoch fit is a quick fit): 4,000
    steps from 200 epochs on, never fewer than ``MIN_BUDGET_STEPS``."""
    monkeypatch.setattr(conditional, "FULL_BUDGET_EPOCHS", 200)  # as shipped (helpers give tests the whole budget)
    assert conditional.budget_share(5) == pytest.approx(5 / 200)
    assert conditional.budget_share(200) == conditional.budget_share(1000) == 1.0
    monkeypatch.setattr(conditional, "PATIENCE", 10**9)  # so that only the budget ends the network's fit
    frame = gaussian_mixture(2000, seed=3)
    steps = {}
    for epochs in (5, 20):
        fit = flowcli.fit(frame, epochs=epochs, seed=0, threads=1).info["conditional_fit"]
        steps[epochs] = fit["steps"]
        per_epoch = math.ceil(fit["steps"] / fit["epochs"])
        budget = max(conditional.MIN_BUDGET_STEPS, round(conditional.MAX_STEPS * epochs / 200))
        assert budget <= fit["steps"] < budget + per_epoch, (epochs, fit)
    assert steps[5] < steps[20] < conditional.MAX_STEPS


def test_impute_keeps_index_labels_replaces_a_draw_column_and_refuses_impossible_values(mixed_model: Model) -> None:
    holes = mixed_table(6, seed=9)
    holes.index = [10, 20, 30, 40, 50, 60]
    holes.loc[[20, 40], "mass"] = np.nan
    means = mixed_model.impute(holes)
    assert list(means.index) == list(holes.index) and not means["mass"].isna().any()
    holes["_draw"] = 7  # an input column of that name: replaced, and the draw number comes last
    drawn = mixed_model.impute(holes, draws=2, seed=0)
    assert list(drawn.index) == list(np.repeat(holes.index, 2)) and list(drawn.columns)[-1] == "_draw"
    assert drawn["_draw"].tolist() == [1, 2] * 6
    holes.loc[30, "hours"] = -4.0  # hours are >= 0: probability 0, no completion of its row exists
    with pytest.raises(DataError, match="column 'hours', row 3: -4.0 is outside the values the column can hold"):
        mixed_model.impute(holes)


def test_given_and_observed_values_come_back_in_the_columns_type(tmp_path) -> None:
    """A value given or observed as other text than the column writes (``007`` for the integer 7, a date as
    text in a date column) comes back as the column's value, so the output has one type per column (a Parquet
    file can hold it); a float column keeps the given number exactly."""
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame(
        {
            "day": pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 300, n), unit="D"),
            "count": rng.poisson(6, n),
            "size": pd.Categorical(rng.choice(["S", "M", "L"], n), categories=["S", "M", "L"]),
            "x": rng.normal(0, 1, n).round(2),
            "country": "FR",  # constant: no features, its one value
            "member": rng.random(n) < 0.3,
        }
    )
    model = flowcli.fit(frame, epochs=2, seed=0, threads=1)
    drawn = model.sample(4, seed=0, given={"day": "2020-05-05", "count": "007", "x": 0.123456, "member": "false"})
    assert drawn["member"].dtype == bool and not drawn["member"].any()  # text "false" is False, not truthy text
    assert drawn["day"].dtype == frame["day"].dtype and (drawn["day"] == pd.Timestamp("2020-05-05")).all()
    assert pd.api.types.is_integer_dtype(drawn["count"]) and (drawn["count"] == 7).all()
    assert (drawn["x"] == 0.123456).all()  # not rounded onto the column's two decimals
    assert list(drawn["size"].cat.categories) == ["S", "M", "L"]
    drawn.to_parquet(tmp_path / "drawn.parquet")
    holes = pd.DataFrame(
        {
            "day": ["2020-02-03", None],
            "count": ["012", None],
            "size": [None, "M"],
            "x": [None, 1.5],
            "member": ["False", "TRUE"],
        }
    )
    filled = model.impute(holes)
    assert filled["day"].tolist()[0] == pd.Timestamp("2020-02-03") and filled["count"].tolist()[0] == 12
    assert filled["x"].tolist()[1] == 1.5 and filled["size"].tolist()[1] == "M"
    assert filled["member"].tolist() == [False, True]
    assert filled["country"].tolist() == ["FR", "FR"]  # added: the input lacks the column
    holes["country"] = [None, "FR"]
    assert model.impute(holes)["country"].tolist() == ["FR", "FR"]
    filled.to_parquet(tmp_path / "filled.parquet")


def test_a_file_of_only_a_constant_column_is_scored_on_it() -> None:
    """The constant is one of the model's columns: its value has probability 1, another 0; a file with none
    of the columns is an error that lists them all, the constant included."""
    rng = np.random.default_rng(1)
    model = flowcli.fit(pd.DataFrame({"x": rng.normal(size=300), "c": "FR"}), epochs=2, seed=0, threads=1)
    np.testing.assert_array_equal(model.log_prob(pd.DataFrame({"c": ["FR", "DE"]})), [0.0, -np.inf])
    with pytest.raises(DataError, match=r"none of the model's columns \(x, c\)"):
        model.log_prob(pd.DataFrame({"z": [1.0]}))


def test_impute_keeps_observed_values_beyond_the_training_range(mixed_model: Model) -> None:
    """Observed cells are never changed: not clamped to the training range, not rounded (decoding would)."""
    holes = mixed_table(4, seed=12)
    holes["mass"] = holes["mass"].astype(object)
    holes.loc[0, ["count", "mass", "hours"]] = [999, 12345.678, np.nan]
    holes.loc[1, ["count", "mass"]] = [np.nan, "4321.5"]  # a number as text: read as the number
    filled = mixed_model.impute(holes)
    assert filled.loc[0, "count"] == 999 and filled.loc[0, "mass"] == 12345.678
    assert filled.loc[1, "mass"] == 4321.5 and pd.api.types.is_float_dtype(filled["mass"])
