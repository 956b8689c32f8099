"""Anomaly thresholds per missingness pattern (``flowcli/quantiles.py``): a row is compared with the
held-out rows that miss the same cells, so a row with missing cells is flagged as readily as a complete one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import flowcli
from flowcli.cli import app
from flowcli.model import Model
from flowcli.quantiles import MIN_PATTERN_ROWS, QUANTILE_LEVELS, StoredQuantiles, logprob_quantiles

runner = CliRunner()

TINY = {
    "layers": [{"type": "spline_autoregressive", "hidden": [16], "repeat": 1}],
    "training": {"val_fraction": 0.25, "batch_size": 256},
}


def missing(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """The absent cells of rows of these columns (as ``Schema.absent_cells`` gives them) where only
    missing values make a cell absent."""
    return frame[columns].isna().to_numpy()


def table(n: int = 2000, seed: int = 0) -> pd.DataFrame:
    """``b`` (in thousands: a low density per unit) is missing in 30% of the rows, ``c`` in 3%: the
    patterns none and {b} have enough held-out rows, {c} and {b, c} do not."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    frame = pd.DataFrame({"a": a, "b": 1000 * (a + 0.5 * rng.normal(size=n)), "c": rng.choice(["x", "y", "z"], size=n)})
    frame.loc[rng.random(n) < 0.3, "b"] = np.nan
    frame.loc[rng.random(n) < 0.03, "c"] = None
    return frame


@pytest.fixture(scope="module")
def model() -> Model:
    return flowcli.fit(table(), TINY, epochs=2, seed=0)


