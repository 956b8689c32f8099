"""Tables as people have them: column roles, discrete probabilities, missing values, anomaly flags, streams."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import lines_within
from typer.testing import CliRunner

from flowcli.cli import app
from flowcli.config import parse_config
from flowcli.errors import ConfigError, DataError
from flowcli.fitting import fit
from flowcli.model import Model, load_model, save_model
from flowcli.schema import Schema

ROOT = Path(__file__).resolve().parents[1]
PENGUINS = ROOT / "data-samples" / "penguins.csv"
runner = CliRunner()

# Small but long enough (5 steps per epoch on penguins) for rare levels to come out at their rates.
TABLE_CONFIG = {
    "layers": [{"type": "maf", "hidden": [64, 64]}, {"type": "permute"}, {"type": "maf", "hidden": [64, 64]}],
    "training": {"epochs": 40, "batch_size": 64, "lr": 0.003, "patience": 1000},
}


def mixed(n: int, seed: int = 0) -> pd.DataFrame:
    """Every kind of column the inference knows, in a deliberately unsorted order."""
    rng = np.random.default_rng(seed)
    colour = rng.choice(["red", "green", "blue"], size=n, p=[0.6, 0.3, 0.1])
    return pd.DataFrame(
        {
            "x": rng.normal(size=n) + (colour == "blue"),
            "colour": colour,
            "flag": rng.random(n) < 0.3,
            "stars": rng.integers(1, 6, size=n),  # 5 distinct whole numbers -> categorical
            "count": rng.poisson(30, size=n),  # many whole numbers -> integer
            "site": np.full(n, "north"),  # one value -> constant
            "id": [f"row-{i}" for i in range(n)],  # one text value per row -> ignore
        }
    )


@pytest.fixture(scope="module")
def mixed_model() -> Model:
    return fit(
        mixed(1200),
        parse_config({**TABLE_CONFIG, "training": {**TABLE_CONFIG["training"], "epochs": 30}}),
        device=torch.device("cpu"),
        seed=0,
    )


@pytest.fixture(scope="module")
def penguins_model() -> Model:
    return fit(pd.read_csv(PENGUINS), parse_config(TABLE_CONFIG), device=torch.device("cpu"), seed=0)


# --- inference and overrides --------------------------------------------------------------------------


def test_roles_are_inferred_with_reasons() -> None:
    schema = Schema.infer(mixed(300))
    roles = {c.name: c.role for c in schema.columns}
    assert roles == {
        "x": "continuous",
        "colour": "categorical",
        "flag": "categorical",
        "stars": "categorical",
        "count": "integer",
        "site": "constant",
        "id": "ignore",
    }
    assert all(c.reason for c in schema.columns)
    colour = schema.columns[1]
    assert colour.categories == ["blue", "green", "red"] and not colour.missing
    assert schema.dim == 5  # x, colour, flag, stars, count


def test_penguins_roles_and_missing_values() -> None:
    schema = Schema.infer(pd.read_csv(PENGUINS))
    by_name = {c.name: c for c in schema.columns}
    assert by_name["year"].role == "categorical" and by_name["year"].categories == [2007, 2008, 2009]
    assert by_name["flipper_length_mm"].role == "integer" and by_name["flipper_length_mm"].has_state
    assert by_name["sex"].role == "categorical" and by_name["sex"].missing and by_name["sex"].width == 1
    assert by_name["bill_length_mm"].role == "continuous" and by_name["bill_length_mm"].width == 2


def test_overrides_from_the_config() -> None:
    frame = pd.DataFrame(
        {
            "income": [1200.0, 3400.5, 880.0, 15000.0],
            "share": [0.1, 0.5, 0.25, 0.9],
            "zip": [75001, 75002, 75001, 69003],
            "n": [1.0, 2.0, 3.0, 4.0],
            "note": ["a", "b", "c", "d"],
        }
    )
    config = parse_config(
        {
            "layers": ["maf"],
            "columns": {
                "income": "positive",
                "share": {"role": "bounded", "low": 0, "high": 1},
                "zip": "categorical",
                "n": "integer",
                "note": "ignore",
            },
        }
    )
    schema = Schema.infer(frame, config.columns)
    assert [c.role for c in schema.columns] == ["positive", "bounded", "categorical", "integer", "ignore"]
    # The standardizing location is robust: the median of log income (roles/numeric.py).
    assert schema.columns[0].mean == pytest.approx(np.log(frame["income"]).median())
    assert schema.columns[2].categories == [69003, 75001, 75002]


def test_override_errors_name_the_key_column_value_and_row() -> None:
    with pytest.raises(ConfigError, match=r"columns\.a\.role: unknown role 'positiv' \(did you mean 'positive'\?\)"):
        parse_config({"layers": ["maf"], "columns": {"a": "positiv"}})
    with pytest.raises(ConfigError, match=r"columns\.a\.low"):
        parse_config({"layers": ["maf"], "columns": {"a": {"role": "bounded", "high": 1}}})
    frame = pd.DataFrame({"a": [1.0, -2.0, 3.0], "b": [1.5, 2.0, 3.0]})
    with pytest.raises(DataError, match=r"column 'a', row 2: .*-2.0.* not > 0"):
        Schema.infer(frame, parse_config({"layers": ["maf"], "columns": {"a": "positive"}}).columns)
    with pytest.raises(DataError, match=r"column 'b', row 1: .*1.5.* not a whole number"):
        Schema.infer(frame, parse_config({"layers": ["maf"], "columns": {"b": "integer"}}).columns)
    with pytest.raises(DataError, match=r"columns\.nope: no such column"):
        Schema.infer(frame, parse_config({"layers": ["maf"], "columns": {"nope": "ignore"}}).columns)


def test_roles_are_stored_in_the_checkpoint(tmp_path: Path, mixed_model: Model) -> None:
    save_model(mixed_model, str(tmp_path / "m.flow"))
    loaded = load_model(str(tmp_path / "m.flow"))
    assert loaded.schema.to_dict() == mixed_model.schema.to_dict()
    frame = mixed(50, seed=1)
    np.testing.assert_allclose(loaded.log_prob(frame), mixed_model.log_prob(frame), atol=1e-6)


# --- sampling: dtypes, labels, ranges, order -----------------------------------------------------------


def test_samples_keep_columns_dtypes_labels_and_ranges(mixed_model: Model) -> None:
    train = mixed(1200)
    sample = mixed_model.sample(2000, seed=1)
    assert list(sample.columns) == ["x", "colour", "flag", "stars", "count", "site"]  # 'id' is ignored
    for name in sample.columns:
        assert sample[name].dtype == train[name].dtype, name
    assert set(sample["colour"]) == {"red", "green", "blue"}
    assert set(sample["stars"]) <= set(train["stars"]) and sample["flag"].dtype == bool
    assert sample["count"].between(train["count"].min(), train["count"].max()).all()
    assert (sample["site"] == "north").all()
    # Category frequencies follow the data (up to the fit of a small, briefly trained model).
    freq = sample["colour"].value_counts(normalize=True)
    assert abs(freq["red"] - 0.6) < 0.07 and abs(freq["blue"] - 0.1) < 0.04, freq


def test_columns_matched_by_name_not_position(mixed_model: Model) -> None:
    frame = mixed(40, seed=2)
    shuffled = frame[list(reversed(frame.columns))].assign(extra="anything")
    np.testing.assert_array_equal(mixed_model.log_prob(shuffled), mixed_model.log_prob(frame))


def test_constant_column_has_mass_one_at_its_value(mixed_model: Model) -> None:
    frame = mixed(5, seed=3)
    frame.loc[2, "site"] = "south"
    scores = mixed_model.log_prob(frame)
    assert np.isneginf(scores[2]) and np.isfinite(np.delete(scores, 2)).all()


# --- what logprob means for discrete columns -----------------------------------------------------------


# An all-categorical table's probabilities summing to 1 exactly: tests/test_discrete.py.


# --- missing values ------------------------------------------------------------------------------------


def test_sampled_missing_rates_follow_penguins(penguins_model: Model) -> None:
    real = pd.read_csv(PENGUINS)
    sample = penguins_model.sample(20000, seed=0)
    rates = pd.DataFrame({"real": real.isna().mean(), "sampled": sample.isna().mean()})
    for name, row in rates.iterrows():
        if row["real"] == 0:
            assert row["sampled"] == 0, name
        else:
            assert row["sampled"] > 0 and abs(row["sampled"] - row["real"]) < 0.015, (name, row.to_dict())
    assert str(sample["flipper_length_mm"].dtype) == "Int64" and sample["year"].dtype == np.int64
    assert set(sample["sex"].dropna()) == {"female", "male"}


def test_rows_with_missing_values_get_a_finite_logprob(penguins_model: Model) -> None:
    real = pd.read_csv(PENGUINS)
    with_missing = real[real.isna().any(axis=1)]
    assert len(with_missing) >= 5
    assert np.isfinite(penguins_model.log_prob(with_missing)).all()


def test_invalid_values_are_errors_or_neg_inf(penguins_model: Model) -> None:
    frame = pd.read_csv(PENGUINS).head(6)
    frame["island"] = frame["island"].astype(object)
    frame.loc[4, "island"] = "Atlantis"
    with pytest.raises(DataError, match=r"column 'island', row 5: unseen category 'Atlantis'"):
        penguins_model.log_prob(frame)
    scores = penguins_model.log_prob(frame, on_invalid="neg-inf")
    assert np.isneginf(scores[4]) and np.isfinite(np.delete(scores, 4)).all()
    frame = pd.read_csv(PENGUINS).head(6).astype({"body_mass_g": object})
    frame.loc[1, "body_mass_g"] = "heavy"
    with pytest.raises(DataError, match=r"column 'body_mass_g', row 2: 'heavy' is not a number"):
        penguins_model.log_prob(frame, row_offset=0)


# --- the command line: inferred table, anomaly flags, Parquet, streams ------------------------------------


@pytest.fixture(scope="module")
def penguins_ckpt(tmp_path_factory: pytest.TempPathFactory, penguins_model: Model) -> Path:
    path = tmp_path_factory.mktemp("penguins") / "p.flow"
    save_model(penguins_model, str(path))
    return path


def test_fit_prints_the_inferred_columns(tmp_path: Path) -> None:
    result = runner.invoke(app, ["fit", str(PENGUINS), "-o", str(tmp_path / "p.flow"), "--epochs", "1", "--seed", "0"])
    assert result.exit_code == 0, result.stderr
    assert "flipper_length_mm" in result.stderr and "'missing' level" in result.stderr and "integer" in result.stderr
    assert (
        runner.invoke(app, ["fit", str(PENGUINS), "-o", str(tmp_path / "q.flow"), "--epochs", "1", "-q"]).stderr == ""
    )


def test_logprob_flag_below_and_percentile(penguins_ckpt: Path, penguins_model: Model) -> None:
    result = runner.invoke(app, ["logprob", str(penguins_ckpt), str(PENGUINS), "--flag-below", "0.05", "--percentile"])
    assert result.exit_code == 0, result.stderr
    out = pd.read_csv(pd.io.common.StringIO(result.stdout))
    assert list(out.columns[-3:]) == ["logprob", "anomaly", "percentile"]
    quantiles = penguins_model.info["logprob_quantiles"]
    assert quantiles["source"] == "validation" and quantiles["rows"] == penguins_model.info["n_val"]
    # Each row against the quantiles of its pattern of absent cells (quantiles.py): the 5% one.
    data = pd.read_csv(PENGUINS)
    threshold = penguins_model.logprob_threshold(0.05, data)
    np.testing.assert_array_equal(out["anomaly"].to_numpy(), out["logprob"].to_numpy() < threshold)
    assert len(np.unique(threshold)) > 1  # rows with missing cells have thresholds of their own
    assert out["percentile"].between(0, 100).all()
    patterns = pd.Series(map(tuple, penguins_model.absent_cells(data)))
    for _, rows in out.groupby(patterns.to_numpy()):
        order = np.argsort(rows["logprob"].to_numpy())
        assert np.all(np.diff(rows["percentile"].to_numpy()[order]) >= 0)  # monotone in logprob, per pattern
    bad = runner.invoke(app, ["logprob", str(penguins_ckpt), str(PENGUINS), "--flag-below", "5"])
    assert bad.exit_code == 1 and "--flag-below" in bad.stderr


def test_cli_unseen_category_names_column_value_row_and_neg_inf(penguins_ckpt: Path) -> None:
    text = PENGUINS.read_text().replace("Adelie,Dream", "Adelie,Atlantis", 1)
    row = next(i for i, line in enumerate(text.splitlines()) if "Atlantis" in line)
    result = runner.invoke(app, ["logprob", str(penguins_ckpt), "-"], input=text)
    assert result.exit_code == 1 and result.stderr.strip() == (
        f"Error: stdin: column 'island', row {row}: unseen category 'Atlantis' (known: 'Biscoe', 'Dream', 'Torgersen')"
    )
    result = runner.invoke(app, ["logprob", str(penguins_ckpt), "-", "--on-invalid", "neg-inf"], input=text)
    assert result.exit_code == 0
    scores = pd.read_csv(pd.io.common.StringIO(result.stdout))["logprob"]
    assert np.isneginf(scores.iloc[row - 1]) and np.isfinite(scores.drop(index=row - 1)).all()


def test_parquet_in_and_out_keeps_dtypes(tmp_path: Path) -> None:
    frame = mixed(400).drop(columns="id")
    frame["colour"] = frame["colour"].astype("category")
    data = tmp_path / "t.parquet"
    frame.to_parquet(data)
    ckpt = tmp_path / "t.flow"
    assert runner.invoke(app, ["fit", str(data), "-o", str(ckpt), "--epochs", "2", "-q", "--seed", "0"]).exit_code == 0
    out = tmp_path / "s.parquet"
    result = runner.invoke(app, ["sample", str(ckpt), "-n", "50", "-o", str(out), "--seed", "0"])
    assert result.exit_code == 0, result.stderr
    sample = pd.read_parquet(out)
    assert list(sample.columns) == list(frame.columns)
    assert sample.dtypes.astype(str).to_dict() == frame.dtypes.astype(str).to_dict()
    scored = tmp_path / "scored.parquet"
    result = runner.invoke(app, ["logprob", str(ckpt), str(data), "-o", str(scored), "--chunk-size", "128"])
    assert result.exit_code == 0, result.stderr
    back = pd.read_parquet(scored)
    assert len(back) == 400 and np.isfinite(back["logprob"]).all()
    np.testing.assert_allclose(back["logprob"], load_model(str(ckpt), dtype=torch.float32).log_prob(frame))


def test_rows_arriving_slowly_come_out_before_stdin_closes(penguins_ckpt: Path) -> None:
    lines = PENGUINS.read_text().splitlines()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowcli", "logprob", str(penguins_ckpt), "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(("\n".join(lines[:3]) + "\n").encode())
        proc.stdin.flush()
        received = lines_within(proc.stdout, 3, 120)  # generous: the interpreter and torch start on a busy machine
        assert received.count(b"\n") == 3, received  # header + 2 rows, while stdin is still open
        assert proc.poll() is None
        proc.stdin.write((lines[3] + "\n").encode())
        proc.stdin.close()
        rest = proc.stdout.read()
        assert proc.wait(timeout=60) == 0
        assert (received + rest).decode().count("\n") == 4
    finally:
        proc.kill()


def test_decode_of_encode_gives_back_the_labels_and_integers(mixed_model: Model) -> None:
    frame = mixed(60, seed=4)
    back = mixed_model.decode(mixed_model.encode(frame))
    expected = frame.drop(columns="id")
    pd.testing.assert_frame_equal(back.drop(columns="x"), expected.drop(columns="x"))
    np.testing.assert_allclose(back["x"], expected["x"], atol=1e-6)


def test_integers_and_dates_are_not_piled_up_on_the_ends_of_their_range() -> None:
    """Samples keep to an integer or date column's training range by drawing again the rows beyond it, not
    by clipping them: clipped, the density's mass beyond the range piled up on its first and last values
    (69 of 2,000 samples on the last day of a table with 4 rows a day, where no other day got 15)."""
    rng = np.random.default_rng(0)
    n = 2000
    days = rng.integers(0, 200, n)
    frame = pd.DataFrame(
        {
            "day": (pd.Timestamp("2021-01-01") + pd.to_timedelta(days, unit="D")).strftime("%Y-%m-%d"),
            "qty": rng.integers(0, 50, n),
            "x": rng.normal(size=n),
        }
    )
    model = fit(frame, parse_config({"layers": [{"type": "maf", "hidden": [16]}]}), epochs=3, seed=0)
    sample = model.sample(8000, seed=1)
    for name, values in (("day", 200), ("qty", 50)):
        counts = sample[name].value_counts()
        ends = (
            counts[[frame[name].min(), frame[name].max()]]
            if name == "qty"
            else counts[[min(counts.index), max(counts.index)]]
        )
        assert set(sample[name]) <= set(frame[name]), name
        # Each value holds 1/values of the rows in the data; the ends may hold a few times that, not 10 times.
        assert ends.max() < 4 * len(sample) / values, (name, ends.to_dict(), counts.head().to_dict())


def test_outside_sampled_counts_what_rounds_outside_the_range_and_only_drawn_values() -> None:
    frame = pd.DataFrame({"qty": np.tile(np.arange(1, 41), 10), "x": np.linspace(0.5, 1, 400)})  # no 0: no atom
    frame.loc[::7, "qty"] = np.nan  # a state feature (value or missing) before the value feature
    schema = Schema.infer(frame)
    features = schema.to_features(frame.iloc[:6])[0].copy()
    assert not schema.outside_sampled(features).any()
    qty = [c.name for c in schema.columns].index("qty")
    value = sum(c.width for c in schema.columns[: qty + 1]) - 1
    assert schema.columns[qty].role == "integer" and (schema.columns[qty].low, schema.columns[qty].high) == (1, 40)
    features[:4, value] = [40.4, 40.6, 0.6, 0.4]  # 40.4 rounds to the maximum 40; 40.6 is beyond it
    features[:4, value - 1] = 0.5  # the state "a value"
    assert schema.outside_sampled(features)[:4].tolist() == [False, True, False, True]
    features[1, value - 1] = 1.5  # the state "missing": its value feature is not a value
    assert not schema.outside_sampled(features)[1]
    drawn = np.zeros((len(features), 2), dtype=bool)
    assert not schema.outside_sampled(features, drawn).any()  # observed cells do not count
