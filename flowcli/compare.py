"""Real rows against synthetic rows: per-column distances, correlation and missing-rate differences.

Pure pandas/numpy (no plotting), so the figures of ``flowcli report`` can be tested and reused on their
own. Columns are treated by the dtype of the real column, not by the model's roles, so the comparison
works for any table the model accepts: numeric columns (floats, integers) are compared by the
two-sample Kolmogorov-Smirnov statistic, everything else (bools, strings, categories) by the total
variation distance between the label frequencies. Missing values are left out of both distances and
reported separately as missing rates. ``report`` first turns the columns that its model reads as numbers
(dates, Decimals, numbers written as text) into those numbers (``report.by_value``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

NUMERIC = "numeric"
CATEGORICAL = "categorical"


def column_kind(series: pd.Series) -> str:
    """``numeric`` for numbers (not bools), ``categorical`` for everything else."""
    if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
        return CATEGORICAL
    return NUMERIC


def numeric_values(series: pd.Series) -> np.ndarray:
    """The finite values of a column as float64 (missing and non-numeric entries dropped)."""
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return values[np.isfinite(values)]


def category_labels(series: pd.Series) -> pd.Series:
    """The non-missing entries of a column as text labels, so 1, True and "1" compare by what they print."""
    return series.dropna().astype(str)


def missing_rate(series: pd.Series) -> float:
    return float(series.isna().mean()) if len(series) else 0.0


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs (0..1)."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / len(a)
    cdf_b = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(cdf_a - cdf_b)))


def total_variation(a: pd.Series, b: pd.Series) -> float:
    """Total variation distance between the label frequencies of two columns: half the L1 gap (0..1)."""
    pa = a.value_counts(normalize=True)
    pb = b.value_counts(normalize=True)
    both = pa.index.union(pb.index)
    return float(0.5 * np.abs(pa.reindex(both, fill_value=0.0) - pb.reindex(both, fill_value=0.0)).sum())


@dataclass
class ColumnComparison:
    name: str
    kind: str  # numeric | categorical
    metric: str  # ks | tv
    distance: float | None  # None when one side has no non-missing value
    missing_real: float
    missing_synthetic: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "metric": self.metric,
            "distance": self.distance,
            "missing_real": self.missing_real,
            "missing_synthetic": self.missing_synthetic,
            "missing_difference": self.missing_synthetic - self.missing_real,
        }


def compare_column(name: str, real: pd.Series, synthetic: pd.Series) -> ColumnComparison:
    kind = column_kind(real)
    distance: float | None
    if kind == NUMERIC:
        a, b = numeric_values(real), numeric_values(synthetic)
        distance = ks_statistic(a, b) if len(a) and len(b) else None
        metric = "ks"
    else:
        a_lab, b_lab = category_labels(real), category_labels(synthetic)
        distance = total_variation(a_lab, b_lab) if len(a_lab) and len(b_lab) else None
        metric = "tv"
    return ColumnComparison(name, kind, metric, distance, missing_rate(real), missing_rate(synthetic))


def numeric_columns(frame: pd.DataFrame, names: list[str]) -> list[str]:
    return [n for n in names if column_kind(frame[n]) == NUMERIC]


def rank_correlation(frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Spearman correlation of numeric columns, over the rows where both are present.

    Rank correlation rather than Pearson because flows can put a few samples far out in the tails, and
    a handful of extreme synthetic rows would dominate a Pearson coefficient. Constant columns give NaN.
    """
    numeric = pd.DataFrame({n: pd.to_numeric(frame[n], errors="coerce") for n in names})
    return numeric.corr(method="spearman", min_periods=3)


def strongest_pairs(corr: pd.DataFrame, count: int) -> list[tuple[str, str, float]]:
    """The ``count`` column pairs with the largest |correlation| (NaN pairs left out), strongest first."""
    names = list(corr.columns)
    pairs = [
        (names[i], names[j], float(corr.iloc[i, j]))
        for i in range(len(names))
        for j in range(i + 1, len(names))
        if np.isfinite(corr.iloc[i, j])
    ]
    pairs.sort(key=lambda p: -abs(p[2]))
    return pairs[:count]


@dataclass
class TableComparison:
    columns: list[ColumnComparison]
    corr_real: pd.DataFrame
    corr_synthetic: pd.DataFrame

    @property
    def corr_difference(self) -> pd.DataFrame:
        """Real minus synthetic correlation."""
        return self.corr_real - self.corr_synthetic

    @property
    def max_abs_corr_difference(self) -> float | None:
        diff = np.abs(self.corr_difference.to_numpy())
        return float(np.nanmax(diff)) if diff.size and np.isfinite(diff).any() else None


def compare_tables(real: pd.DataFrame, synthetic: pd.DataFrame, names: list[str]) -> TableComparison:
    """Compare the columns ``names`` of two tables (both must have them)."""
    columns = [compare_column(n, real[n], synthetic[n]) for n in names]
    numeric = numeric_columns(real, names)
    return TableComparison(columns, rank_correlation(real, numeric), rank_correlation(synthetic, numeric))
