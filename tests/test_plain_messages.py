"""Values in messages read as the user wrote them: numpy 2 reprs (``np.float64(181.5)``) never show."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import assert_clean_error
from typer.testing import CliRunner

from flowcli.cli import app
from flowcli.columns import parse_column_overrides
from flowcli.errors import DataError, shown
from flowcli.schema import Schema

runner = CliRunner()


@pytest.mark.parametrize(
    "value, text",
    [
        (np.float64(181.5), "181.5"),
        (np.float32(0.5), "0.5"),
        (np.int64(3), "3"),
        (np.bool_(True), "True"),
        (np.str_("Adelie"), "'Adelie'"),
        (181.0, "181.0"),
        ("x", "'x'"),
        (None, "None"),
    ],
)
def test_shown_is_the_plain_python_repr(value: object, text: str) -> None:
    assert shown(value) == text


def test_scoring_errors_show_plain_values() -> None:
    train = pd.DataFrame({"n": np.arange(40) % 20, "c": [1, 2, 3, 1] * 10, "p": np.linspace(1, 5, 40)})
    schema = Schema.infer(train, parse_column_overrides({"p": "positive"}))
    for column, value, message in [
        ("n", 181.5, "column 'n', row 1: 181.5 is not a whole number (the column is integer)"),
        ("c", 4, "column 'c', row 1: unseen category 4 (known: 1, 2, 3)"),
        ("n", "abc", "column 'n', row 1: 'abc' is not a number"),
    ]:
        bad = train.iloc[:2].astype(object).assign(**{column: [value, train[column].iloc[1]]})
        with pytest.raises(DataError) as error:
            schema.to_features(bad)
        assert str(error.value) == message


def test_fit_errors_show_plain_values(tmp_path: Path) -> None:
    data = tmp_path / "t.csv"
    data.write_text("a,b\n" + "".join(f"{i}.5,{i}\n" for i in range(30)) + "-3.5,7\n")
    for role, message in [
        ("positive", "column 'a', row 31: -3.5 is not > 0 (the config says positive)"),
        ("integer", "column 'a', row 1: 0.5 is not a whole number (the config says integer)"),
    ]:
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"columns:\n  a: {role}\n")
        result = runner.invoke(app, ["fit", str(data), "-c", str(cfg), "-o", str(tmp_path / "m.flow")])
        assert_clean_error(result, message)
        assert "np." not in result.stderr
