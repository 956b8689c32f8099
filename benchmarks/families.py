"""Every packaged preset (one per flow family) fitted on the same table: test log-likelihood and fit time.

Loops over ``flowcli/presets/*.yaml``, so a family added there (umnn, sos, residual, cnf, ...) is
benchmarked without changing this script. Each preset is fitted with its own training settings on
80% of the rows (split with numpy seed 0; the fit itself uses ``seed=0``, and takes its validation
split for early stopping from those 80%), then scored on the other 20%: the reported figure is the
mean natural-log density of the held-out rows in the units of the data (higher is better).

    python benchmarks/families.py                                  # all presets, penguin_measures.csv
    python benchmarks/families.py nsf glow --data data-samples/magic_gamma.csv

Prints a Markdown table on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flowcli.config import load_config  # noqa: E402  (after the sys.path line above)
from flowcli.fitting import fit  # noqa: E402

PRESETS = ROOT / "flowcli" / "presets"


def split(frame: pd.DataFrame, test_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    order = np.random.default_rng(seed).permutation(len(frame))
    n_test = round(len(frame) * test_fraction)
    return frame.iloc[order[n_test:]].reset_index(drop=True), frame.iloc[order[:n_test]].reset_index(drop=True)


def describe(config) -> str:  # type: ignore[no-untyped-def]
    """e.g. ``5 x spline_autoregressive, base normal``."""
    counts: dict[str, int] = {}
    for spec in config.layers:
        counts[spec.type] = counts.get(spec.type, 0) + 1
    layers = ", ".join(f"{n} x {t}" if n > 1 else t for t, n in counts.items())
    return f"{layers}; base {config.base.type}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("presets", nargs="*", help="preset names (default: every preset in flowcli/presets)")
    parser.add_argument("--data", default=str(ROOT / "data-samples" / "penguin_measures.csv"))
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="override training.epochs of every preset")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    names = args.presets or sorted(p.stem for p in PRESETS.glob("*.yaml"))
    frame = pd.read_csv(args.data)
    train, test = split(frame, args.test_fraction, args.seed)
    print(
        f"{Path(args.data).name}: {len(train)} training rows, {len(test)} test rows, "
        f"{frame.shape[1]} columns; torch {torch.__version__}, {torch.get_num_threads()} threads",
        file=sys.stderr,
    )
    rows = []
    for name in names:
        config = load_config(PRESETS / f"{name}.yaml")
        if args.epochs is not None:
            config.training.epochs = args.epochs
        print(f"fitting {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        model = fit(train, config, device=torch.device("cpu"), seed=args.seed)
        seconds = time.perf_counter() - started
        logprob = model.log_prob(test)
        finite = bool(np.isfinite(logprob).all())
        nan_free = all(np.isfinite(m["train_nll"]) for m in model.info["metrics"])
        rows.append(
            (name, describe(config), float(np.mean(logprob)), finite and nan_free, model.info["epochs_run"], seconds)
        )
        print(f"  {name}: test logprob {rows[-1][2]:.3f}, {seconds:.1f} s", file=sys.stderr, flush=True)

    print("| preset | layers | test logprob (mean, nats) | all finite | epochs | fit seconds |")
    print("|---|---|---:|---|---:|---:|")
    for name, what, lp, ok, epochs, seconds in rows:
        print(f"| {name} | {what} | {lp:.3f} | {'yes' if ok else 'NO'} | {epochs} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
