"""Imputation error of flowcli's ``model.impute`` against scikit-learn's imputers on real tables (issue 15).

Protocol, per table: numeric columns with more than 10 distinct values are the *measured* columns; other
columns (text, booleans, numbers with at most 10 distinct values) are categorical and stay fully observed
(inputs only). The table is shuffled with ``--seed`` and capped at ``--rows`` rows; then 20% of the
measured cells that hold a value are masked completely at random (each independently with probability
``--missing``, ``numpy.random.default_rng(seed)``). Every method sees only the masked table and fills
its missing cells; cells that were already missing in the source are filled too but not scored.

    NRMSE = sqrt( mean over the masked cells (i, j) of ((imputed_ij - true_ij) / sd_j)^2 )

with sd_j the standard deviation (ddof 0) of column j's true values in the capped table, before masking.
0 is perfect; the column mean imputes with NRMSE close to 1.

Methods:
- ``flowcli``: ``flowcli.fit(masked, seed=seed, threads=1)`` with the default config, fitted on the
  masked table itself as a user would (the fit models missing cells), then ``model.impute(masked)``: the
  conditional mean of each missing number given the observed cells of its row. Categorical columns go
  in as they are. The seconds are fit + impute.
- ``missforest``: MissForest-style ``IterativeImputer(estimator=RandomForestRegressor(n_estimators=100,
  max_features="sqrt", n_jobs=1), max_iter=10, initial_strategy="mean")``; ``max_features="sqrt"`` is the
  R missForest default (``mtry = floor(sqrt(p))``). IterativeImputer's own stopping rule (tol 1e-3) may end
  it before 10 rounds.
- ``mice``: MICE-like ``IterativeImputer(estimator=BayesianRidge(), sample_posterior=False, max_iter=10)``
  (a single chained-equations imputation with posterior-mean predictions, not multiple draws).
- ``knn``: ``KNNImputer(n_neighbors=5)`` (uniform weights, nan-Euclidean distance).
- ``mean``: the mean of the column's observed cells (the floor).

For the scikit-learn methods, measured columns are standardized with the mean and sd of their observed
cells (and mapped back), and categorical columns are one-hot encoded (a missing category is its own
indicator) and appended as fully observed inputs, standardized like the rest.

Tables (``--tables``): ``magic_gamma`` (``data-samples/``, 19,020 x 10), and ADBench tables of
``../shared/data/adbench`` (label dropped): ``pageblocks`` (5,393 x 10), ``annthyroid`` (7,200 x 6),
``wilt`` (4,819 x 5), ``mammography`` (11,183 x 6), ``shuttle`` (49,097 x 9, capped); plus ``penguins``
(``data-samples/``, 344 x 8, with categorical columns and missing cells of its own).

    PYTHONPATH=. python benchmarks/imputation.py                  # the recorded run
    PYTHONPATH=. python benchmarks/imputation.py --methods mean,mice,knn,missforest   # the peers only
    PYTHONPATH=. python benchmarks/imputation.py --tables penguins,wilt --epochs 5     # smoke run

Prints a Markdown table (one row per table, NRMSE and seconds per method) on stdout; progress on stderr.
Recorded figures: benchmarks/CONDITIONAL.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch load their thread pools

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
ADBENCH = ROOT.parent / "shared" / "data" / "adbench"
SAMPLES = ("magic_gamma", "penguins")
TABLES = ("magic_gamma", "pageblocks", "annthyroid", "wilt", "mammography", "shuttle", "penguins")
DEFAULT_TABLES = "magic_gamma,pageblocks,annthyroid,wilt,mammography,penguins"
METHODS = ("flowcli", "missforest", "mice", "knn", "mean")
Imputer = Callable[[pd.DataFrame, list[str], argparse.Namespace], pd.DataFrame]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------- tables


def load_table(name: str) -> pd.DataFrame:
    if name in SAMPLES:
        return pd.read_csv(ROOT / "data-samples" / f"{name}.csv")
    if name in TABLES:
        return pd.read_parquet(ADBENCH / f"{name}.parquet").drop(columns="label")
    raise SystemExit(f"unknown table {name!r}: choose from {', '.join(TABLES)}")


def measured_columns(frame: pd.DataFrame) -> list[str]:
    """Numeric (not boolean) columns with more than 10 distinct values: the ones masked and scored."""
    return [
        c
        for c in frame.columns
        if pd.api.types.is_numeric_dtype(frame[c])
        and not pd.api.types.is_bool_dtype(frame[c])
        and frame[c].nunique() > 10
    ]


def prepare(name: str, args: argparse.Namespace) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, list[str]]:
    """(true table, masked table, mask of the masked cells over the measured columns, measured columns)."""
    frame = load_table(name)
    frame = frame.sample(frac=1.0, random_state=args.seed).reset_index(drop=True).iloc[: args.rows]
    frame = frame.reset_index(drop=True)
    measured = measured_columns(frame)
    values = frame[measured]
    mask = (np.random.default_rng(args.seed).random(values.shape) < args.missing) & values.notna().to_numpy()
    masked = frame.copy()
    masked[measured] = values.mask(mask)
    return frame, masked, mask, measured


def nrmse(true: pd.DataFrame, imputed: pd.DataFrame, mask: np.ndarray, measured: list[str]) -> float:
    truth = true[measured].to_numpy(dtype=float)
    got = imputed[measured].to_numpy(dtype=float)
    sd = np.nanstd(truth, axis=0)
    return float(np.sqrt(np.mean((((got - truth) / sd) ** 2)[mask])))


# --------------------------------------------------------------------------------------- methods


def design(masked: pd.DataFrame, measured: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The scikit-learn input: standardized measured columns first, then one-hot categoricals (observed,
    standardized too); and the measured columns' means and sds to map back."""
    numbers = masked[measured].to_numpy(dtype=float)
    mean, sd = np.nanmean(numbers, axis=0), np.nanstd(numbers, axis=0)
    sd[sd == 0] = 1.0
    parts = [(numbers - mean) / sd]
    others = [c for c in masked.columns if c not in measured]
    if others:
        onehot = pd.get_dummies(masked[others].astype("string"), dummy_na=True).to_numpy(dtype=float)
        onehot = onehot[:, onehot.std(axis=0) > 0]
        parts.append((onehot - onehot.mean(axis=0)) / onehot.std(axis=0))
    return np.hstack(parts), mean, sd


