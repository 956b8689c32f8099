"""Dirty tables (outliers, heavy tails, skew, collinearity, wild scales, few rows): every preset against
a single full-covariance Gaussian, and whether its samples stay finite and sane.

Each table is generated here (seeded; no download), split 80/20 with numpy seed 0; each preset is fitted
on the 80% (``seed=0``; its own validation split comes out of those rows) and scored on the 20%. The
Gaussian is the maximum-likelihood full-covariance normal of the numeric training columns in the units
of the data, scored on the same test rows: the figure a flow should never lose to. For each fit it also
samples as many rows as the test set and reports the share of samples that are not finite or outside
a sane range (further than 10 times the 0.1%-99.9% training range beyond it), the share that flowcli
itself cannot score finitely, and the share of samples of the table's watched column that fall where
the data has (almost) none (latency above 1000 where 0.1% of the data is, income below 0 for a
log-normal column and 0.0 or inf for a positive one, between the modes of a bimodal column, beyond 4 for
a column cut at 3.3).

    python benchmarks/robustness.py                          # default and maf on every table
    python benchmarks/robustness.py --presets all --epochs 60
    python benchmarks/robustness.py --tables diamonds --presets maf --curve
    FLOWCLI_ROOT=/path/to/other/checkout python benchmarks/robustness.py   # measure another checkout
    python benchmarks/robustness.py --tables small outliers --presets default --epochs 5   # smoke run

Prints a Markdown table on stdout (and with ``--curve`` the validation curve of every fit on the diamonds
table); progress goes to stderr. Uses only ``flowcli.fit``, ``Model.log_prob`` and ``Model.sample``, so
it runs on older checkouts too (``FLOWCLI_ROOT``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, os.environ.get("FLOWCLI_ROOT", str(ROOT)))

from flowcli.columns import parse_column_overrides  # noqa: E402  (after the sys.path line above)
from flowcli.config import load_config  # noqa: E402
from flowcli.fitting import fit  # noqa: E402

PRESETS = Path(sys.path[0]) / "flowcli" / "presets"


# ------------------------------------------------------------------------------------------ tables


def outliers(rng: np.random.Generator, n: int = 4000) -> pd.DataFrame:
    """latency ~ N(100, 10) with 5 values up to 3e6 (timeouts), and a CPU share that follows it."""
    latency = rng.normal(100, 10, n)
    latency[rng.choice(n, 5, replace=False)] = [2.5e4, 1e5, 4e5, 1.2e6, 3e6]
    cpu = 0.5 + 0.01 * (np.minimum(latency, 200) - 100) + rng.normal(0, 0.05, n)
    return pd.DataFrame({"latency": latency, "cpu": cpu})


def heavy_tails(rng: np.random.Generator, n: int = 4000) -> pd.DataFrame:
    """Two Student-t columns with 1.5 degrees of freedom (infinite variance), the second leaning on the first."""
    a = rng.standard_t(1.5, n)
    return pd.DataFrame({"t1": a, "t2": 0.5 * a + rng.standard_t(1.5, n)})


def lognormal(rng: np.random.Generator, n: int = 4000) -> pd.DataFrame:
    """A log-normal income beside an age it grows with."""
    age = rng.normal(40, 10, n)
    return pd.DataFrame({"age": age, "income": np.exp(10 + 0.02 * (age - 40) + rng.normal(0, 0.8, n))})


def exact_function(rng: np.random.Generator, n: int = 3000) -> pd.DataFrame:
    """b is exactly a function of a (a density concentrated on a curve), beside an independent c."""
    a = rng.normal(0, 1, n)
    return pd.DataFrame({"a": a, "b": a**2 + 1, "c": rng.normal(5, 2, n)})


def collinear(rng: np.random.Generator, n: int = 4000) -> pd.DataFrame:
    """A near-collinear pair b = 2a + 1e-3 noise beside a skewed column."""
    a = rng.normal(0, 1, n)
    return pd.DataFrame({"a": a, "b": 2 * a + 1e-3 * rng.normal(0, 1, n), "skew": rng.gamma(1.5, 2.0, n)})


def scales(rng: np.random.Generator, n: int = 4000) -> pd.DataFrame:
    """A column of range 1e9 beside one of 1e-4, correlated."""
    u = rng.normal(0, 1, n)
    return pd.DataFrame({"big": 5e8 + 1.5e8 * u, "small": 1e-4 * (0.6 * u + 0.8 * rng.normal(0, 1, n))})


def small(rng: np.random.Generator, n: int = 75) -> pd.DataFrame:
    """A 3-column correlated normal table of 75 rows: 60 to fit, 15 to test."""
    cov = np.array([[1.0, 0.8, 0.3], [0.8, 1.0, 0.5], [0.3, 0.5, 1.0]])
    return pd.DataFrame(rng.multivariate_normal([10.0, -2.0, 0.5], cov, n), columns=["x", "y", "w"])


def bimodal(rng: np.random.Generator, n: int = 4000) -> pd.DataFrame:
    """A column with two well separated modes (0.2% of rows between them) beside a normal one."""
    mode = rng.random(n) < 0.5
    return pd.DataFrame({"m": np.where(mode, rng.normal(-4, 0.6, n), rng.normal(4, 0.6, n)), "n": rng.normal(0, 1, n)})


def bounded(rng: np.random.Generator, n: int = 4000) -> pd.DataFrame:
    """Values with |a| < 3.3 (a normal cut at 3.3 sd), beside a column that depends on it."""
    a = rng.normal(0, 1, 3 * n)
    a = a[np.abs(a) < 3.3][:n]
    return pd.DataFrame({"a": a, "b": np.sin(a) + 0.3 * rng.normal(0, 1, n)})


def diamonds(rng: np.random.Generator, n: int = 10000) -> pd.DataFrame:
    """Shaped like ggplot2's diamonds (which is not shipped): carat, cut, color, clarity, depth, table,
    price, x, y, z; with a dozen broken rows, as the real table has: x/y/z = 0, or y and z 6+ sd out."""
    carat = np.exp(rng.normal(-0.4, 0.55, n)).round(2).clip(0.2, 5)
    cut = rng.choice(["Fair", "Good", "Very Good", "Premium", "Ideal"], n, p=[0.03, 0.09, 0.22, 0.26, 0.40])
    color = rng.choice(list("DEFGHIJ"), n, p=[0.13, 0.18, 0.18, 0.21, 0.15, 0.10, 0.05])
    clarity = rng.choice(["I1", "SI2", "SI1", "VS2", "VS1", "VVS2", "VVS1", "IF"], n)
    depth = rng.normal(61.75, 1.43, n).round(1)
    table = rng.normal(57.46, 2.23, n).round(0)
    side = 6.45 * carat ** (1 / 3)
    x = (side + rng.normal(0, 0.05, n)).round(2)
    y = (x + rng.normal(0, 0.03, n)).round(2)
    z = (depth / 100 * (x + y) / 2).round(2)  # depth is z over the mean of x and y, as in the real table
    price = np.exp(8.45 + 1.7 * np.log(carat) + rng.normal(0, 0.25, n)).round(0)
    bad = rng.choice(n, 12, replace=False)
    x[bad[:3]] = 0
    y[bad[:5]] = 0
    z[bad[:8]] = 0
    y[bad[8:10]] = [58.9, 31.8]
    z[bad[10:]] = [31.8, 43.0]
    frame = pd.DataFrame({"carat": carat, "cut": cut, "color": color, "clarity": clarity, "depth": depth})
    return frame.assign(table=table, price=price, x=x, y=y, z=z)


TABLES: dict[str, Callable[[np.random.Generator], pd.DataFrame]] = {
    "outliers": outliers,
    "heavy_tails": heavy_tails,
    "lognormal": lognormal,
    "lognormal_positive": lognormal,  # the same table, income set to the positive role (COLUMNS)
    "exact_function": exact_function,
    "collinear": collinear,
    "scales": scales,
    "small": small,
    "bimodal": bimodal,
    "bounded": bounded,
    "diamonds": diamonds,
}


# Column roles set in the config, per table (the rest inferred).
COLUMNS: dict[str, dict[str, str]] = {"lognormal_positive": {"income": "positive"}}


def watched(name: str, samples: pd.DataFrame) -> float | None:
    """The share of samples where the data has (almost) none, for the tables that have such a place."""
    if name == "outliers":
        return float((samples["latency"] > 1000).mean())  # 0.1% of the data
    if name == "lognormal":
        return float((samples["income"] <= 0).mean())
    if name == "lognormal_positive":  # samples of 0.0 or inf, which a positive column cannot hold
        return float(((samples["income"] <= 0) | ~np.isfinite(samples["income"])).mean())
    if name == "bimodal":
        return float((samples["m"].abs() < 1.5).mean())
    if name == "bounded":
        return float((samples["a"].abs() > 4).mean())
    return None


# ------------------------------------------------------------------------------------- measurement


def split(frame: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    order = np.random.default_rng(seed).permutation(len(frame))
    n_test = round(len(frame) * 0.2)
    return frame.iloc[order[n_test:]].reset_index(drop=True), frame.iloc[order[:n_test]].reset_index(drop=True)


def gaussian_loglik(train: pd.DataFrame, test: pd.DataFrame) -> float | None:
    """Mean log-density of ``test`` under the maximum-likelihood normal of ``train`` (numeric tables only)."""
    if not all(pd.api.types.is_numeric_dtype(train[c]) for c in train.columns):
        return None
    x, y = train.to_numpy(np.float64), test.to_numpy(np.float64)
    mean, cov = x.mean(0), np.cov(x, rowvar=False, bias=True).reshape(x.shape[1], x.shape[1])
    sign, logdet = np.linalg.slogdet(cov)
    if sign <= 0:
        return None
    diff = y - mean
    maha = np.einsum("ij,ij->i", diff @ np.linalg.inv(cov), diff)
    return float(np.mean(-0.5 * (maha + logdet + x.shape[1] * np.log(2 * np.pi))))


def insane(train: pd.DataFrame, samples: pd.DataFrame) -> float:
    """The share of sample rows with a numeric value that is not finite or far outside the training range."""
    bad = np.zeros(len(samples), dtype=bool)
    for col in train.columns:
        if not pd.api.types.is_numeric_dtype(train[col]) or pd.api.types.is_bool_dtype(train[col]):
            continue
        lo, hi = np.quantile(train[col], [0.001, 0.999])
        span = max(hi - lo, 1e-300)
        values = pd.to_numeric(samples[col], errors="coerce").to_numpy(np.float64, na_value=np.nan)
        bad |= ~np.isfinite(values) | (values < lo - 10 * span) | (values > hi + 10 * span)
    return float(bad.mean())


def unscorable(model: object, samples: pd.DataFrame) -> float:
    """The share of samples the model that drew them scores -inf or NaN (or refuses: counted as all)."""
    try:
        scores = model.log_prob(samples)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001  (an old checkout refuses inf samples with an error)
        return 1.0
    return float((~np.isfinite(scores)).mean())


def run(name: str, preset: str, epochs: int | None, seed: int) -> dict:
    frame = TABLES[name](np.random.default_rng(seed))
    train, test = split(frame, seed)
    config = load_config(PRESETS / f"{preset}.yaml")
    config.columns = parse_column_overrides(COLUMNS.get(name, {}))
    if epochs is not None:
        config.training.epochs = epochs
    started = time.perf_counter()
    model = fit(train, config, device=torch.device("cpu"), seed=seed)
    seconds = time.perf_counter() - started
    scores = model.log_prob(test)
    samples = model.sample(max(len(test), 2000), seed=seed + 1)
    return {
        "table": name,
        "preset": preset,
        "rows": len(train),
        "flow": float(np.mean(scores)),
        "flow_median": float(np.median(scores)),
        "gaussian": gaussian_loglik(train, test),
        "insane": insane(train, samples),
        "unscorable": unscorable(model, samples),
        "watched": watched(name, samples),
        "epochs": model.info["epochs_run"],
        "best_epoch": model.info["best_epoch"],
        "seconds": seconds,
        "curve": [(m["epoch"], m["train_nll"], m["val_nll"]) for m in model.info["metrics"]],
        "warnings": model.info.get("warnings", []),
        "gaussian_val": model.info.get("gaussian_val_nll"),
        "val": model.info["best_val_nll"],
    }


def fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="*", default=list(TABLES), choices=list(TABLES))
    parser.add_argument("--presets", nargs="*", default=["default", "maf"], help="preset names, or 'all'")
    parser.add_argument("--epochs", type=int, default=None, help="override training.epochs of every preset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--curve", action="store_true", help="print the validation curve of the diamonds fits")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    presets = sorted(p.stem for p in PRESETS.glob("*.yaml")) if args.presets == ["all"] else args.presets
    print(f"flowcli from {sys.path[0]}; torch {torch.__version__}, {args.threads} thread(s)", file=sys.stderr)
    results = []
    for table in args.tables:
        for preset in presets:
            print(f"{table} / {preset} ...", file=sys.stderr, flush=True)
            r = run(table, preset, args.epochs, args.seed)
            results.append(r)
            print(
                f"  held-out {r['flow']:.3f} (Gaussian {fmt(r['gaussian'])}), {r['seconds']:.1f} s; "
                f"warnings: {r['warnings']}",
                file=sys.stderr,
                flush=True,
            )
    print(
        "| table | preset | train rows | held-out LL flow | Gaussian | flow - Gaussian | flow median | "
        "bad samples | unscorable | watched | epochs (best) | s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        diff = None if r["gaussian"] is None else r["flow"] - r["gaussian"]
        watched_share = fmt(r["watched"] and 100 * r["watched"], ".2f") + ("%" if r["watched"] is not None else "")
        print(
            f"| {r['table']} | {r['preset']} | {r['rows']} | {r['flow']:.3f} | {fmt(r['gaussian'])} | "
            f"{fmt(diff, '+.3f')} | {r['flow_median']:.3f} | {100 * r['insane']:.2f}% | "
            f"{100 * r['unscorable']:.2f}% | {watched_share} | {r['epochs']} ({r['best_epoch']}) | {r['seconds']:.0f} |"
        )
    if args.curve:
        for r in results:
            if r["table"] != "diamonds":
                continue
            print(f"\nValidation curve, {r['preset']} on diamonds (epoch: train NLL / validation NLL):\n")
            print("| epoch | train NLL | validation NLL |\n|---:|---:|---:|")
            for epoch, train_nll, val_nll in r["curve"]:
                print(f"| {epoch} | {train_nll:.4g} | {val_nll:.4g} |")


if __name__ == "__main__":
    main()