@pytest.fixture(scope="module")
def ckpt(model: Model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("patterns") / "m.flow"
    model.save(path)
    return path


def test_fit_stores_quantiles_per_pattern_with_enough_held_out_rows(model: Model) -> None:
    stored = model.info["logprob_quantiles"]
    # Only the columns whose cells can be absent (missing values or atoms) make patterns.
    assert stored["version"] == 2 and stored["pattern_columns"] == ["b", "c"]
    held_out = [p for p in stored["patterns"] if p["source"] == "held-out"]
    assert [p["absent"] for p in held_out] == [[], ["b"]]  # most rows first
    rows = [p["rows"] for p in held_out]
    assert min(rows) >= MIN_PATTERN_ROWS and sum(rows) < stored["rows"]  # {c} and {b, c}: too rare here...
    # ... so their quantiles come from rows the model sampled, which hold enough of them.
    sampled = [p for p in stored["patterns"] if p["source"] == "sampled"]
    assert sorted(p["absent"] for p in sampled) == [["b", "c"], ["c"]]
    assert all(p["rows"] >= MIN_PATTERN_ROWS for p in sampled)
    # Every held-out row's pattern has a grid of its own: none is left to "the nearest pattern" (inspect
    # said those rows were, although they had their sampled grids).
    assert stored["pattern_other_rows"] == 0
    quantiles = StoredQuantiles.from_info(model.info)
    complete, no_b = (quantiles.at((0.05,), p.values)[0][1] for p in quantiles.patterns[:2])
    # No density for b (in thousands) in the rows missing it: their scores are several nats higher.
    assert no_b > complete + 3


def test_an_extreme_row_with_a_missing_cell_is_flagged(model: Model) -> None:
    quantiles = StoredQuantiles.from_info(model.info)
    threshold = quantiles.at((0.01,), quantiles.patterns[1].values)[0][1]  # rows missing b
    rows = pd.DataFrame({"a": [3.2, 0.0], "b": [np.nan, np.nan], "c": ["x", "x"]})
    logprob = model.log_prob(rows)
    assert logprob[0] < threshold < logprob[1]
    assert logprob[0] > quantiles.threshold(0.01)  # the overall threshold would not flag it
    flags = logprob < model.logprob_threshold(0.01, rows)
    assert flags.tolist() == [True, False]
    assert model.logprob_percentile(logprob, rows)[0] < 1.0 < model.logprob_percentile(logprob, rows)[1]


def test_a_rare_pattern_is_compared_with_the_nearest_stored_one() -> None:
    scores = np.random.default_rng(1).normal(size=400)
    index = np.arange(400)
    frame = pd.DataFrame(
        {"a": np.where((index >= 200) & (index < 320), np.nan, 1.0), "b": np.where(index >= 320, np.nan, 1.0), "c": "x"}
    )
    stored = logprob_quantiles(scores, "validation", missing(frame, ["a", "b", "c"]), ["a", "b", "c"])
    quantiles = StoredQuantiles.from_info({"logprob_quantiles": stored})
    assert [(p.absent, p.rows) for p in quantiles.patterns] == [((), 200), (("a",), 120), (("b",), 80)]
    rows = pd.DataFrame(
        {
            "a": [1.0, 1.0, np.nan, 1.0, np.nan],
            "b": [1.0, np.nan, np.nan, np.nan, 1.0],
            "c": ["x", None, None, "x", "x"],
        }
    )
    # none, {b} and {a}: their own; {b, c}: one column from {b}, two from the others; {a, b, c}: two from
    # {a} and from {b}, a tie that goes to the pattern with more held-out rows, {a}.
    assert quantiles.pattern_index(missing(rows, ["a", "b", "c"])).tolist() == [0, 2, 1, 2, 1]
    assert quantiles.pattern_index(np.array([[False, False, True]])).tolist() == [0]
    expected = [np.quantile(scores[sl], 0.05) for sl in (slice(0, 200), slice(200, 320), slice(320, 400))]
    np.testing.assert_allclose(
        quantiles.thresholds(0.05, missing(rows, ["a", "b", "c"])), [expected[i] for i in (0, 2, 1, 2, 1)]
    )
    percentiles = quantiles.percentile(np.full(5, expected[2]), missing(rows, ["a", "b", "c"]))
    assert percentiles[1] == pytest.approx(5.0) and percentiles[3] == pytest.approx(5.0)


def test_without_stored_patterns_every_row_gets_the_overall_quantiles() -> None:
    scores = np.random.default_rng(2).normal(size=60)
    frame = pd.DataFrame({"a": np.where(np.arange(60) < 30, 1.0, np.nan)})  # 30 rows each: too few
    info = {"logprob_quantiles": logprob_quantiles(scores, "validation", missing(frame, ["a"]), ["a"])}
    quantiles = StoredQuantiles.from_info(info)
    assert quantiles.patterns == () and quantiles.other_rows == 60
    rows = np.array([[False], [True]])
    np.testing.assert_allclose(quantiles.thresholds(0.05, rows), np.quantile(scores, 0.05))
    np.testing.assert_allclose(quantiles.percentile(np.zeros(2), rows), quantiles.percentile(np.zeros(2)))
    # Malformed patterns are dropped the same way; the overall quantiles stay usable.
    broken = {"logprob_quantiles": {**info["logprob_quantiles"], "patterns": [{"absent": ["zz"], "values": []}]}}
    assert StoredQuantiles.from_info(broken).patterns == () and StoredQuantiles.from_info(broken).usable


def test_stored_grids_per_pattern_use_the_overall_levels() -> None:
    scores = np.random.default_rng(3).normal(size=200)
    frame = pd.DataFrame({"a": 1.0, "b": np.where(np.arange(200) % 2, 1.0, np.nan)})
    stored = logprob_quantiles(scores, "validation", missing(frame, ["a", "b"]), ["a", "b"])
    assert stored["levels"] == QUANTILE_LEVELS
    assert all(len(p["values"]) == len(QUANTILE_LEVELS) for p in stored["patterns"])
    np.testing.assert_allclose(stored["patterns"][0]["values"][0], scores[1::2].min())  # ties by key: [] first


def test_streaming_in_chunks_gives_the_same_flags_as_one_chunk(ckpt: Path, tmp_path: Path) -> None:
    rows = table(600, seed=5)
    rows.loc[0, ["a", "b"]] = [3.5, np.nan]
    data = tmp_path / "rows.csv"
    rows.to_csv(data, index=False)
    outs = []
    for chunk in ("600", "7"):
        args = ["logprob", str(ckpt), str(data), "--flag-below", "0.05", "--percentile", "--chunk-size", chunk]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.stderr
        outs.append(pd.read_csv(pd.io.common.StringIO(result.stdout)))
    pd.testing.assert_frame_equal(outs[0], outs[1])
    assert bool(outs[0]["anomaly"][0])
    stored = StoredQuantiles.from_info(flowcli.load(ckpt).info)
    expected = outs[0]["logprob"].to_numpy() < stored.thresholds(0.05, flowcli.load(ckpt).absent_cells(rows))
    np.testing.assert_array_equal(outs[0]["anomaly"].to_numpy(), expected)


def test_inspect_shows_the_patterns_and_their_rows(ckpt: Path, model: Model) -> None:
    result = runner.invoke(app, ["inspect", str(ckpt)], env={"COLUMNS": "240"})
    assert result.exit_code == 0, result.stderr
    patterns = model.info["logprob_quantiles"]["patterns"]
    assert "absent: none (complete rows)" in result.stdout and "absent: b" in result.stdout
    assert f"from {patterns[1]['rows']} held-out rows" in result.stdout
    assert f"from {patterns[-1]['rows']} sampled rows" in result.stdout
    assert "absent: other patterns" not in result.stdout  # every pattern has its grid


def test_report_lists_the_thresholds_of_each_pattern(model: Model) -> None:
    from flowcli.report import pattern_thresholds

    shown = pattern_thresholds(StoredQuantiles.from_info(model.info), (0.01, 0.05))
    stored = model.info["logprob_quantiles"]["patterns"]
    assert [(p["absent"], p["rows"]) for p in shown] == [(p["absent"], p["rows"]) for p in stored]
    assert shown[1]["quantiles"]["0.05"] == pytest.approx(np.interp(0.05, QUANTILE_LEVELS, stored[1]["values"]))
    complete_only = logprob_quantiles(np.zeros(100), "validation", np.zeros((100, 1), dtype=bool), ["a"])
    assert pattern_thresholds(StoredQuantiles.from_info({"logprob_quantiles": complete_only})) == []


@pytest.mark.parametrize("columns", [0, 1, 9, 64, 70])
def test_rows_are_grouped_by_pattern_as_np_unique_does(columns: int) -> None:
    from flowcli.quantiles import _patterns

    mask = np.random.default_rng(columns).random((500, columns)) < 0.05
    mask[:3] = True
    keys, inverse = _patterns(mask)
    np.testing.assert_array_equal(keys[inverse], mask)  # each row's key is its own pattern
    assert len(keys) == len(np.unique(mask, axis=0)) and len(np.unique(inverse)) == len(keys)


def test_a_few_dozen_complete_rows_are_ranked_against_the_models_own_rows() -> None:
    """20 complete rows hold out 2: quantiles of those ranked 17 of the 20 training rows at percentile 100.
    The model's sampled rows give the scale instead (as for a pattern too rare among held-out rows)."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": np.round(rng.normal(5, 1, 20), 2), "y": np.round(rng.normal(0, 2, 20), 3)})
    small = flowcli.fit(frame, config="maf", epochs=5, seed=0)
    stored = small.info["logprob_quantiles"]
    assert stored["source"] == "sampled" and stored["rows"] >= MIN_PATTERN_ROWS
    percentiles = small.logprob_percentile(small.log_prob(frame), frame)
    assert 20 < np.median(percentiles) < 90 and (percentiles >= 99.9).sum() <= 3
