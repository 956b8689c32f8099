"""The whole model, preprocessing included: a normalized density in the user's units, and MLE fits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import grid_integral

from flowcli.config import parse_config
from flowcli.fitting import fit
from flowcli.model import Model, load_model


def test_density_integrates_to_one_in_data_units(banana_model: Model, banana_frame: pd.DataFrame) -> None:
    total = grid_integral(banana_model, banana_frame)
    assert abs(total - 1) < 0.02, total


def test_loaded_model_scores_like_the_fitted_one(
    banana_model: Model, banana_files: dict, banana_frame: pd.DataFrame
) -> None:
    loaded = load_model(str(banana_files["ckpt"]))
    np.testing.assert_allclose(
        loaded.log_prob(banana_frame.head(50)), banana_model.log_prob(banana_frame.head(50)), atol=1e-5
    )
    assert loaded.info["best_epoch"] == banana_model.info["best_epoch"]


def test_encode_decode_round_trip_and_sample_columns(banana_model: Model, banana_frame: pd.DataFrame) -> None:
    z = banana_model.encode(banana_frame.head(100))
    assert list(z.columns) == ["z0", "z1"]
    back = banana_model.decode(z)
    np.testing.assert_allclose(back.to_numpy(), banana_frame.head(100).to_numpy(), atol=1e-6)
    s = banana_model.sample(300, seed=3)
    assert list(s.columns) == list(banana_frame.columns) and len(s) == 300
    pd.testing.assert_frame_equal(s, banana_model.sample(300, seed=3))
    # Samples follow the data: their means are within a few standard errors of the data's.
    assert (abs(s.mean() - banana_frame.mean()) < 4 * banana_frame.std() / np.sqrt(300)).all()


def test_columns_matched_by_name_not_position(banana_model: Model, banana_frame: pd.DataFrame) -> None:
    shuffled = banana_frame.head(20)[["weight_kg", "height_cm"]].assign(extra=1)
    np.testing.assert_allclose(banana_model.log_prob(shuffled), banana_model.log_prob(banana_frame.head(20)))


def test_gaussian_fit_reaches_the_analytic_maximum_likelihood() -> None:
    rng = np.random.default_rng(0)
    cov = np.array([[4.0, 1.2, -0.6], [1.2, 1.0, 0.3], [-0.6, 0.3, 0.5]])
    x = rng.multivariate_normal([10.0, -3.0, 0.5], cov, size=3000)
    frame = pd.DataFrame(x, columns=["a", "b", "c"])
    cov_mle = np.cov(x, rowvar=False, bias=True)
    d = x.shape[1]
    best_possible = -0.5 * d * (1 + np.log(2 * np.pi)) - 0.5 * np.linalg.slogdet(cov_mle)[1]
    config = parse_config(
        {
            "layers": [{"type": "linear"}, {"type": "actnorm"}],
            "training": {"epochs": 150, "lr": 0.02, "val_fraction": 0.0, "batch_size": 1000, "patience": 150},
        }
    )
    model = fit(frame, config, device=torch.device("cpu"), seed=0)
    reached = float(model.log_prob(frame).mean())
    assert reached <= best_possible + 1e-6  # nothing beats the MLE ...
    assert best_possible - reached < 0.05, (best_possible, reached)  # ... and we get within 0.05 nats


def test_fit_is_reproducible_with_a_seed(banana_frame: pd.DataFrame) -> None:
    config = parse_config({"layers": [{"type": "maf", "hidden": [16]}], "training": {"epochs": 3}})
    a = fit(banana_frame, config, device=torch.device("cpu"), seed=7)
    b = fit(banana_frame, config, device=torch.device("cpu"), seed=7)
    for (name, p), q in zip(a.flow.state_dict().items(), b.flow.state_dict().values(), strict=False):
        assert torch.equal(p, q), name
    assert [m["train_nll"] for m in a.info["metrics"]] == [m["train_nll"] for m in b.info["metrics"]]


def test_early_stopping_keeps_the_best_weights(banana_frame: pd.DataFrame) -> None:
    config = parse_config(
        {
            "layers": [{"type": "maf", "hidden": [64, 64]}],
            "training": {"epochs": 60, "lr": 0.02, "patience": 3, "schedule": "constant"},
        }
    )
    model = fit(banana_frame.head(200), config, device=torch.device("cpu"), seed=0)
    vals = [m["val_nll"] for m in model.info["metrics"]]
    assert model.info["epochs_run"] < 60  # stopped early on a tiny table with a large learning rate
    assert model.info["best_val_nll"] == min(vals)
    assert model.info["epochs_run"] - model.info["best_epoch"] == 3


# One small config per layer family and per base (besides the defaults above): each must give a
# density that integrates to 1 in data units and a decode(encode(x)) round trip within 1e-3.
FAMILY_CONFIGS = {
    "spline_coupling": {"layers": [{"type": "spline_coupling", "hidden": [32], "repeat": 2}]},
    "spline_autoregressive": {"layers": [{"type": "spline_autoregressive", "hidden": [32], "repeat": 2}]},
    "iaf": {"layers": [{"type": "iaf", "hidden": [32], "repeat": 2}]},
    "planar": {"layers": [{"type": "actnorm"}, {"type": "planar", "repeat": 6}]},
    "radial": {"layers": [{"type": "actnorm"}, {"type": "radial", "repeat": 6}]},
    "base_uniform": {"base": {"type": "uniform"}, "layers": [{"type": "maf", "hidden": [32]}]},
    "base_studentt": {"base": {"type": "studentt"}, "layers": [{"type": "maf", "hidden": [32]}]},
    "base_mixture": {"base": {"type": "mixture", "components": 4}, "layers": [{"type": "maf", "hidden": [32]}]},
}


@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
def test_each_family_fits_integrates_to_one_and_round_trips(family: str, banana_frame: pd.DataFrame) -> None:
    config = parse_config({**FAMILY_CONFIGS[family], "training": {"epochs": 4, "batch_size": 256, "lr": 0.005}})
    model = fit(banana_frame, config, device=torch.device("cpu"), seed=0)
    assert all(np.isfinite(m["train_nll"]) for m in model.info["metrics"])
    # The fit moved the model away from its initialization (otherwise the checks below are weak).
    first = model.info["metrics"][0]["train_nll"]
    assert model.info["best_val_nll"] < first
    total = grid_integral(model, banana_frame, points=150)
    assert abs(total - 1) < 0.02, total
    rows = banana_frame.head(200)
    back = model.decode(model.encode(rows))
    np.testing.assert_allclose(back.to_numpy(), rows.to_numpy(), atol=1e-3, rtol=0)
    assert np.isfinite(model.log_prob(model.sample(200, seed=1))).all()


def test_random_variable_orders_survive_save_and_load(tmp_path, banana_frame: pd.DataFrame) -> None:
    """A `random` order cannot be rebuilt from the config: it is saved with the weights, so the loaded
    model samples and decodes like the fitted one."""
    from flowcli.model import save_model

    config = parse_config(
        {"layers": [{"type": "maf", "hidden": [16], "order": "random", "repeat": 3}], "training": {"epochs": 3}}
    )
    fitted = fit(banana_frame, config, device=torch.device("cpu"), seed=1)
    save_model(fitted, str(tmp_path / "r.flow"))
    torch.manual_seed(123)  # a different global RNG state: a rebuilt random order would differ
    loaded = load_model(str(tmp_path / "r.flow"))
    pd.testing.assert_frame_equal(loaded.sample(20, seed=4), fitted.sample(20, seed=4))
    back = loaded.decode(loaded.encode(banana_frame))
    np.testing.assert_allclose(back.to_numpy(), banana_frame.to_numpy(), atol=1e-9)


def test_checkpoints_without_saved_orders_load_or_are_refused_clearly() -> None:
    """Checkpoints written before the order was saved: `alternate` orders are rebuilt from the config;
    a `random` one cannot be, and loading says so instead of sampling from scrambled weights."""
    from flowcli.errors import CheckpointError
    from flowcli.model import Flow, load_weights
    from flowcli.schema import Column, Schema

    schema = Schema([Column(f"x{i}", "continuous", "float64", 0.0, 1.0) for i in range(5)])
    for order, loads in (("alternate", True), ("random", False)):
        config = parse_config({"layers": [{"type": "maf", "hidden": [16], "order": order, "repeat": 2}]})
        torch.manual_seed(0)
        old = {k: v for k, v in Flow(schema, config).state_dict().items() if not k.endswith("made.order")}
        torch.manual_seed(1)
        fresh = Flow(schema, config)
        if loads:
            load_weights(fresh, old, "old.flow")
        else:
            with pytest.raises(CheckpointError, match="variable order does not match"):
                load_weights(fresh, old, "old.flow")
