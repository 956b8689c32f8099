"""Scoring speed of a mixed table against the same rows without their discrete parts (issue 14).

Rows: ``data-samples/magic_gamma.csv`` (10 continuous columns) resampled with replacement to
``--score-rows`` rows (seeded). Two tables of those rows:
- **numeric**: the 10 continuous columns as they are (no categories, no missing values, no repeated
  values: nothing discrete);
- **mixed**: the same 10 columns plus the discrete parts a real table has: two categorical columns
  (``size_band``: 4 labels from fSize's quartiles; ``source``: 3 labels drawn at random, 60/30/10%),
  5% missing values in fM3Long (at random) and 25% exact zeros in fAlpha (its lowest quarter set to 0.0).

Both are fitted with the same config (``--config``, default: the packaged default) on their first
``--fit-rows`` rows for ``--epochs`` epochs (speed does not depend on how well the model is trained),
then ``model.log_prob`` (public API, float32, one torch thread) times the whole table; best of
``--repeats``. If one pass would take longer than ``--budget`` seconds (estimated on a first 2,000-row
pass), fewer rows are timed and the table says how many. Prints rows/s of both and the ratio
numeric / mixed (how many times slower a mixed row is; 1 = as fast).

    nice -n 19 python benchmarks/mixed_scoring.py                           # 200,000 rows, best of 3
    nice -n 19 python benchmarks/mixed_scoring.py --score-rows 20000 --repeats 1   # smoke run

Recorded figures: benchmarks/MIXED.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch load their thread pools

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
PROBE_ROWS = 2000


def make_tables(rows: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The numeric table (magic_gamma's columns, resampled) and the mixed table of the same rows."""
    rng = np.random.default_rng(seed)
    source = pd.read_csv(ROOT / "data-samples" / "magic_gamma.csv")
    numeric = source.iloc[rng.integers(0, len(source), rows)].reset_index(drop=True)
    mixed = numeric.copy()
    cuts = source["fSize"].quantile([0.25, 0.5, 0.75]).to_numpy()
    mixed["size_band"] = np.array(["small", "medium", "large", "huge"], dtype=object)[
        np.searchsorted(cuts, numeric["fSize"])
    ]
    mixed["source"] = rng.choice(np.array(["web", "store", "phone"], dtype=object), rows, p=[0.6, 0.3, 0.1])
    mixed.loc[rng.random(rows) < 0.05, "fM3Long"] = np.nan
    mixed.loc[mixed["fAlpha"] <= source["fAlpha"].quantile(0.25), "fAlpha"] = 0.0
    return numeric, mixed


def describe(frame: pd.DataFrame) -> str:
    """Columns, categorical columns, missing and zero shares of a table, in one line."""
    cats = [c for c in frame.columns if frame[c].dtype == object]
    missing = {c: f"{100 * v:.1f}%" for c, v in frame.isna().mean().items() if v > 0}
    zeros = {c: f"{100 * v:.1f}%" for c, v in (frame.select_dtypes("number") == 0).mean().items() if v > 0}
    return f"{frame.shape[1]} columns, categorical {cats or 'none'}, missing {missing or 'none'}, exact zeros {zeros or 'none'}"


def rows_per_second(model: Any, frame: pd.DataFrame, repeats: int) -> float:
    """Best rows/s of ``repeats`` passes of ``model.log_prob`` over ``frame``."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        scores = model.log_prob(frame)
        best = min(best, time.perf_counter() - started)
        assert len(scores) == len(frame)
    return len(frame) / best


def timed_rows(model: Any, frame: pd.DataFrame, budget: float) -> int:
    """How many rows fit one pass into ``budget`` seconds, judged on a first PROBE_ROWS-row pass."""
    rate = rows_per_second(model, frame.head(PROBE_ROWS), 1)
    if len(frame) / rate <= budget:
        return len(frame)
    return max(PROBE_ROWS, int(rate * budget) // 1000 * 1000)


def measure(name: str, frame: pd.DataFrame, args: argparse.Namespace) -> tuple[float, int, float]:
    """Fit on the first rows, then time scoring: (rows/s, rows timed, fit seconds)."""
    import flowcli

    print(f"{name}: {describe(frame)}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    model = flowcli.fit(
        frame.head(args.fit_rows), args.config, epochs=args.epochs, seed=args.seed, device="cpu", threads=1
    )
    fit_seconds = time.perf_counter() - started
    rows = timed_rows(model, frame, args.budget)
    rate = rows_per_second(model, frame.head(rows), args.repeats)
    print(f"{name}: {rate:,.0f} rows/s on {rows:,} rows", file=sys.stderr, flush=True)
    return rate, rows, fit_seconds


def main(argv: list[str] | None = None) -> None:
    """Time both tables and print rows/s and their ratio as Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--score-rows", type=int, default=200_000, help="rows scored per pass")
    parser.add_argument("--fit-rows", type=int, default=5000, help="rows the models are fitted on")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (speed does not need a good fit)")
    parser.add_argument("--config", default=None, help="config path or preset name (default: the packaged default)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the best counts")
    parser.add_argument(
        "--budget", type=float, default=60.0, help="seconds one pass may take before fewer rows are timed"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    numeric, mixed = make_tables(args.score_rows, args.seed)
    num_rate, num_rows, num_fit = measure("numeric", numeric, args)
    mix_rate, mix_rows, mix_fit = measure("mixed", mixed, args)
    print(f"| table | columns | rows timed | rows/s (best of {args.repeats}) | fit s |")
    print("|---|---|---|---|---|")
    print(f"| numeric | {describe(numeric)} | {num_rows:,} | {num_rate:,.0f} | {num_fit:.0f} |")
    print(f"| mixed | {describe(mixed)} | {mix_rows:,} | {mix_rate:,.0f} | {mix_fit:.0f} |")
    print(
        f"\nratio numeric / mixed rows/s: **{num_rate / mix_rate:.1f}x** (1 = a mixed row scores as fast as a numeric one)"
    )


if __name__ == "__main__":
    main()
