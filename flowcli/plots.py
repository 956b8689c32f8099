"""The figures of ``flowcli report``, drawn with matplotlib's object API on the Agg canvas.

No pyplot: figures are built with ``matplotlib.figure.Figure`` and saved directly, so nothing depends
on a display, a global backend or pyplot's global state. Every function writes PNG files into a
directory and returns their file names (wide tables are split over several pages so the panels stay
readable). Columns are drawn by the dtype of the real column: numbers as histograms (bar charts when
they take only a few integer values), anything else (bools, strings, categories) as bar charts of the
label shares, with missing values as their own bar.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from .compare import NUMERIC, ColumnComparison, category_labels, column_kind, numeric_values

REAL_COLOR = "#4c72b0"
SYNTHETIC_COLOR = "#dd8452"
DPI = 100
COLUMNS_PER_PAGE = 12  # at most a 4 x 3 grid of columns per PNG
PAIRS_PER_PAGE = 3  # rows of (real | synthetic) per PNG
LATENT_PER_PAGE = 12  # a 4 x 3 grid of QQ plots per PNG
MAX_CATEGORIES = 12  # bars per categorical panel; the rest is pooled as "(other)"
MAX_DISCRETE_VALUES = 20  # integer columns with at most this many distinct values get bar charts
MAX_SCATTER_POINTS = 3000
MAX_HEATMAP_COLUMNS = 30


def _short(text: str, limit: int = 28) -> str:
    """Long column names and labels would overlap their neighbours: cut them with an ellipsis."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _pages(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    """Split into pages of at most ``size`` items, balanced (13 items -> 7 + 6, not 12 + 1)."""
    if not items:
        return []
    count = math.ceil(len(items) / size)
    per = math.ceil(len(items) / count)
    return [items[i : i + per] for i in range(0, len(items), per)]


def _page_name(stem: str, page: int, pages: int) -> str:
    return f"{stem}.png" if pages == 1 else f"{stem}_{page + 1}.png"


def _save(fig: Figure, out_dir: Path, name: str) -> str:
    fig.savefig(out_dir / name, dpi=DPI)
    return name


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def _central_range(*arrays: np.ndarray, tail: float = 0.001) -> tuple[float, float]:
    """A plotting range that covers all but ``tail`` of each side of every array, so a few extreme
    values (common in flow samples) do not squash the body of the distribution into one bin."""
    lows = [np.quantile(a, tail) for a in arrays if len(a)]
    highs = [np.quantile(a, 1 - tail) for a in arrays if len(a)]
    lo, hi = float(min(lows)), float(max(highs))
    if hi <= lo:  # constant column
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi


def training_curves(
    metrics: list[dict[str, Any]], best_epoch: int | None, has_validation: bool, out_dir: Path
) -> list[str]:
    """Train and validation NLL per epoch, with the epoch whose weights were kept."""
    if not metrics:
        return []
    epochs = [m["epoch"] for m in metrics]
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(
        epochs,
        [m["train_nll"] for m in metrics],
        color=REAL_COLOR,
        marker="." if len(epochs) < 60 else None,
        label="train NLL (mean over the epoch)",
    )
    if has_validation:
        ax.plot(
            epochs,
            [m["val_nll"] for m in metrics],
            color=SYNTHETIC_COLOR,
            marker="." if len(epochs) < 60 else None,
            label="validation NLL (end of epoch)",
        )
    if best_epoch:
        ax.axvline(
            best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch}, weights kept)"
        )
    values = [m["train_nll"] for m in metrics] + ([m["val_nll"] for m in metrics] if has_validation else [])
    finite = np.asarray([v for v in values if v is not None and math.isfinite(v)])
    if len(finite) > 4:
        # The first epochs are often far above the rest; keep the converged part readable.
        lo, hi = finite.min(), np.quantile(finite, 0.9)
        pad = 0.05 * (hi - lo) if hi > lo else 1.0
        ax.set_ylim(lo - pad, hi + 3 * pad)
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative log-likelihood (nats per row)")
    ax.set_title("Training curves" + ("" if has_validation else " (no validation split: training NLL only)"))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    return [_save(fig, out_dir, "training.png")]


def _is_discrete(real: pd.Series, synthetic: pd.Series) -> bool:
    if column_kind(real) != NUMERIC:
        return True
    if not pd.api.types.is_integer_dtype(real):
        return False
    return pd.concat([real, synthetic]).dropna().nunique() <= MAX_DISCRETE_VALUES


def _label_shares(series: pd.Series, labels: list[str]) -> np.ndarray:
    """Share of all rows (missing included) for each label, then '(other)' and '(missing)'."""
    n = max(len(series), 1)
    counts = category_labels(series).value_counts()
    known = np.array([counts.get(label, 0) for label in labels], dtype=float)
    other = counts.sum() - known.sum()
    return np.concatenate([known, [other, series.isna().sum()]]) / n


def _discrete_panel(ax: Any, real: pd.Series, synthetic: pd.Series) -> None:
    if column_kind(real) == NUMERIC:  # few integer values: order them by value
        values = sorted(pd.concat([real, synthetic]).dropna().unique())
        labels = [str(v) for v in values]
        real, synthetic = (
            real.map(lambda v: v if pd.isna(v) else str(v)),
            synthetic.map(lambda v: v if pd.isna(v) else str(v)),
        )
    else:  # by frequency in the real column
        labels = list(category_labels(real).value_counts().index[:MAX_CATEGORIES])
    shares_real, shares_syn = _label_shares(real, labels), _label_shares(synthetic, labels)
    names = [_short(x, 16) for x in labels] + ["(other)", "(missing)"]
    keep = [i for i in range(len(names)) if i < len(labels) or shares_real[i] > 0 or shares_syn[i] > 0]
    x = np.arange(len(keep))
    ax.bar(x - 0.2, shares_real[keep], width=0.4, color=REAL_COLOR, label="real")
    ax.bar(x + 0.2, shares_syn[keep], width=0.4, color=SYNTHETIC_COLOR, label="synthetic")
    ax.set_xticks(x, [names[i] for i in keep])
    if len(keep) > 4 or max(len(names[i]) for i in keep) > 6:
        ax.tick_params(axis="x", labelrotation=45)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    ax.set_ylabel("share of rows")
    ax.set_ylim(0, 1.25 * max(shares_real[keep].max(), shares_syn[keep].max(), 1e-9))  # headroom for the legend


def _histogram_panel(ax: Any, real: pd.Series, synthetic: pd.Series) -> None:
    a, b = numeric_values(real), numeric_values(synthetic)
    if not len(a) and not len(b):
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
        return
    lo, hi = _central_range(a, b, tail=0.005)  # the central 99% of each side: long tails would hide the body
    # Rice's rule (2 n^(1/3) bins), capped: 40 bins of a few hundred rows would be mostly noise.
    bins = np.linspace(lo, hi, int(np.clip(2 * max(len(a), len(b)) ** (1 / 3), 10, 40)) + 1)
    if len(a):
        ax.hist(a, bins=bins, density=True, color=REAL_COLOR, alpha=0.45, label="real")
    if len(b):
        ax.hist(b, bins=bins, density=True, histtype="step", linewidth=1.6, color=SYNTHETIC_COLOR, label="synthetic")
    ax.set_xlim(lo, hi)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.2)  # headroom for the legend
    ax.set_ylabel("density (per data unit)")


def column_distributions(
    real: pd.DataFrame, synthetic: pd.DataFrame, comparisons: list[ColumnComparison], out_dir: Path
) -> list[str]:
    """One panel per column, real against synthetic, paginated in grids of COLUMNS_PER_PAGE."""
    files = []
    pages = _pages(comparisons, COLUMNS_PER_PAGE)
    for page, chunk in enumerate(pages):
        rows, cols = _grid(len(chunk))
        fig = Figure(figsize=(4.6 * cols, 3.6 * rows + 0.6), layout="constrained")
        for k, comp in enumerate(chunk):
            ax = fig.add_subplot(rows, cols, k + 1)
            r, s = real[comp.name], synthetic[comp.name]
            if _is_discrete(r, s):
                _discrete_panel(ax, r, s)
            else:
                _histogram_panel(ax, r, s)
            dist = "n/a" if comp.distance is None else f"{comp.distance:.3f}"
            title = f"{_short(comp.name)}\n{comp.metric.upper()} {dist}"
            if comp.missing_real or comp.missing_synthetic:
                title += f", missing {comp.missing_real:.1%} real / {comp.missing_synthetic:.1%} synth."
            ax.set_title(title, fontsize=10)
            ax.set_xlabel(f"{_short(comp.name, 22)} (data units)" if comp.kind == NUMERIC else "label")
            ax.tick_params(labelsize=8)
            ax.legend(fontsize=8)
        suffix = f" (page {page + 1} of {len(pages)})" if len(pages) > 1 else ""
        fig.suptitle("Each column: real (blue) against synthetic (orange)" + suffix)
        files.append(_save(fig, out_dir, _page_name("columns", page, len(pages))))
    return files


def pair_plots(
    real: pd.DataFrame,
    synthetic: pd.DataFrame,
    pairs: list[tuple[str, str, float]],
    corr_synthetic: pd.DataFrame,
    out_dir: Path,
    rng: np.random.Generator,
) -> list[str]:
    """Scatter plots of the most related column pairs, real beside synthetic, on the same axes."""
    files = []
    pages = _pages(pairs, PAIRS_PER_PAGE)
    if not pairs:
        return []
    for page, chunk in enumerate(pages):
        fig = Figure(figsize=(10, 4.2 * len(chunk) + 0.6), layout="constrained")
        for row, (x, y, rho) in enumerate(chunk):
            frames = {"real": real[[x, y]], "synthetic": synthetic[[x, y]]}
            clean = {
                k: f.apply(pd.to_numeric, errors="coerce").dropna().to_numpy(dtype=float) for k, f in frames.items()
            }
            xlim = _central_range(*(c[:, 0] for c in clean.values()), tail=0.005)
            ylim = _central_range(*(c[:, 1] for c in clean.values()), tail=0.005)
            for col, (label, points) in enumerate(clean.items()):
                ax = fig.add_subplot(len(chunk), 2, 2 * row + col + 1)
                if len(points) > MAX_SCATTER_POINTS:
                    points = points[rng.choice(len(points), MAX_SCATTER_POINTS, replace=False)]
                ax.scatter(
                    points[:, 0],
                    points[:, 1],
                    s=4,
                    alpha=0.35,
                    linewidths=0,
                    color=REAL_COLOR if label == "real" else SYNTHETIC_COLOR,
                )
                ax.set_xlim(*xlim)
                ax.set_ylim(*ylim)
                r = rho if label == "real" else float(corr_synthetic.loc[x, y])
                ax.set_title(f"{label}: Spearman \u03c1 = {r:.2f}", fontsize=10)
                ax.set_xlabel(f"{_short(x)} (data units)")
                ax.set_ylabel(f"{_short(y)} (data units)")
                ax.grid(alpha=0.3)
        suffix = f" (page {page + 1} of {len(pages)})" if len(pages) > 1 else ""
        fig.suptitle(
            f"Most related column pairs, real (left) and synthetic (right); up to {MAX_SCATTER_POINTS} points each"
            + suffix
        )
        files.append(_save(fig, out_dir, _page_name("pairs", page, len(pages))))
    return files


def correlation_heatmaps(corr_real: pd.DataFrame, corr_synthetic: pd.DataFrame, out_dir: Path) -> list[str]:
    """Rank correlations of the real and synthetic rows and their difference, side by side."""
    if corr_real.shape[0] < 2:
        return []
    diff = corr_real - corr_synthetic
    names = list(corr_real.columns)
    note = ""
    if len(names) > MAX_HEATMAP_COLUMNS:  # keep the columns with the largest disagreement
        worst = np.abs(diff).max(axis=1).sort_values(ascending=False).index[:MAX_HEATMAP_COLUMNS]
        names = [n for n in names if n in set(worst)]
        note = f" ({MAX_HEATMAP_COLUMNS} columns with the largest differences)"
    n = len(names)
    size = max(4.0, 0.45 * n + 2.2)
    fig = Figure(figsize=(3 * size, size + 0.8), layout="constrained")
    panels = [("real", corr_real, "RdBu_r", 1.0), ("synthetic", corr_synthetic, "RdBu_r", 1.0)]
    max_diff = np.nanmax(np.abs(diff.loc[names, names].to_numpy())) if np.isfinite(diff.to_numpy()).any() else 0.0
    panels.append((f"real \u2212 synthetic (max |diff| {max_diff:.3f})", diff, "PuOr_r", max(0.1, float(max_diff))))
    ticks = [_short(x, 16) for x in names]
    for k, (title, matrix, cmap, bound) in enumerate(panels):
        ax = fig.add_subplot(1, 3, k + 1)
        values = matrix.loc[names, names].to_numpy(dtype=float)
        image = ax.imshow(values, cmap=cmap, vmin=-bound, vmax=bound)
        ax.set_xticks(range(n), ticks, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), ticks, fontsize=8)
        ax.set_title(title, fontsize=10)
        if k == 2 and n <= 12:
            for i in range(n):
                for j in range(n):
                    v = values[i, j]
                    if np.isfinite(v):
                        v = 0.0 if abs(v) < 0.005 else v  # no "-0.00"
                        ax.text(
                            j,
                            i,
                            f"{v:.2f}",
                            ha="center",
                            va="center",
                            fontsize=7,
                            color="white" if abs(v) > 0.6 * bound else "black",
                        )
        fig.colorbar(image, ax=ax, shrink=0.8, label="Spearman \u03c1" if k < 2 else "difference of \u03c1")
    fig.suptitle("Rank correlation between columns" + note)
    return [_save(fig, out_dir, "correlation.png")]


def distances(comparisons: list[ColumnComparison], ks_noise: float | None, out_dir: Path) -> list[str]:
    """Per-column distance between real and synthetic (KS for numbers, TV for labels), worst on top."""
    rows = [c for c in comparisons if c.distance is not None]
    if not rows:
        return []
    rows.sort(key=lambda c: c.distance or 0.0)
    pages = _pages(rows[::-1], 40)
    files = []
    for page, chunk in enumerate(pages):
        chunk = list(chunk)[::-1]
        fig = Figure(figsize=(8, 0.32 * len(chunk) + 1.6), layout="constrained")
        ax = fig.add_subplot()
        y = np.arange(len(chunk))
        ax.barh(
            y, [c.distance for c in chunk], color=[REAL_COLOR if c.metric == "ks" else SYNTHETIC_COLOR for c in chunk]
        )
        ax.set_yticks(y, [f"{_short(c.name)} ({c.metric.upper()})" for c in chunk], fontsize=9)
        ax.set_xlim(0, max(0.1, max(c.distance or 0 for c in chunk) * 1.15, (ks_noise or 0) * 1.15))
        if ks_noise and any(c.metric == "ks" for c in chunk):
            ax.axvline(
                ks_noise,
                color="grey",
                linestyle="--",
                linewidth=1,
                label=f"KS sampling noise, 5% level ({ks_noise:.3f})",
            )
            ax.legend(fontsize=8, loc="lower right")
        for yi, c in zip(y, chunk, strict=False):
            ax.text(c.distance, float(yi), f" {c.distance:.3f}", va="center", fontsize=8)
        ax.set_xlabel("distance real vs synthetic (0 = identical, 1 = disjoint)")
        ax.set_title("Per-column distance: KS for numeric columns, total variation (TV) for labels")
        ax.grid(axis="x", alpha=0.3)
        files.append(_save(fig, out_dir, _page_name("distances", page, len(pages))))
    return files


def missing_rates(comparisons: list[ColumnComparison], out_dir: Path) -> list[str]:
    """Missing-value rate of each column that has any, real beside synthetic."""
    rows = [c for c in comparisons if c.missing_real > 0 or c.missing_synthetic > 0]
    if not rows:
        return []
    rows = rows[:60]
    fig = Figure(figsize=(8, 0.4 * len(rows) + 1.6), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    ax.barh(y - 0.2, [c.missing_real for c in rows], height=0.4, color=REAL_COLOR, label="real")
    ax.barh(y + 0.2, [c.missing_synthetic for c in rows], height=0.4, color=SYNTHETIC_COLOR, label="synthetic")
    ax.set_yticks(y, [_short(c.name) for c in rows], fontsize=9)
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("share of rows with a missing value")
    ax.set_title("Missing-value rates")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside the axes: never over a bar
    ax.grid(axis="x", alpha=0.3)
    return [_save(fig, out_dir, "missing.png")]


def latent_qq(z: np.ndarray, base: np.ndarray, names: list[str], ks: list[float | None], out_dir: Path) -> list[str]:
    """QQ plot of each latent dimension of the encoded real rows against samples of the base."""
    if z.shape[1] == 0:
        return []
    dims = list(range(z.shape[1]))
    pages = _pages(dims, LATENT_PER_PAGE)
    files = []
    for page, chunk in enumerate(pages):
        rows, cols = _grid(len(chunk), 4)
        fig = Figure(figsize=(3.4 * cols, 3.2 * rows + 0.8), layout="constrained")
        for k, d in enumerate(chunk):
            ax = fig.add_subplot(rows, cols, k + 1)
            values = z[np.isfinite(z[:, d]), d]  # rows with missing values may not encode to finite z
            if not len(values):
                ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
                continue
            levels = (np.arange(min(len(values), 400)) + 0.5) / min(len(values), 400)
            zq = np.quantile(values, levels)
            bq = np.quantile(base[:, d], levels)
            lim = (min(bq[0], zq[0], -3.5), max(bq[-1], zq[-1], 3.5))
            ax.plot(lim, lim, color="grey", linewidth=1, linestyle="--", label="y = x (perfect fit)")
            ax.plot(bq, zq, ".", markersize=3, color=REAL_COLOR, label="encoded real rows")
            ax.set_xlim(*lim)
            ax.set_ylim(*lim)
            ax.set_title(f"{names[d]}: KS {ks[d]:.3f}" if ks[d] is not None else names[d], fontsize=10)
            ax.set_xlabel("base quantile")
            ax.set_ylabel("encoded quantile")
            ax.grid(alpha=0.3)
            if k == 0:
                ax.legend(fontsize=7, loc="upper left")
        suffix = f" (page {page + 1} of {len(pages)})" if len(pages) > 1 else ""
        fig.suptitle("Latent space: quantiles of the encoded real rows against the base distribution" + suffix)
        files.append(_save(fig, out_dir, _page_name("latent", page, len(pages))))
    return files


def logprob_histogram(
    real: np.ndarray, synthetic: np.ndarray, thresholds: list[tuple[str, float]], out_dir: Path
) -> list[str]:
    """Histogram of log p(x) on the data (and on synthetic rows), with the anomaly thresholds."""
    a, b = real[np.isfinite(real)], synthetic[np.isfinite(synthetic)]
    if not len(a):
        return []
    lo, hi = _central_range(a, b, tail=0.002)
    lo = min([lo] + [v for _, v in thresholds])
    span = hi - lo
    lo, hi = lo - 0.03 * span, hi + 0.03 * span
    # Rice's rule, capped; a list because matplotlib's type hints take a sequence of edges, not an array.
    bins = np.linspace(lo, hi, int(np.clip(2 * len(a) ** (1 / 3), 15, 60)) + 1).tolist()
    fig = Figure(figsize=(9, 5.6), layout="constrained")
    ax = fig.add_subplot()
    ax.hist(np.clip(a, lo, hi), bins=bins, density=True, color=REAL_COLOR, alpha=0.45, label=f"DATA ({len(a)} rows)")
    if len(b):
        ax.hist(
            np.clip(b, lo, hi),
            bins=bins,
            density=True,
            histtype="step",
            linewidth=1.6,
            color=SYNTHETIC_COLOR,
            label=f"synthetic rows ({len(b)})",
        )
    styles = ["-", "--", ":", "-."]
    for k, (label, value) in enumerate(thresholds):
        ax.axvline(
            value,
            color="black" if k < 2 else "#8c2d04",
            linestyle=styles[k % 4],
            linewidth=1.2,
            label=f"{label}: {value:.2f}",
        )
    ax.set_xlim(lo, hi)
    ax.set_xlabel("log density log p(x) (nats, in the units of the data; tails clipped into the edge bins)")
    ax.set_ylabel("share of rows per nat")
    ax.set_title("Log-likelihood of each row; rows left of a threshold would be flagged as anomalies")
    # Below the axes: thresholds sit in the left tail and the mass on the right, so no corner is free.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    ax.grid(alpha=0.3)
    return [_save(fig, out_dir, "logprob.png")]
