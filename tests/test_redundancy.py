"""Columns that are linear functions of others: an error naming each one before any training."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import SMALL_CONFIG
from typer.testing import CliRunner

import flowcli
from flowcli.cli import app
from flowcli.errors import DataError
from flowcli.redundancy import CHECK_ROWS, check_independent
from flowcli.schema import Schema

runner = CliRunner()


def table(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"length_cm": rng.normal(50, 10, n).round(2), "a": rng.gamma(2, 3, n).round(2), "b": rng.normal(size=n)}
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (lambda t: t.length_cm, "column 'copy' is a linear function of other columns (copy = length_cm)"),
        (lambda t: t.length_cm / 2.54, "(copy = 0.393701 * length_cm)"),
        (lambda t: t.a + t.b, "(copy = a + b)"),
        (lambda t: 32 + 1.8 * t.b, "(copy = 1.8 * b + 32)"),
    ],
)
def test_a_derived_column_is_named_with_its_relation(extra, message: str) -> None:
    frame = table().assign(copy=extra)
    with pytest.raises(DataError, match=re.escape(message)):
        flowcli.fit(frame, SMALL_CONFIG, epochs=1, seed=0, threads=1)


def test_every_derived_column_is_named_at_once_with_the_config_that_leaves_them_out() -> None:
    frame = table().assign(twice=lambda t: 2 * t.b, again=lambda t: t.length_cm)
    with pytest.raises(DataError) as caught:
        flowcli.fit(frame, SMALL_CONFIG, epochs=1, seed=0, threads=1)
    assert "columns 'twice', 'again' are linear functions" in str(caught.value)
    assert "(twice = 2 * b; again = length_cm)" in str(caught.value)
    assert "columns: {twice: {role: ignore}, again: {role: ignore}}" in str(caught.value)
    config = {**SMALL_CONFIG, "columns": {"twice": {"role": "ignore"}, "again": {"role": "ignore"}}}
    assert flowcli.fit(frame, config, epochs=1, seed=0, threads=1).schema.modelled[-1].name == "b"


def test_dates_written_two_ways_are_one_date(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    days = pd.Timestamp("2021-01-01") + pd.to_timedelta(
        rng.integers(0, 900, 300) * 86400 + rng.integers(0, 86400, 300), unit="s"
    )
    frame = pd.DataFrame(
        {"iso": days.strftime("%Y-%m-%d %H:%M:%S"), "eu": days.strftime("%d/%m/%Y %H:%M:%S"), "x": rng.normal(size=300)}
    )
    frame.to_csv(tmp_path / "dates.csv", index=False)
    result = runner.invoke(app, ["fit", str(tmp_path / "dates.csv"), "-o", str(tmp_path / "m.flow"), "--epochs", "1"])
    assert result.exit_code == 1 and not (tmp_path / "m.flow").exists()
    lines = result.output.strip().splitlines()
    assert (
        lines[-1].startswith("Error: ")
        and "'eu' is a linear function" in lines[-1]
        and "(eu = iso + a fixed time)" in lines[-1]
    )
    assert "Traceback" not in result.output


def test_near_relations_and_dequantized_columns_keep_their_density() -> None:
    """A conversion rounded to the data's decimals has a residual above float32's resolution, also over a
    spread of thousands (a price and its tax-included price to the cent), and an integer column's
    dequantization noise gives a doubled count a density: all fit."""
    rng = np.random.default_rng(2)
    frame = table().assign(
        inches=lambda t: (t.length_cm / 2.54).round(2),
        count=rng.integers(0, 1000, 400),
        doubled=lambda t: 2 * t["count"],
        price=rng.lognormal(6.5, 1.2, 400).round(2),
        gross=lambda t: (t.price * 1.2).round(2),
    )
    model = flowcli.fit(frame, SMALL_CONFIG, epochs=1, seed=0, threads=1)
    assert [c.name for c in model.schema.modelled] == list(frame.columns)


def test_a_relation_of_the_rows_read_that_another_row_breaks_is_no_relation() -> None:
    """The search reads CHECK_ROWS evenly spaced rows; what it finds is verified on every row."""
    n = CHECK_ROWS + 5_001
    frame = table(n, seed=3).assign(copy=lambda t: t.length_cm.copy())
    frame.loc[1, "copy"] += 1.0  # a row between the ones read (every second row or so)
    schema = Schema.infer(frame)
    check_independent(schema, schema.to_features(frame)[0])  # no error
    frame.loc[1, "copy"] -= 1.0
    with pytest.raises(DataError, match="copy = length_cm"):
        check_independent(schema, schema.to_features(frame)[0])


def test_a_float32_copy_and_a_date_at_a_fixed_offset_are_named_in_words_that_fit() -> None:
    rng = np.random.default_rng(4)
    frame = table().assign(
        copy32=lambda t: t.length_cm.astype(np.float32).astype(np.float64),  # float32's rounding apart
        ordered=pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 10**8, 400), unit="s"),
        shipped=lambda t: t.ordered + pd.Timedelta(days=2),
    )
    with pytest.raises(DataError) as caught:
        flowcli.fit(frame, SMALL_CONFIG, epochs=1, seed=0, threads=1)
    assert "(copy32 = length_cm; shipped = ordered + a fixed time), exactly or to within float32's" in str(caught.value)


def test_sparse_columns_do_not_hide_a_relation_among_the_others() -> None:
    """Two lab columns never present on the same row left no complete row, and so no check at all."""
    frame = table().assign(twice=lambda t: 2 * t.b, lab1=np.nan, lab2=np.nan)
    frame.loc[::3, "lab1"] = np.random.default_rng(5).normal(5, 1, len(frame[::3])).round(3)
    frame.loc[1::3, "lab2"] = np.random.default_rng(6).normal(9, 2, len(frame[1::3])).round(3)
    schema = Schema.infer(frame)
    with pytest.raises(DataError, match="twice = 2 \\* b"):
        check_independent(schema, schema.to_features(frame)[0])
