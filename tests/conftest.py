"""Fixtures shared by the test modules (shared plain helpers are in helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from helpers import BRIEF_CONDITIONAL_FIT, SMALL_CONFIG, banana, shipped_conditional_fit, shop_table

from flowcli import conditional
from flowcli.config import parse_config
from flowcli.fitting import fit
from flowcli.model import Model, save_model


@pytest.fixture(scope="session", autouse=True)
def brief_conditional_fit() -> Iterator[None]:
    """Tests that ask no conditional question fit the network of conditional questions briefly (a few
    epochs, no lower bound on the steps; session fixtures included): its full fit takes seconds per model,
    and the suite fits about a hundred. Tests marked ``full_conditional_fit``, and fixtures that fit inside
    ``helpers.shipped_conditional_fit()``, fit it as shipped."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in BRIEF_CONDITIONAL_FIT.items():
            patch.setattr(conditional, name, value)
        yield


@pytest.fixture(autouse=True)
def marked_full_conditional_fit(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("full_conditional_fit") is None:
        yield
        return
    with shipped_conditional_fit():
        yield


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


@pytest.fixture(scope="session")
def shop_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A checkpoint of ``helpers.shop_table`` (categories, codes, missing cells), fitted for two epochs: the
    tests of the conditional commands check what the commands do, not how good the model is."""
    root = tmp_path_factory.mktemp("shop")
    csv = root / "shop.csv"
    shop_table().to_csv(csv, index=False)
    ckpt = root / "shop.flow"
    config = {**SMALL_CONFIG, "training": {**SMALL_CONFIG["training"], "epochs": 2}}
    # One thread, as the test comparing a fit with it asks for: sums split across threads round differently,
    # and without ``threads`` a fit keeps whatever count an earlier test left.
    save_model(fit(str(csv), parse_config(config), device="cpu", seed=0, threads=1), str(ckpt))
    return {"root": root, "csv": csv, "ckpt": ckpt}
