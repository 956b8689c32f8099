"""Fixtures shared by the test modules (shared plain helpers are in helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from helpers import SMALL_CONFIG, banana

from flowcli import conditional
from flowcli.config import parse_config
from flowcli.fitting import fit
from flowcli.model import Model, save_model


@pytest.fixture(autouse=True)
def brief_conditional_fit(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that ask no conditional question fit the network of conditional questions briefly (a few
    epochs, no lower bound on the steps): its full fit takes seconds per model, and the suite fits about a
    hundred. Tests marked ``full_conditional_fit`` (the conditional questions' own) fit it as shipped."""
    if request.node.get_closest_marker("full_conditional_fit") is None:
        monkeypatch.setattr(conditional, "MIN_STEPS", 0)
        monkeypatch.setattr(conditional, "PATIENCE", 2)
        monkeypatch.setattr(conditional, "LR_CUTS", 0)


@pytest.fixture(scope="session")
def banana_frame() -> pd.DataFrame:
    return banana(1500)


@pytest.fixture(scope="session")
def banana_model(banana_frame: pd.DataFrame) -> Model:
    import torch

    return fit(banana_frame, parse_config(SMALL_CONFIG), device=torch.device("cpu"), seed=0)


@pytest.fixture(scope="session")
def banana_files(
    tmp_path_factory: pytest.TempPathFactory, banana_frame: pd.DataFrame, banana_model: Model
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("banana")
    csv = root / "banana.csv"
    banana_frame.to_csv(csv, index=False)
    ckpt = root / "banana.flow"
    save_model(banana_model, str(ckpt))
    return {"root": root, "csv": csv, "ckpt": ckpt}
