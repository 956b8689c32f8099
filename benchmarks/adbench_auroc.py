"""AUROC of flowcli's default config (score = -logprob) on the twelve ADBench "Classical" tables.

Protocol (the one of ../shared/data/adbench/BASELINES.md): inliers (label 0) shuffled with numpy
default_rng(0), the first 60% for training; test = the other 40% of inliers + all anomalies. The model
is fitted with the packaged default config, no per-table tuning (flowcli standardizes internally, so
the features go in as they are); test rows are scored with ``on_invalid="neg-inf"`` (a value of a
categorical column never seen in training has probability 0, so -logprob = +inf: most anomalous) and
ranked as ``logprob --percentile`` ranks them (``anomaly_score``). Prints a Markdown table beside the reference detectors.

    python benchmarks/adbench_auroc.py                   # the recorded run (takes a while on 2 cores)
    python benchmarks/adbench_auroc.py --epochs 5 --tables pima,yeast   # smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "adbench"


def read_baselines(path: Path) -> dict[str, dict[str, float]]:
    """The per-table reference AUROCs from BASELINES.md's Markdown table."""
    rows: dict[str, dict[str, float]] = {}
    header: list[str] = []
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or set("".join(cells)) <= set("-: "):
            continue
        if cells[0] == "dataset":
            header = cells[1:]
        elif header and not cells[0].startswith("**"):
            rows[cells[0]] = dict(zip(header, map(float, cells[1:]), strict=False))
    return rows


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUROC with average ranks for ties (so -inf scores tie fairly)."""
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    pos = labels == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    features = frame.drop(columns="label")
    inliers = np.flatnonzero(frame["label"].to_numpy() == 0)
    outliers = np.flatnonzero(frame["label"].to_numpy() == 1)
    order = np.random.default_rng(0).permutation(inliers)
    n_train = int(0.6 * len(order))
    test_idx = np.concatenate([order[n_train:], outliers])
    labels = frame["label"].to_numpy()[test_idx]
    return features.iloc[order[:n_train]].reset_index(drop=True), features.iloc[test_idx].reset_index(drop=True), labels


def anomaly_score(model: Any, test: pd.DataFrame, logprob: np.ndarray) -> np.ndarray:
    """What `logprob --percentile` ranks by: each row's percentile among the reference rows with the same
    absent cells (missing, or on an atom; rows with different absent cells have densities over different
    dimensions), ties (below the lowest or above the highest reference row) broken by the logprob itself.
    Without absent cells this ranks exactly as -logprob."""
    percentile = model.logprob_percentile(logprob, test)
    order = np.lexsort((logprob, percentile))  # ascending: most anomalous first
    score = np.empty(len(order))
    score[order] = np.arange(len(order), 0, -1)
    return score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="override training.epochs (smoke runs only)")
    parser.add_argument("--tables", default="", help="comma-separated subset of tables")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core machine)"
    )
    args = parser.parse_args()

    import torch

    from flowcli.config import load_config
    from flowcli.fitting import fit

    torch.set_num_threads(args.threads)
    baselines = read_baselines(DATA / "BASELINES.md")
    names = [n for n in baselines if not args.tables or n in args.tables.split(",")]
    lines = [
        "| dataset | " + " | ".join(next(iter(baselines.values()))) + " | **flowcli** | epochs (best) | fit s |",
        "|---|" + "---|" * (len(next(iter(baselines.values()))) + 3),
    ]
    print("\n".join(lines), flush=True)
    ours: list[float] = []
    for name in names:
        train, test, labels = split(pd.read_parquet(DATA / f"{name}.parquet"))
        config = load_config(None)
        if args.epochs:
            config.training.epochs = args.epochs
        started = time.perf_counter()
        model = fit(train, config, device=torch.device("cpu"), seed=args.seed)
        seconds = time.perf_counter() - started
        # A category never seen in training has probability 0 under the model: the most anomalous score.
        logprob = model.log_prob(test, on_invalid="neg-inf")
        ours.append(auroc(anomaly_score(model, test, logprob), labels))
        ref = " | ".join(f"{v:.3f}" for v in baselines[name].values())
        print(
            f"| {name} | {ref} | **{ours[-1]:.3f}** | {model.info['epochs_run']} ({model.info['best_epoch']}) | {seconds:.0f} |",
            flush=True,
        )
    means = {k: np.mean([baselines[n][k] for n in names]) for k in next(iter(baselines.values()))}
    print("| **mean** | " + " | ".join(f"{v:.3f}" for v in means.values()) + f" | **{np.mean(ours):.3f}** | | |")


if __name__ == "__main__":
    sys.exit(main())
