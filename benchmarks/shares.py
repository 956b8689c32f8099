"""Sampled shares of flowcli's default config against the training shares, on the shipped tables (issue 14).

For each table: fit the packaged default config on all its rows (public API, one torch thread), sample
``--samples`` rows, and compare, in percent of rows:
- each **categorical level** (text, booleans, numbers with at most 10 distinct values: flowcli's rule),
  each **missing indicator** (a column with missing values in training), and each **exact-value atom**
  of a numeric column (a value holding >= 1% of the training rows, e.g. exact zeros): training share
  vs sampled share, and the largest absolute gap (percentage points);
- **unseen combinations**: for each pair of categorical columns (missing as its own level), the share of
  sampled rows whose pair of values never occurs in the training rows, and the share of sampled rows
  with at least one such pair;
- **support**: per numeric column, the share of (non-missing) samples outside the training range
  [min, max], and for a column whose training values are all >= 0 the share of negative samples.

    nice -n 19 python benchmarks/shares.py                                  # the shipped tables
    nice -n 19 python benchmarks/shares.py --tables penguins --epochs 5     # smoke run
    nice -n 19 python benchmarks/shares.py --tables psid1976,slid           # public mixed tables (bench extra)

Tables as in benchmarks/synthesis.py (``--rows`` caps a table, shuffled with ``--seed``; 0 = all rows).
Prints Markdown on stdout (a detail table per table, then a summary table); recorded in benchmarks/MIXED.md.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time

import numpy as np
import pandas as pd
from synthesis import SHIPPED, column_kinds, load_table

ATOM_SHARE = 0.01  # a numeric value holding at least this share of the training rows is an atom


def pct(mask: pd.Series | np.ndarray) -> float:
    """Percent of True in a boolean mask (0 for an empty one; a missing comparison counts as False)."""
    values = pd.Series(mask).astype("boolean").fillna(False).to_numpy(dtype=bool)
    return 100.0 * values.mean() if values.size else 0.0


def atoms(col: pd.Series) -> list[float]:
    """Values of a numeric column that hold at least ATOM_SHARE of all its rows."""
    counts = col.dropna().value_counts()
    return sorted(float(v) for v, n in counts.items() if n >= ATOM_SHARE * len(col))


def share_rows(
    train: pd.DataFrame, synth: pd.DataFrame, kinds: dict[str, str]
) -> list[tuple[str, str, str, float, float]]:
    """(column, kind, value, training %, sampled %) for every level, missing indicator and atom."""
    rows = []
    for name, kind in kinds.items():
        real, fake = train[name], synth[name]
        if kind == "categorical":
            for level in real.dropna().unique():
                rows.append((name, "level", str(level), pct(real == level), pct(fake == level)))
        else:
            for value in atoms(real):
                rows.append((name, "atom", f"{value:g}", pct(real == value), pct(fake == value)))
        if real.isna().any() or fake.isna().any():
            rows.append((name, "missing", "NA", pct(real.isna()), pct(fake.isna())))
    return rows


def as_labels(col: pd.Series) -> pd.Series:
    """A column as text labels, missing as '<NA>' (so missing counts as a level of its own)."""
    return col.astype("string").fillna("<NA>")


def unseen_pairs(
    train: pd.DataFrame, synth: pd.DataFrame, kinds: dict[str, str]
) -> tuple[list[tuple[str, float]], float]:
    """Per pair of categorical columns, % of sampled rows whose value pair never occurs in training;
    and % of sampled rows with at least one such pair."""
    cats = [name for name, kind in kinds.items() if kind == "categorical"]
    any_unseen = np.zeros(len(synth), dtype=bool)
    per_pair = []
    for a, b in itertools.combinations(cats, 2):
        seen = set(zip(as_labels(train[a]), as_labels(train[b]), strict=True))
        unseen = np.array([pair not in seen for pair in zip(as_labels(synth[a]), as_labels(synth[b]), strict=True)])
        per_pair.append((f"{a} x {b}", pct(unseen)))
        any_unseen |= unseen
    return per_pair, pct(any_unseen)


def support_rows(
    train: pd.DataFrame, synth: pd.DataFrame, kinds: dict[str, str]
) -> list[tuple[str, float, float | None]]:
    """(column, % of samples outside the training range, % negative when training is all >= 0, else None)."""
    rows = []
    for name, kind in kinds.items():
        if kind != "numerical":
            continue
        real, fake = train[name].dropna().astype(float), synth[name].dropna().astype(float)
        outside = pct((fake < real.min()) | (fake > real.max()))
        negative = pct(fake < 0) if real.min() >= 0 else None
        rows.append((name, outside, negative))
    return rows


def detail_lines(name: str, shares: list, pairs: list, support: list) -> list[str]:
    """The Markdown detail tables of one table."""
    lines = [
        f"### {name}",
        "",
        "| column | what | value | train % | sampled % | gap (points) |",
        "|---|---|---|---|---|---|",
    ]
    for col, kind, value, real, fake in shares:
        lines.append(f"| {col} | {kind} | {value} | {real:.2f} | {fake:.2f} | {fake - real:+.2f} |")
    if pairs:
        lines += ["", "| categorical pair | sampled rows in unseen combinations % |", "|---|---|"]
        lines += [f"| {pair} | {share:.2f} |" for pair, share in pairs]
    if support:
        lines += [
            "",
            "| numeric column | outside training range % | negative (column >= 0 in training) % |",
            "|---|---|---|",
        ]
        lines += [f"| {col} | {out:.2f} | {'n/a' if neg is None else f'{neg:.2f}'} |" for col, out, neg in support]
    return [*lines, ""]


def largest_gap(shares: list) -> str:
    """'gap (column what value: train -> sampled)' of the largest absolute gap among ``shares``, or n/a."""
    if not shares:
        return "n/a"
    col, kind, value, real, fake = max(shares, key=lambda r: abs(r[4] - r[3]))
    return f"{abs(fake - real):.2f} ({col} {kind} {value}: {real:.2f} -> {fake:.2f})"


def summary_line(name: str, rows: int, seconds: float, shares: list, any_unseen: float | None, support: list) -> str:
    """One row of the summary table: largest gaps (levels and missing; atoms), unseen pairs, worst support."""
    discrete = largest_gap([r for r in shares if r[1] != "atom"])
    atom = largest_gap([r for r in shares if r[1] == "atom"])
    unseen = "n/a" if any_unseen is None else f"{any_unseen:.2f}"
    out = max((r[1] for r in support), default=None)
    negs = [r[2] for r in support if r[2] is not None]
    out_s = "n/a" if out is None else f"{out:.2f}"
    neg_s = "n/a" if not negs else f"{max(negs):.2f}"
    return f"| {name} | {rows} | {discrete} | {atom} | {unseen} | {out_s} | {neg_s} | {seconds:.0f} |"


def run_table(name: str, args: argparse.Namespace) -> tuple[list[str], str]:
    """Fit, sample and measure one table; return its detail lines and its summary row."""
    import flowcli

    table = load_table(name)
    if args.rows and len(table) > args.rows:
        table = table.iloc[np.random.default_rng(args.seed).permutation(len(table))[: args.rows]].reset_index(drop=True)
    kinds = column_kinds(table)
    started = time.perf_counter()
    model = flowcli.fit(table, epochs=args.epochs, seed=args.seed, device="cpu", threads=1)
    seconds = time.perf_counter() - started
    synth = model.sample(args.samples, seed=args.seed)
    shares = share_rows(table, synth, kinds)
    pairs, any_unseen = unseen_pairs(table, synth, kinds)
    support = support_rows(table, synth, kinds)
    summary = summary_line(name, len(table), seconds, shares, any_unseen if pairs else None, support)
    return detail_lines(name, shares, pairs, support), summary


def main(argv: list[str] | None = None) -> None:
    """Measure every table: its detail tables as each finishes, then the summary table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default=",".join(SHIPPED), help="comma-separated (default: the shipped tables)")
    parser.add_argument("--samples", type=int, default=20000, help="rows sampled per table")
    parser.add_argument("--epochs", type=int, default=None, help="override training.epochs (smoke runs only)")
    parser.add_argument("--rows", type=int, default=0, help="cap on a table's rows (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    summaries = []
    for name in args.tables.split(","):
        print(f"{name} ...", file=sys.stderr, flush=True)
        details, summary = run_table(name, args)
        print("\n".join(details), flush=True)
        summaries.append(summary)
    print(
        "| table | rows | largest level/missing gap, points (where: train -> sampled %) | largest atom gap, points "
        "| sampled rows in unseen pairs % | max outside range % | max negative % | fit s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(summaries))


if __name__ == "__main__":
    main()
