"""flowcli.fit, the library call behind `flowcli fit`: what it returns, saves and refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import SMALL_CONFIG, banana
from typer.testing import CliRunner

import flowcli
from flowcli.cli import app
from flowcli.config import parse_config
from flowcli.errors import DataError
from flowcli.train import EpochReport, Interrupted

runner = CliRunner()


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return banana(600, seed=3)


def test_fit_returns_a_model_that_scores_samples_saves_and_loads(table: pd.DataFrame, tmp_path: Path) -> None:
    model = flowcli.fit(table, SMALL_CONFIG, epochs=2, seed=0, device="cpu")
    scores = model.log_prob(table)
    assert scores.shape == (len(table),) and np.isfinite(scores).all()
    synthetic = model.sample(50, seed=1)
    assert list(synthetic.columns) == list(table.columns) and len(synthetic) == 50
    assert model.info["epochs_run"] == 2 and model.info["seed"] == 0
    model.save(tmp_path / "m.flow")
    loaded = flowcli.load(str(tmp_path / "m.flow"))
    np.testing.assert_allclose(loaded.log_prob(table), scores, rtol=1e-6, atol=1e-6)


def test_the_library_and_the_command_fit_the_same_model(table: pd.DataFrame, tmp_path: Path) -> None:
    """One fit path: `flowcli fit` is flowcli.fit plus printing, bit for bit."""
    csv = tmp_path / "t.csv"
    table.to_csv(csv, index=False)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(SMALL_CONFIG))
    result = runner.invoke(app, ["fit", str(csv), "-c", str(config), "-o", str(tmp_path / "cli.flow"), "--seed", "4"])
    assert result.exit_code == 0, result.stderr
    library = flowcli.fit(str(csv), str(config), seed=4, output=tmp_path / "lib.flow")
    assert (tmp_path / "lib.metrics.jsonl").exists()  # the metrics file goes beside the checkpoint, as for the CLI
    cli = flowcli.load(str(tmp_path / "cli.flow"))
    for key, value in cli.flow.state_dict().items():
        assert torch.equal(value, flowcli.load(str(tmp_path / "lib.flow")).flow.state_dict()[key]), key
    assert library.info["best_val_nll"] == cli.info["best_val_nll"]


def test_a_config_object_is_not_changed_by_epochs(table: pd.DataFrame) -> None:
    config = parse_config(SMALL_CONFIG)
    before = config.training.epochs
    flowcli.fit(table, config, epochs=1, seed=0)
    assert config.training.epochs == before


def test_an_interrupted_fit_keeps_its_best_model_and_saves_it(table: pd.DataFrame, tmp_path: Path) -> None:
    def stop_after_two(report: EpochReport) -> None:
        if report.epoch == 2:
            raise KeyboardInterrupt

    out = tmp_path / "stopped.flow"
    with pytest.raises(Interrupted) as stopped:
        flowcli.fit(table, SMALL_CONFIG, epochs=5, seed=0, output=out, on_epoch=stop_after_two)
    assert stopped.value.model is not None and stopped.value.model.info["epochs_run"] == 2
    assert stopped.value.exit_code == 130
    assert flowcli.load(str(out)).info["stopped"] == "interrupted"
    resumed = flowcli.fit(table, resume=out, epochs=3)
    assert resumed.info["epochs_run"] == 3


def test_resume_refuses_a_config_or_seed(table: pd.DataFrame, tmp_path: Path) -> None:
    out = tmp_path / "m.flow"
    flowcli.fit(table, SMALL_CONFIG, epochs=1, seed=0, output=out)
    with pytest.raises(DataError, match="drop -c/--seed"):
        flowcli.fit(table, SMALL_CONFIG, resume=out, epochs=2)


def test_streaming_needs_a_path(table: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="give the path"):
        flowcli.fit(table, SMALL_CONFIG, stream=True)


def test_a_frame_with_number_labels_is_fitted_and_asked_by_those_labels() -> None:
    """A frame built from a numpy array has the column labels 0, 1, 2; the model stores names ('0', '1',
    '2'), and every call takes the frame as it is (before: "missing column '0'" at the fit)."""
    frame = pd.DataFrame(np.random.default_rng(1).normal(size=(200, 3)))
    model = flowcli.fit(frame, SMALL_CONFIG, epochs=1, seed=0, threads=1)
    assert model.schema.names == ["0", "1", "2"]
    assert np.isfinite(model.log_prob(frame)).all()
    np.testing.assert_allclose(
        model.decode(model.encode(frame.head(5))).to_numpy(), frame.head(5).to_numpy(), atol=1e-6
    )
    holes = frame.head(3).copy()
    holes.iloc[0, 1] = np.nan
    assert not model.impute(holes).isna().any().any()
    assert (model.sample(4, seed=0, given=pd.DataFrame({0: [0.5]}))["0"] == 0.5).all()
    assert (model.sample(4, seed=0, given={0: 0.5})["0"] == 0.5).all()  # a mapping's labels too
    with pytest.raises(DataError, match="column '1' appears more than once"):
        flowcli.fit(pd.DataFrame({1: [1.0, 2, 3, 4], "1": [3.0, 4, 5, 1]}), SMALL_CONFIG, epochs=1)


def test_encode_and_decode_keep_the_rows_index_labels(table: pd.DataFrame) -> None:
    """Row for row, as impute does: decode(encode(df)) lines up with df (it came back indexed 0..n-1)."""
    model = flowcli.fit(table, SMALL_CONFIG, epochs=1, seed=0, threads=1)
    rows = table.iloc[[5, 2, 9]].set_axis([1000, 1003, 1007])
    latent = model.encode(rows)
    assert list(latent.index) == [1000, 1003, 1007]
    back = model.decode(latent)
    assert list(back.index) == [1000, 1003, 1007]
    np.testing.assert_allclose(back.to_numpy(), rows.to_numpy(), atol=1e-6)


def test_a_categorical_dtypes_unused_categories_stay_in_the_outputs_dtype(tmp_path: Path) -> None:
    """Synthetic and real frames share a dtype (before: 'unused' was dropped, and the frames' categories
    differed); the model gives the unused category probability 0."""
    rng = np.random.default_rng(0)
    dtype = pd.CategoricalDtype(["lo", "unused", "mid"], ordered=True)
    frame = pd.DataFrame(
        {"level": pd.Categorical(rng.choice(["lo", "mid"], 300), dtype=dtype), "x": rng.normal(size=300)}
    )
    model = flowcli.fit(frame, SMALL_CONFIG, epochs=1, seed=0, threads=1)
    model.save(tmp_path / "m.flow")
    for m in (model, flowcli.load(str(tmp_path / "m.flow"))):
        drawn = m.sample(50, seed=0)
        assert drawn["level"].dtype == dtype and set(drawn["level"]) <= {"lo", "mid"}
    assert np.isneginf(model.log_prob(frame.head(1).assign(level="unused"), on_invalid="neg-inf")).all()


def test_encoding_a_value_outside_the_support_names_its_column_and_row() -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"x": rng.normal(size=300), "price": rng.lognormal(3, 1, 300)})  # price > 0: support > 0
    model = flowcli.fit(frame, SMALL_CONFIG, epochs=1, seed=0, threads=1)
    with pytest.raises(DataError, match=r"column 'price', row 2: -5\.0 is outside its column's support"):
        model.encode(frame.head(3).assign(price=[1.0, -5.0, 2.0]))
