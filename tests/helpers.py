"""Helpers shared by several test modules: import them from here (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import select
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from flowcli import conditional
from flowcli.model import Model

ROOT = Path(__file__).resolve().parents[1]  # the repository: shipped data samples, configs, README

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


def grid_integral(model: Model, frame: pd.DataFrame, points: int = 200, margin: float = 0.6) -> float:
    """Riemann sum of exp(logprob) over a box around the data, in data units."""
    cols = list(frame.columns)
    lo, hi = frame.min(), frame.max()
    span = hi - lo
    axes = [np.linspace(lo[c] - margin * span[c], hi[c] + margin * span[c], points) for c in cols]
    xx, yy = np.meshgrid(*axes, indexing="ij")
    grid = pd.DataFrame({cols[0]: xx.ravel(), cols[1]: yy.ravel()})
    density = np.exp(model.log_prob(grid))
    cell = (axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0])
    return float(density.sum() * cell)


def assert_clean_error(result, *fragments: str) -> None:
    """A CLI result that failed as a user error: exit 1, one line "Error: ..." containing ``fragments``, no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# The conditional network's fit in tests that ask it nothing (conftest.brief_conditional_fit).
BRIEF_CONDITIONAL_FIT = {"MIN_STEPS": 0, "PATIENCE": 2, "LR_CUTS": 0}
SHIPPED_CONDITIONAL_FIT = {name: getattr(conditional, name) for name in BRIEF_CONDITIONAL_FIT}


@contextmanager
def shipped_conditional_fit() -> Iterator[None]:
    """Fit the network of conditional questions as shipped inside the block (tests/conftest.py makes it brief)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in SHIPPED_CONDITIONAL_FIT.items():
            patch.setattr(conditional, name, value)
        # The whole budget whatever the joint's epochs: tests fit the joint briefly and ask the network questions
        # whose answers they check (conditional.budget_share scales it down for short fits).
        patch.setattr(conditional, "FULL_BUDGET_EPOCHS", 1)
        yield


def shop_table(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """A small mixed table for conditional questions: a category with a rare label (``c``, 3%), ZIP codes
    with leading zeros, two correlated numbers (``x`` with 10% missing cells) and a count."""
    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b", "c"], size=n, p=[0.7, 0.27, 0.03])
    x = rng.normal(size=n) + 2.0 * (group == "c")
    y = 3.0 * x + rng.normal(size=n)
    x[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame(
        {
            "group": group,
            "zip": rng.choice(["00501", "02134", "10001"], size=n),
            "x": np.round(x, 3),
            "y": np.round(y, 3),
            "count": rng.poisson(4, size=n),
        }
    )


def lines_within(stream: Any, count: int, seconds: float) -> bytes:
    """What a subprocess's ``stream`` sends until ``count`` lines have arrived or ``seconds`` have passed,
    without blocking on a read (the tests of streaming check rows arrive while stdin is still open)."""
    received, deadline = b"", time.monotonic() + seconds
    while received.count(b"\n") < count and time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 0.5)
        if ready:
            received += os.read(stream.fileno(), 65536)
    return received