def sklearn_imputer(make: Callable[[int], object]) -> Imputer:
    def impute(masked: pd.DataFrame, measured: list[str], args: argparse.Namespace) -> pd.DataFrame:
        matrix, mean, sd = design(masked, measured)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # IterativeImputer's "early stopping criterion not reached"
            filled = make(args.seed).fit_transform(matrix)  # type: ignore[attr-defined]
        out = masked.copy()
        # Only the empty cells: mapping the observed ones back would change their last bits.
        out[measured] = masked[measured].mask(masked[measured].isna(), filled[:, : len(measured)] * sd + mean)
        return out

    return impute


def missforest(seed: int) -> object:
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer

    forest = RandomForestRegressor(n_estimators=100, max_features="sqrt", n_jobs=1, random_state=seed)
    return IterativeImputer(estimator=forest, max_iter=10, initial_strategy="mean", random_state=seed)


def mice(seed: int) -> object:
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer
    from sklearn.linear_model import BayesianRidge

    return IterativeImputer(estimator=BayesianRidge(), sample_posterior=False, max_iter=10, random_state=seed)


def knn(seed: int) -> object:
    from sklearn.impute import KNNImputer

    return KNNImputer(n_neighbors=5)


def column_mean(masked: pd.DataFrame, measured: list[str], args: argparse.Namespace) -> pd.DataFrame:
    out = masked.copy()
    out[measured] = masked[measured].fillna(masked[measured].mean())
    return out


MEDIAN_DRAWS = 32
LAST_MODEL: list[object] = []  # the last flowcli model, for the median diagnostic


def flowcli_impute(masked: pd.DataFrame, measured: list[str], args: argparse.Namespace) -> pd.DataFrame:
    import flowcli

    model = flowcli.fit(masked, args.config, epochs=args.epochs, seed=args.seed, device="cpu", threads=args.threads)
    log(f"  flowcli: {model.info.get('epochs_run')} epochs (best {model.info.get('best_epoch')})")
    LAST_MODEL[:] = [model]
    return model.impute(masked)


def median_of_draws(model: object, masked: pd.DataFrame, measured: list[str], seed: int) -> pd.DataFrame:
    """A diagnostic, not a method: each missing cell's median of ``MEDIAN_DRAWS`` multiple imputations
    (``model.impute(masked, draws=...)``), a robust centre of the same conditional distributions."""
    drawn = model.impute(masked, draws=MEDIAN_DRAWS, seed=seed)  # type: ignore[attr-defined]
    values = drawn[measured].to_numpy(dtype=float).reshape(len(masked), MEDIAN_DRAWS, len(measured))
    out = masked.copy()
    out[measured] = masked[measured].mask(masked[measured].isna(), np.median(values, axis=1))
    return out


