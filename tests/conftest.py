from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flowcli.config import parse_config
from flowcli.fitting import fit
from flowcli.model import Model, save_model

SMALL_CONFIG = {
    "layers": [{"type": "affine_coupling", "hidden": [32]}, {"type": "permute"}, {"type": "maf", "hidden": [32]}],
    "training": {"epochs": 15, "batch_size": 128, "lr": 0.005},
}


def banana(n: int, seed: int = 0) -> pd.DataFrame:
    """A curved 2-D table with very different scales per column, in 'user units'."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    b = 0.5 * a**2 + 0.4 * rng.normal(size=n)
    return pd.DataFrame({"height_cm": 170 + 8 * a, "weight_kg": 60 + 5 * b})


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


def assert_clean_error(result, *fragments: str) -> None:
    """A CLI result that failed as a user error: exit 1, one line "Error: ..." containing ``fragments``, no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
