"""Every registered column role: inference or override, encode -> preprocess -> decode with values and
dtypes, the preprocessing's log|det| against autograd, and the config's override keys.

Looped over the registry, so a new role is tested here as soon as it has an entry in ``CASES``; a role
without one fails ``test_every_role_has_cases``, naming it.
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from flowcli.columns import OVERRIDABLE, ROLES, Column, infer_column, parse_column_overrides
from flowcli.errors import ConfigError, DataError
from flowcli.roles import ROLE_REGISTRY, Transform, inference_order, register_role
from flowcli.roles.numeric import NumericRole
from flowcli.schema import Preprocess, Schema

N = 160


@dataclass
class Case:
    """A training column for a role, the config's setting for it (None: left to inference), and the
    dtype a decoded column comes back with if not the training one."""

    label: str
    series: pd.Series
    override: Any = None
    dtype: str | None = None


def _rng() -> np.random.Generator:
    return np.random.default_rng(7)


def _with_missing(values: np.ndarray, every: int = 9) -> np.ndarray:
    values = values.astype(object if values.dtype.kind in "OUb" else np.float64)
    values[::every] = None if values.dtype == object else np.nan
    return values


def _cases() -> dict[str, list[Case]]:
    rng = _rng()
    heights = np.round(rng.normal(0.0, 3.0, N), 2)
    heights[[3, 40, 41]] = 0.0  # exact zeros are ordinary values
    whole = rng.integers(-40, 60, N)
    colour = rng.choice(["red", "green", "blue"], N, p=[0.6, 0.35, 0.05]).astype(object)
    colour[[5, 6]] = "ultraviolet"  # a rare category
    colour[::11] = None
    seconds = pd.Series(pd.to_datetime(1_600_000_000 + rng.integers(0, 30_000_000, N), unit="s"), name="t")
    days = pd.Timestamp("2019-12-20") + pd.to_timedelta(rng.integers(0, 700, N), unit="D")
    return {
        "continuous": [
            Case("floats with zeros and missing values", pd.Series(_with_missing(heights), name="h")),
            Case("percentages written as text", pd.Series([f"{v:g}%" for v in heights + 50], name="pct")),
            Case("thousands separators", pd.Series([f"{v:,.2f}" for v in rng.normal(5000, 3000, N)], name="k")),
            Case("Decimals (Parquet decimal128)", pd.Series([decimal.Decimal(f"{v:.2f}") for v in heights], name="m")),
            Case("set in the config", pd.Series(rng.normal(size=N), name="x"), "continuous"),
        ],
        "positive": [
            Case("incomes with missing values", pd.Series(_with_missing(rng.lognormal(8, 1, N)), name="i"), "positive"),
        ],
        "bounded": [
            Case(
                "shares with missing values",
                pd.Series(_with_missing(rng.beta(2, 5, N)), name="s"),
                {"role": "bounded", "low": 0, "high": 1},
            ),
            Case(
                "temperatures in (-10, 45)",
                pd.Series(rng.uniform(-9, 44, N), name="t"),
                {"role": "bounded", "low": -10, "high": 45.0},
            ),
        ],
        "integer": [
            Case("Int64 with missing values", pd.Series(pd.array(whole, dtype="Int64"), name="n").mask(whole % 7 == 0)),
            Case("int64", pd.Series(whole, name="n")),
            # A float column keeps its floats (181.0); with gaps, whole floats are an integer column's (181,,186)
            Case("whole floats set in the config", pd.Series(whole.astype(float), name="n"), "integer", "float64"),
            Case(
                "whole floats with gaps",
                pd.Series(whole.astype(float), name="n").mask(whole % 7 == 0),
                "integer",
                "Int64",
            ),
        ],
        "datetime": [
            Case("timestamps to the second, with missing values", seconds.mask(whole % 7 == 0)),
            Case(
                "minutes in Paris",
                pd.Series(seconds.dt.floor("min").dt.tz_localize("UTC").dt.tz_convert("Europe/Paris"), name="p"),
            ),
            Case("date objects (Parquet date32)", pd.Series(list(days.date), dtype=object, name="d")),
            Case("day-first text", pd.Series(days.strftime("%d/%m/%Y"), name="day")),
            Case(
                "month-first text set in the config",
                pd.Series(days.strftime("%m/%d/%Y"), name="md"),
                {"role": "datetime", "format": "%m/%d/%Y"},
            ),
        ],
        "categorical": [
            Case("text with a rare level and missing values", pd.Series(colour, name="c")),
            Case("codes with leading zeros", pd.Series(rng.choice(["00501", "00544", "12345"], N), name="zip")),
            Case(
                "an ordered Categorical",
                pd.Series(pd.Categorical(rng.choice(["low", "mid", "high"], N), ["low", "mid", "high"], ordered=True)),
            ),
            Case("booleans", pd.Series(rng.random(N) < 0.2, name="b")),
            Case("few whole numbers", pd.Series(rng.integers(2007, 2010, N), name="y")),
            Case(
                "Int64 zip codes set in the config",
                pd.Series(pd.array(whole + 75000, dtype="Int64"), name="z"),
                "categorical",
            ),
        ],
        "constant": [
            Case("one label", pd.Series(["north"] * N, name="site")),
            Case("one number", pd.Series(np.full(N, 2.5), name="k")),
        ],
        "ignore": [
            Case("identifiers", pd.Series([f"row-{i}" for i in range(N)], name="id")),
            Case("set in the config", pd.Series(rng.normal(size=N), name="x"), "ignore"),
        ],
    }


CASES = _cases()


def cases_of(role: str) -> list[Case]:
    return CASES.get(role, [])


def fitted(case: Case) -> Column:
    override = (
        parse_column_overrides({str(case.series.name): case.override})[str(case.series.name)] if case.override else None
    )
    return infer_column(case.series, override)


def features_of(column: Column, series: pd.Series) -> np.ndarray:
    features, log_mass, invalid = column.encode(series, 0)
    assert invalid == [] and (log_mass == 0).all()
    assert len(features) == column.width
    return np.column_stack(features) if features else np.zeros((len(series), 0))


def preprocess(column: Column) -> Preprocess:
    return Preprocess(column.feature_specs()).double().eval()


def each_case() -> Iterator[tuple[str, Case]]:
    for role in sorted(ROLE_REGISTRY):
        for case in cases_of(role):
            yield role, case


def test_every_role_has_cases() -> None:
    untested = [role for role in ROLE_REGISTRY if not cases_of(role)]
    assert not untested, f"add training columns for {untested} to CASES in tests/test_roles.py"
    for role, cases in CASES.items():
        assert role in ROLE_REGISTRY, role
        if ROLE_REGISTRY[role].inference_rank is not None:
            assert any(c.override is None for c in cases), f"{role}: add a case that inference picks"
        if ROLE_REGISTRY[role].overridable:
            assert any(c.override is not None for c in cases), f"{role}: add a case set in the config"


@pytest.mark.parametrize("role", sorted(ROLE_REGISTRY))
def test_inference_or_override_gives_the_role(role: str) -> None:
    for case in cases_of(role):
        column = fitted(case)
        assert column.role == role, case.label
        assert column.reason, case.label
        assert column.to_dict() == Column(**column.to_dict()).to_dict()  # what the checkpoint stores
        assert column.describe(), case.label


@pytest.mark.parametrize("role", sorted(ROLE_REGISTRY))
def test_encode_preprocess_decode_gives_the_column_back(role: str) -> None:
    for case in cases_of(role):
        column = fitted(case)
        series = case.series.reset_index(drop=True)
        matrix = features_of(column, series)
        if matrix.shape[1]:
            layer = preprocess(column)
            with torch.no_grad():
                y, _ = layer(torch.from_numpy(matrix))
                back, _ = layer.inverse(y)
            assert torch.isfinite(y).all(), case.label
            matrix = back.numpy()
        decoded = column.decode([matrix[:, i] for i in range(matrix.shape[1])], len(series))
        if decoded is None:
            assert not column.modelled and column.width == 0, case.label
            continue
        assert str(decoded.dtype) == (case.dtype or str(series.dtype)), case.label
        missing = series.isna().to_numpy()
        np.testing.assert_array_equal(decoded.isna().to_numpy(), missing, err_msg=case.label)
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            got = decoded[~missing].to_numpy(dtype=np.float64)
            np.testing.assert_allclose(got, series[~missing].to_numpy(dtype=np.float64), rtol=1e-9, atol=1e-9)
        else:  # labels come back exactly
            assert decoded[~missing].tolist() == series[~missing].tolist(), case.label


@pytest.mark.parametrize("role", sorted(ROLE_REGISTRY))
def test_log_det_of_the_preprocessing_matches_autograd(role: str) -> None:
    """Per row without missing values (imputation is not a bijection): log|det dy/dx| of the column's
    features, both directions, against autograd. ``log_width`` (dequantization) is not a Jacobian term."""
    for case in cases_of(role):
        column = fitted(case)
        matrix = features_of(column, case.series)
        if matrix.shape[1] == 0:
            assert column.feature_specs() == [], case.label
            continue
        rows = torch.from_numpy(matrix[~np.isnan(matrix).any(axis=1)][:6])
        assert len(rows), case.label
        assert_log_det_matches_autograd(preprocess(column), rows)


def assert_log_det_matches_autograd(layer: Preprocess, rows: torch.Tensor) -> None:
    with torch.no_grad():
        y, ladj = layer(rows)
        _, ladj_inv = layer.inverse(y)
    for i in range(len(rows)):
        jac = torch.autograd.functional.jacobian(lambda row: layer(row[None])[0][0], rows[i])
        torch.testing.assert_close(ladj[i] - layer.log_width, torch.linalg.slogdet(jac)[1], atol=1e-9, rtol=1e-9)
        jac_inv = torch.autograd.functional.jacobian(lambda row: layer.inverse(row[None])[0][0], y[i])
        torch.testing.assert_close(
            ladj_inv[i] + layer.log_width, torch.linalg.slogdet(jac_inv)[1], atol=1e-9, rtol=1e-9
        )


@pytest.mark.parametrize("role", OVERRIDABLE)
def test_override_keys_are_the_roles_own(role: str) -> None:
    spec = next(c.override for c in cases_of(role) if c.override is not None)
    mapping = {"role": spec} if isinstance(spec, str) else dict(spec)
    parsed = parse_column_overrides({"a": spec})["a"]
    assert parsed["role"] == role and set(parsed) == {"role", *ROLE_REGISTRY[role].options}
    atoms = ("atoms",) if ROLE_REGISTRY[role].takes_atoms else ()
    allowed = ", ".join(sorted({"role", *ROLE_REGISTRY[role].options, *atoms}))
    with pytest.raises(ConfigError) as error:
        parse_column_overrides({"a": {**mapping, "colour": 1}})
    assert str(error.value) == f"columns.a.colour: unknown key for role {role!r}; allowed keys: {allowed}"


# --- the messages of today, word for word ----------------------------------------------------------------

ALLOWED = "continuous, positive, bounded, integer, categorical, datetime, ignore"


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"a": "positiv"}, f"columns.a.role: unknown role 'positiv' (did you mean 'positive'?); allowed: {ALLOWED}"),
        ({"a": "constant"}, f"columns.a.role: unknown role 'constant'; allowed: {ALLOWED}"),
        ({"a": "zzz"}, f"columns.a.role: unknown role 'zzz'; allowed: {ALLOWED}"),
        (
            {"a": {"role": "positive", "low": 0}},
            "columns.a.low: unknown key for role 'positive'; allowed keys: atoms, role",
        ),
        (
            {"a": {"role": "bounded", "low": 0, "high": 1, "step": 1}},
            "columns.a.step: unknown key for role 'bounded'; allowed keys: atoms, high, low, role",
        ),
        (
            {"a": {"role": "categorical", "atoms": [0]}},
            "columns.a.atoms: unknown key for role 'categorical'; allowed keys: role",
        ),
        ({"a": {"role": "bounded", "low": 0}}, "columns.a.high: a bounded column needs a finite number, got None"),
        ({"a": {"role": "bounded", "low": 2, "high": 1}}, "columns.a: low (2) must be less than high (1)"),
        (
            {"a": {"role": "bounded", "low": 0, "high": float("inf")}},
            "columns.a.high: a bounded column needs a finite number, got inf",
        ),
        (
            {"a": {"role": "bounded", "low": True, "high": 1}},
            "columns.a.low: a bounded column needs a finite number, got True",
        ),
        (
            {"a": {"low": 1}},
            f"columns.a: expected a role ({ALLOWED}) or a mapping with a 'role' key (or only 'atoms')",
        ),
        ([1], "columns: expected a mapping of column name to role, got [1]"),
    ],
)
def test_override_errors(raw: Any, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_column_overrides(raw)
    assert str(error.value) == message


def _message(text: str, value: str) -> str:
    """A regex of a message whose ``{}`` is a value shown as the plain Python value (2.5, never numpy 2's
    np.float64(2.5))."""
    return re.escape(text.format(value))


@pytest.mark.parametrize(
    "override, message, value",
    [
        ("positive", "column 'a', row 2: {} is not > 0 (the config says positive)", "-2.0"),
        (
            {"role": "bounded", "low": 0, "high": 2.5},
            "column 'a', row 2: {} is not strictly between 0 and 2.5 (the config's bounds)",
            "-2.0",
        ),
        ("integer", "column 'a', row 3: {} is not a whole number (the config says integer)", "3.5"),
    ],
)
def test_training_values_outside_a_role_are_refused(override: Any, message: str, value: str) -> None:
    series = pd.Series([1.0, -2.0, 3.5, np.nan], name="a")
    with pytest.raises(DataError) as error:
        infer_column(series, parse_column_overrides({"a": override})["a"])
    assert re.fullmatch(_message(message, value), str(error.value)), str(error.value)


def test_scoring_values_outside_the_support() -> None:
    """Out of support: -inf without an error; not a value of the role at all: an invalid entry."""
    frame = pd.DataFrame({"p": [1.0, 2.0, 3.0], "s": [0.2, 0.5, 0.7], "n": [1, 5, 30], "c": ["x", "y", "x"]})
    overrides = parse_column_overrides({"p": "positive", "s": {"role": "bounded", "low": 0, "high": 1}, "n": "integer"})
    schema = Schema.infer(frame, overrides)
    new = pd.DataFrame({"p": [-1.0, 2.0, 2.0], "s": [0.5, 1.0, 0.5], "n": [2, 2, 2], "c": ["x", "x", "x"]})
    _, log_mass = schema.to_features(new)
    assert np.isneginf(log_mass[:2]).all() and log_mass[2] == 0
    for column, value, message, shown in [
        ("n", 2.5, "column 'n', row 1: {} is not a whole number (the column is integer)", "2.5"),
        ("c", "z", "column 'c', row 1: unseen category {} (known: 'x', 'y')", "'z'"),
    ]:
        bad = new.assign(**{column: [value, new[column][1], new[column][2]]})
        with pytest.raises(DataError) as error:
            schema.to_features(bad)
        assert re.fullmatch(_message(message, shown), str(error.value)), str(error.value)
        _, log_mass = schema.to_features(bad, on_invalid="neg-inf")
        assert np.isneginf(log_mass[0])


# --- the registry ---------------------------------------------------------------------------------------


def test_registry_lists_and_orders() -> None:
    assert ROLES == ("continuous", "positive", "bounded", "integer", "categorical", "datetime", "constant", "ignore")
    assert OVERRIDABLE == ("continuous", "positive", "bounded", "integer", "categorical", "datetime", "ignore")
    order = [role.name for role in inference_order()]
    assert order == ["constant", "datetime", "ignore", "categorical", "integer", "continuous"]
    with pytest.raises(RuntimeError, match="registered twice"):
        register_role("positive")(NumericRole)


class _Log1p(Transform):
    """t = log(1 + x) on x > -1."""

    name = "test-log1p"
    identity = False

    def forward(self, x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.log1p(x), -torch.log1p(x)

    def inverse(self, t: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.expm1(t), t

    def safe_input(self, x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    def numpy(self, x: np.ndarray, low: float, high: float) -> np.ndarray:
        return np.log1p(x)


@pytest.fixture
def counts_role() -> Iterator[str]:
    """A role added the way a new one would be: one class, registered by name (removed afterwards)."""

    class Counts(NumericRole):
        transform = _Log1p()

        def outside(self, column: Column, values: np.ndarray) -> np.ndarray:
            return values < 0

        def describe(self, column: Column) -> str:
            return super().describe(column) + " (of log1p)"

    register_role("test-counts")(Counts)
    try:
        yield "test-counts"
    finally:
        del ROLE_REGISTRY["test-counts"]


def test_a_new_role_is_one_registered_class(counts_role: str) -> None:
    rng = _rng()
    frame = pd.DataFrame({"k": rng.poisson(3.0, N).astype(float), "x": rng.normal(size=N)})
    # Without atoms (0 would be one: counts are >= 0), so the column is its one continuous feature.
    schema = Schema.infer(frame, parse_column_overrides({"k": {"role": counts_role, "atoms": []}}))
    column = schema.columns[0]
    assert column.role == counts_role and column.describe().endswith("(of log1p)")
    assert column.mean == pytest.approx(np.log1p(frame["k"]).median())  # robust location (roles/numeric.py)
    matrix, log_mass = schema.to_features(frame)
    layer = schema.preprocessing().double().eval()
    with torch.no_grad():
        back, _ = layer.inverse(layer(torch.from_numpy(matrix))[0])
    pd.testing.assert_frame_equal(schema.to_frame(back.numpy()), frame, check_exact=False, rtol=1e-9)
    assert_log_det_matches_autograd(layer, torch.from_numpy(matrix[:4]))


def test_one_number_with_a_thousands_separator_does_not_make_the_column_written_with_them() -> None:
    """Among body masses written 3750, 3800, ... one "4,000": still numbers, "4,000" read as 4000, and samples
    written like the others (they came out as "3,175", each quoted in a CSV). A column whose long numbers
    mostly carry the separator keeps it."""
    masses = [str(v) for v in _rng().integers(2700, 6300, 300)]
    masses[5] = "4,000"
    column = Schema.infer(pd.DataFrame({"mass": masses})).columns[0]
    assert column.role in ("integer", "continuous")
    schema = Schema([column])
    values = schema.to_features(pd.DataFrame({"mass": ["4,000", "3750"]}))[0][:, -1]
    assert values.tolist() == [4000.0, 3750.0]
    written = schema.to_frame(np.array([[3175.0], [4321.0]]))["mass"].tolist()
    assert written == ["3175", "4321"]
    grouped = [f"{int(v):,}" for v in _rng().integers(2700, 6300, 300)]
    grouped[5] = "4000"  # the exception the other way: the column is written with separators
    column = Schema.infer(pd.DataFrame({"mass": grouped})).columns[0]
    assert Schema([column]).to_frame(np.array([[3175.0]]))["mass"].tolist() == ["3,175"]


@pytest.mark.parametrize("ordered", [False, True])
def test_a_pandas_categorical_comes_back_with_all_its_training_labels(ordered: bool) -> None:
    """Decoded rows that hold only some of the labels keep the training categories (in their order): a frame
    of a few sampled or imputed rows compares with the training frame, and one Parquet schema holds them all."""
    labels = ["S", "M", "L", "XL"]
    series = pd.Series(pd.Categorical(np.repeat(labels, 5), categories=labels, ordered=ordered), name="size")
    column = infer_column(series, None)
    codes = features_of(column, pd.Series(pd.Categorical(["L", "L"], categories=labels, ordered=ordered)))
    decoded = column.decode([codes[:, 0]], 2)
    assert isinstance(decoded.dtype, pd.CategoricalDtype)
    assert list(decoded.cat.categories) == labels and decoded.cat.ordered == ordered
    assert decoded.tolist() == ["L", "L"]


def test_the_column_table_quotes_labels_that_hold_a_comma_or_a_line_break() -> None:
    column = Schema.infer(pd.DataFrame({"city": ["Paris", "Austin, TX", "line one\ntwo"] * 5})).columns[0]
    assert column.describe() == "3 levels: 'Austin, TX', Paris, 'line one\\ntwo'"
