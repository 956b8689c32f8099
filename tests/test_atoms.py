"""Point masses (atoms), kept supports and learnt grids of numeric columns (``roles/atoms.py``), through
``Schema.infer(df).to_features(df)`` and ``Schema.to_frame``: the column side of the discrete/continuous
split, tested without fitting a model.

Tables in the flavour of real ones: hours worked that are exactly 0 for a third of the people, a lab
value coded -999 for "not measured", a count whose mode is only gently common, heavy tails, a capped
maximum, rare values and missing cells.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from flowcli.columns import Column, parse_column_overrides
from flowcli.errors import ConfigError, DataError
from flowcli.roles.atoms import learn_step, snap
from flowcli.schema import Preprocess, Schema

N = 2000


def _rng() -> np.random.Generator:
    return np.random.default_rng(14)


def column_of(series: pd.Series, override: Any = None) -> Column:
    overrides = parse_column_overrides({str(series.name): override}) if override is not None else None
    return Schema.infer(series.to_frame(), overrides).columns[0]


def hours(rng: np.random.Generator, n: int = N) -> np.ndarray:
    """Weekly hours: 0 for 43% of the people, the rest whole numbers around 38."""
    worked = np.clip(np.rint(rng.normal(38, 9, n)), 1, 80)
    return np.where(rng.random(n) < 0.43, 0.0, worked)


# --- the rule -------------------------------------------------------------------------------------------


def test_exact_zeros_of_a_nonnegative_column_are_an_atom() -> None:
    rng = _rng()
    worked = hours(rng)
    column = column_of(pd.Series(worked, name="hours"))
    assert column.role == "integer" and column.atoms == [0.0]
    assert column.atom_rates is not None and column.atom_rates[0] == pytest.approx(0.43, abs=0.03)
    assert column.low == worked[worked > 0].min()  # the observed range of the other values
    # 70% zeros and positive wages otherwise: 0 is an atom and the rest has the support > 0.
    wages = pd.Series(np.where(rng.random(N) < 0.7, 0.0, np.round(rng.lognormal(2.5, 0.6, N), 2)), name="wage")
    column = column_of(wages)
    assert column.role == "continuous" and column.atoms == [0.0] and column.low == 0.0
    # The statistics are those of the positive values, not a median at 0.
    assert column.fill == pytest.approx(float(np.median(wages[wages > 0])))


def test_a_code_for_not_measured_is_an_atom() -> None:
    rng = _rng()
    glucose = np.round(rng.normal(120, 30, 768), 0)
    glucose[rng.choice(768, 5, replace=False)] = 0.0  # 0.65%, too rare for the share rule: the zero rule
    assert column_of(pd.Series(glucose, name="glucose")).atoms == [0.0]
    lab = np.round(rng.normal(0.5, 2.0, N), 2)  # negative values too: the zero rule does not apply
    lab[rng.random(N) < 0.03] = -999.0
    assert column_of(pd.Series(lab, name="lab")).atoms == [-999.0]


def test_a_capped_maximum_is_an_atom_of_a_heavy_tailed_float_column() -> None:
    rng = _rng()
    claims = rng.standard_t(2.0, N) * 100
    claims[claims > 150] = 150.0  # a policy limit: about 10% of the rows
    column = column_of(pd.Series(claims, name="claim"))
    assert column.role == "continuous" and column.atoms == [150.0] and column.step is None


def test_gently_common_values_are_not_atoms() -> None:
    rng = _rng()
    counts = pd.Series(rng.poisson(20, N), name="visits")  # the mode holds 9%, its neighbours 8-9%
    assert column_of(counts).atoms == []
    heights = pd.Series(np.round(rng.normal(170, 8, N), 1), name="height")  # one decimal, many repeats
    assert column_of(heights).atoms == []
    small = pd.Series(np.round(rng.normal(44, 5, 342), 1), name="bill")  # a small table's chance heaps
    assert column_of(small).atoms == []
    rare = np.round(rng.normal(0, 1, N), 3)
    rare[:8] = 7.5  # a repeated value, but below 1% of the rows
    assert column_of(pd.Series(rare, name="x")).atoms == []


def test_a_single_zero_is_an_atom_so_the_support_is_kept() -> None:
    """A lone 0 among positive values: as an atom it keeps the rest > 0, so no sample is ever negative
    (as an ordinary value it left the column without a support, and a fit sampled 5.8% negatives)."""
    values = np.round(_rng().lognormal(1, 0.5, N), 2)
    values[3] = 0.0
    column = column_of(pd.Series(values, name="x"))
    assert column.atoms == [0.0] and column.low == 0.0


def test_atoms_are_capped_at_the_most_common() -> None:
    rng = _rng()
    values = rng.normal(0, 1, N)
    # Inside the bulk of the values, each between unique neighbours (codes side by side would be each
    # other's neighbours, with as many rows: a grid, not atoms).
    codes = [-2.25, -1.75, -1.25, -0.75, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75]
    for i, code in enumerate(codes):
        values[i * 40 : i * 40 + 25 + i] = code
    atoms = column_of(pd.Series(values, name="x")).atoms
    assert atoms is not None and sorted(atoms) == sorted(codes[2:])


def test_the_zero_of_a_nonnegative_column_survives_the_cap() -> None:
    """Nine commoner codes and a few zeros in a column of values >= 0 (ADBench thyroid's x1): the zero is
    kept among the 8 atoms, so the rest keeps a support > 0 (evicted, 3.5% of samples were negative)."""
    rng = _rng()
    values = np.round(rng.uniform(0.01, 1, N), 4)
    codes = [0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85]
    for i, code in enumerate(codes):
        values[i * 60 : i * 60 + 40 + i] = code
    values[-5:] = 0.0
    column = column_of(pd.Series(values, name="x"))
    assert column.atoms is not None and len(column.atoms) == 8
    assert column.atoms[0] == 0.0 and sorted(column.atoms[1:]) == codes[2:]
    assert column.low == 0.0


# --- the config -----------------------------------------------------------------------------------------


def test_atoms_set_and_switched_off_in_the_config() -> None:
    rng = _rng()
    values = pd.Series(np.round(rng.normal(0, 1, N), 2), name="x")  # 0.00 holds about 0.4%
    column = column_of(values, {"atoms": [0]})
    assert column.role == "continuous" and column.reason == "numbers" and column.atoms == [0.0]
    assert column_of(pd.Series(hours(rng), name="h"), {"atoms": []}).atoms == []
    column = column_of(pd.Series(hours(rng) + 0.5, name="h"), {"role": "positive", "atoms": [0.5]})
    assert column.role == "positive" and column.atoms == [0.5]
    # An atom outside the role's support is a discrete outcome, not a refused value.
    column = column_of(pd.Series(hours(rng), name="h"), {"role": "positive", "atoms": [0]})
    assert column.role == "positive" and column.atoms == [0.0]


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"atoms": 0}, "columns.x.atoms: a list of numbers (e.g. [0] or [] for none), got 0"),
        ({"atoms": ["zero"]}, "columns.x.atoms: atoms are finite numbers, got 'zero'"),
        ({"atoms": [True]}, "columns.x.atoms: atoms are finite numbers, got True"),
        ({"atoms": [float("nan")]}, "columns.x.atoms: atoms are finite numbers, got nan"),
        ({"atoms": [0, 0.0]}, "columns.x.atoms: [0, 0.0] repeats a value"),
        ({"atoms": list(range(9))}, "columns.x.atoms: at most 8 atoms, got 9"),
        (
            {"role": "datetime", "atoms": [0]},
            "columns.x.atoms: unknown key for role 'datetime'; allowed keys: format, role",
        ),
    ],
)
def test_bad_atoms_in_the_config(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_column_overrides({"x": spec})
    assert str(error.value) == message


def test_atoms_of_a_column_inferred_categorical_ask_for_a_role() -> None:
    with pytest.raises(DataError, match="inferred categorical .*set its role too"):
        column_of(pd.Series([0, 1, 2] * 10, name="x"), {"atoms": [0]})
    with pytest.raises(DataError, match="every value is an atom"):
        column_of(pd.Series([0.0, 1.0] * 10, name="x"), {"role": "continuous", "atoms": [0, 1]})


# --- encoding and decoding -----------------------------------------------------------------------------


def _table(rng: np.random.Generator) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One column per numeric role, each with atoms and missing cells."""
    n = 400
    gone = rng.random(n) < 0.05
    share = np.where(rng.random(n) < 0.2, 1.0, np.round(rng.beta(2, 5, n), 3))
    frame = pd.DataFrame(
        {
            "hours": pd.Series(pd.array(hours(rng, n), dtype="Int64")).mask(gone),
            "wage": pd.Series(np.where(rng.random(n) < 0.5, 0.0, np.round(rng.lognormal(2, 1, n), 2))).mask(gone),
            "income": pd.Series(np.where(rng.random(n) < 0.3, 0.0, np.round(rng.lognormal(9, 1, n), 2))).mask(gone),
            "share": pd.Series(share).mask(gone),
            "lab": pd.Series(np.where(rng.random(n) < 0.1, -999.0, np.round(rng.normal(1, 2, n), 2))).mask(gone),
        }
    )
    overrides = {"income": "positive", "share": {"role": "bounded", "low": 0, "high": 1, "atoms": [1]}}
    return frame, parse_column_overrides(overrides)


def test_state_and_value_features_round_trip_for_every_numeric_role() -> None:
    frame, overrides = _table(_rng())
    schema = Schema.infer(frame, overrides)
    expected_atoms = {"hours": [0.0], "wage": [0.0], "income": [0.0], "share": [1.0], "lab": [-999.0]}
    assert {c.name: c.atoms for c in schema.columns} == expected_atoms
    assert [c.role for c in schema.columns] == ["integer", "continuous", "positive", "bounded", "continuous"]
    specs = [spec for c in schema.columns for spec in c.feature_specs()]
    assert [s.levels for s in specs] == [3, 0] * 5  # continuous / missing / one atom, then the value
    matrix, log_mass = schema.to_features(frame)
    assert (log_mass == 0).all() and matrix.shape == (len(frame), 10)
    for i, column in enumerate(schema.columns):
        state, value = matrix[:, 2 * i], matrix[:, 2 * i + 1]
        raw = frame[column.name].to_numpy(dtype=np.float64, na_value=np.nan)
        expected = np.where(np.isnan(raw), 1, np.where(raw == (column.atoms or [])[0], 2, 0)) + 0.5
        np.testing.assert_array_equal(state, expected, err_msg=column.name)
        assert np.isnan(value[state != 0.5]).all() and not np.isnan(value[state == 0.5]).any(), column.name
        assert column.atom_rates == [pytest.approx(float((raw == column.atoms[0]).mean()))]  # type: ignore[index]
    # Decoding reads the state, whatever number the value feature holds where the state is not 0.
    matrix = np.where(np.isnan(matrix), 12.3, matrix)
    pd.testing.assert_frame_equal(schema.to_frame(matrix), frame, check_dtype=False)


def test_a_column_without_missing_values_and_atoms_is_one_feature() -> None:
    frame = pd.DataFrame({"x": np.round(_rng().normal(0, 1, N), 2)})
    schema = Schema.infer(frame)
    assert schema.columns[0].width == 1 and not schema.columns[0].has_state
    assert [s.levels for s in schema.columns[0].feature_specs()] == [0]


def test_categorical_levels_count_the_missing_level() -> None:
    frame = pd.DataFrame({"c": ["a", "b", None, "c"] * 10})
    (spec,) = Schema.infer(frame).columns[0].feature_specs()
    assert spec.levels == 4
    matrix, _ = Schema.infer(frame).to_features(frame)
    assert sorted(set(matrix[:, 0])) == [0.5, 1.5, 2.5, 3.5]


# --- support --------------------------------------------------------------------------------------------


def test_a_positive_continuous_column_keeps_its_support() -> None:
    rng = _rng()
    price = pd.Series(np.round(rng.lognormal(0, 1.5, N) + 0.01, 2), name="price")
    schema = Schema.infer(price.to_frame())
    column = schema.columns[0]
    assert column.role == "continuous" and column.low == 0.0 and column.atoms == []
    assert "support > 0 (values all > 0" in column.describe()
    new = pd.DataFrame({"price": [-1.0, 0.0, 0.5]})
    _, log_mass = schema.to_features(new)
    assert np.isneginf(log_mass[:2]).all() and log_mass[2] == 0  # density 0 at and below the bound
    layer = Preprocess(column.feature_specs()).double().eval()
    with torch.no_grad():
        x, _ = layer.inverse(torch.tensor([[-1e6], [-50.0], [-5.0], [0.0], [40.0]], dtype=torch.float64))
    assert (x > 0).all() and torch.isfinite(x).all()
    decoded = schema.to_frame(np.array([[1e-300], [0.004], [0.006], [3.14159]]))["price"]
    assert decoded.tolist() == [0.01, 0.01, 0.01, 3.14]  # rounded to 2 decimals, never to 0.00


def test_the_inverse_softplus_leaves_a_column_far_from_zero_alone() -> None:
    year = pd.Series(_rng().integers(1950, 2020, N).astype(float) + 0.5, name="year")
    column = column_of(year)
    assert column.low == 0.0 and column.bound_scale is not None
    spec = column.feature_specs()[-1]
    t = spec.transform.numpy(year.to_numpy(), spec.low, spec.high)
    np.testing.assert_allclose(t, year.to_numpy() / column.bound_scale, rtol=1e-12)


def test_a_column_with_negative_values_has_no_bound() -> None:
    column = column_of(pd.Series(_rng().normal(1, 1, N), name="x"))
    assert column.low is None and column.feature_specs()[-1].transform.identity


# --- grid -----------------------------------------------------------------------------------------------


def test_grid_steps_are_learnt_from_most_values() -> None:
    rng = _rng()
    quarters = np.round(rng.normal(10, 3, N) * 4) / 4
    quarters[7] = 10.13  # a typo does not break the grid
    assert learn_step(quarters, 2) == 0.25
    assert learn_step(np.round(rng.normal(0, 5, N) * 2) / 2, 1) == 0.5
    assert learn_step(np.rint(rng.normal(100, 30, N) / 5) * 5, None) == 5.0
    assert learn_step(np.rint(rng.normal(5e4, 2e4, N) / 1000) * 1000, None) == 1000.0
    assert learn_step(np.round(rng.normal(0, 5, N), 2), 2) is None  # just the decimals
    assert learn_step(np.rint(rng.normal(100, 30, N)), None) is None  # just whole numbers
    assert learn_step(np.array([0.5, 1.0, 1.5, 2.5]), 1) is None  # too few values to tell


def test_decoded_values_are_rounded_to_the_grid() -> None:
    rng = _rng()
    frame = pd.DataFrame({"q": np.round(rng.normal(10, 3, N) * 4) / 4, "five": np.rint(rng.normal(0, 30, N) / 5) * 5})
    schema = Schema.infer(frame)
    q, five = schema.columns
    assert (q.role, q.step, q.decimals) == ("continuous", 0.25, 2)
    assert (five.role, five.step) == ("integer", 5.0)
    assert "grid 0.25" in q.describe() and "grid 5" in five.describe()
    matrix, _ = schema.to_features(frame)
    noisy = matrix + rng.uniform(-0.1, 0.1, matrix.shape)
    back = schema.to_frame(noisy)
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)


def test_rounding_stays_off_the_atoms_and_inside_the_bounds() -> None:
    values = np.array([39.6, 40.4, 0.2, 99.9, 55.0])
    np.testing.assert_array_equal(snap(values, 1.0, 0.0, 100.0, [40.0]), [39.0, 41.0, 1.0, 99.0, 55.0])
    np.testing.assert_array_equal(snap(values, None, 0.0, None, [40.0]), values)


def test_describe_names_the_atoms_support_and_missing_share() -> None:
    frame, overrides = _table(_rng())
    text = {c.name: c.describe() for c in Schema.infer(frame, overrides).columns}
    assert "atoms: 0 (" in text["hours"] and "missing" in text["hours"]
    assert "support > 0" in text["wage"] and "atoms: 0 (" in text["wage"]
    assert "atoms: -999 (" in text["lab"] and "support" not in text["lab"]
    assert text["share"].startswith("(0, 1); atoms: 1 (")