IMPUTERS: dict[str, Imputer] = {
    "flowcli": flowcli_impute,
    "missforest": sklearn_imputer(missforest),
    "mice": sklearn_imputer(mice),
    "knn": sklearn_imputer(knn),
    "mean": column_mean,
}


def clip_to_observed(imputed: pd.DataFrame, masked: pd.DataFrame, measured: list[str]) -> pd.DataFrame:
    """A diagnostic, not a method: the imputed cells clipped to their column's range of observed cells.
    Printed beside flowcli's NRMSE to show how much of it comes from a few far-off conditional means."""
    out = imputed.copy()
    out[measured] = imputed[measured].clip(masked[measured].min(), masked[measured].max(), axis=1)
    return out


def check_observed(masked: pd.DataFrame, imputed: pd.DataFrame, measured: list[str]) -> str:
    """'' when every observed measured cell came back unchanged and no measured cell is left empty."""
    before, after = masked[measured].to_numpy(dtype=float), imputed[measured].to_numpy(dtype=float)
    seen = ~np.isnan(before)
    problems = []
    if not np.array_equal(before[seen], after[seen]):
        problems.append(f"{int((before[seen] != after[seen]).sum())} observed cells changed")
    if np.isnan(after).any():
        problems.append(f"{int(np.isnan(after).sum())} cells left empty")
    return "; ".join(problems)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default=DEFAULT_TABLES, help=f"comma-separated, of: {', '.join(TABLES)}")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of: {', '.join(METHODS)}")
    parser.add_argument("--rows", type=int, default=10_000, help="cap on a table's rows (after shuffling)")
    parser.add_argument("--missing", type=float, default=0.2, help="share of measured cells masked")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="override flowcli's training.epochs (smoke runs)")
    parser.add_argument("--config", default=None, help="flowcli preset name or YAML (default: the default config)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the flowcli fit")
    args = parser.parse_args()
    methods = args.methods.split(",")
    for method in methods:
        if method not in IMPUTERS:
            raise SystemExit(f"unknown method {method!r}: choose from {', '.join(METHODS)}")

    if "flowcli" in methods:
        import torch

        torch.set_num_threads(args.threads)
    nrmse_heads, second_heads = " | ".join(f"{m} NRMSE" for m in methods), " | ".join(f"{m} s" for m in methods)
    diagnostic = "flowcli" in methods
    extra = (
        f" flowcli clipped (diagnostic) | flowcli median of {MEDIAN_DRAWS} draws (diagnostic) |" if diagnostic else ""
    )
    print(f"| table | rows | cols (measured) | masked cells | {nrmse_heads} | {second_heads} |{extra}")
    print("|---|---|---|---|" + "---|" * (2 * len(methods) + 2 * diagnostic))
    for name in args.tables.split(","):
        true, masked, mask, measured = prepare(name, args)
        scores, seconds, clipped, median = [], [], float("nan"), float("nan")
        for method in methods:
            log(f"{name}: {method} ...")
            started = time.perf_counter()
            imputed = IMPUTERS[method](masked, measured, args)
            seconds.append(time.perf_counter() - started)
            problem = check_observed(masked, imputed, measured)
            score = nrmse(true, imputed, mask, measured)
            scores.append(f"{score:.3f}" + (f" **{problem}**" if problem else ""))
            log(f"  {method}: NRMSE {score:.3f} in {seconds[-1]:.1f} s {problem}")
            if method == "flowcli":
                clipped = nrmse(true, clip_to_observed(imputed, masked, measured), mask, measured)
                log(f"  flowcli clipped to each column's observed range: NRMSE {clipped:.3f}")
                median = nrmse(true, median_of_draws(LAST_MODEL[0], masked, measured, args.seed), mask, measured)
                log(f"  flowcli median of {MEDIAN_DRAWS} draws: NRMSE {median:.3f}")
        best = min(range(len(methods)), key=lambda i: float(scores[i].split()[0]))
        scores[best] = f"**{scores[best]}**"
        cells = " | ".join(scores) + " | " + " | ".join(f"{s:.0f}" for s in seconds)
        if diagnostic:
            cells += f" | {clipped:.3f} | {median:.3f}"
        shape = f"{true.shape[1]} ({len(measured)})"
        print(f"| {name} | {len(true):,} | {shape} | {int(mask.sum()):,} | {cells} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
