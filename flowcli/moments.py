"""Column statistics in one streaming pass, mergeable across chunks, files and ranks.

Training on data that does not fit in memory (or that is split across processes) cannot call
``Schema.infer`` on one DataFrame. Instead each chunk contributes its count, mean and sum of squared
deviations, and partial results are merged with the pairwise update of Chan, Golub & LeVeque (1979),
which is exact in exact arithmetic and numerically stable (no ``sum(x**2) - n*mean**2`` cancellation).

Columns are standardized by their median and IQR / 1.349 (``roles/numeric.py``), and exact quantiles
need the whole column, which one bounded-memory pass cannot hold. So each chunk also contributes a
*bottom-k sample*: the ``SAMPLE_ROWS`` rows whose global row index hashes lowest (splitmix64 with a salt
of its own, so the sample is not the validation split). Merging keeps the lowest k hashes of the union,
so the sample is a uniform random sample of the table without replacement, the same whatever the
chunking, file order or number of ranks (Cohen & Kaplan 2007, "Summarizing data using bottom-k
sketches"). Quantiles are read from it: exactly those of ``Schema.infer`` for tables of up to
``SAMPLE_ROWS`` rows; beyond, a quantile's level is off by about sqrt(p (1 - p) / k), 0.002 at the
median, i.e. the location moves by 0.5% of the scale or less on smooth data. Constant detection comes from
the exact moments, and a column's support and range from its exact extremes (``schema_from_moments``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from .errors import DataError
from .redundancy import check_independent
from .schema import Column, Schema, column_names

SAMPLE_ROWS = 65536  # rows in the bottom-k sample the quantiles are read from (k)
_SALT = np.uint64(0x5DEECE66D)  # keeps the sample's hash apart from the validation split's (datasource.py)


def row_hash(rows: np.ndarray) -> np.ndarray:
    """splitmix64 of salted global row indices: a fixed pseudo-random 64-bit key per row."""
    with np.errstate(over="ignore"):
        z = rows.astype(np.uint64) + _SALT + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _lowest(keys: np.ndarray, sample: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``sample`` with the lowest keys (all of them if there are fewer), in key order."""
    order = np.argsort(keys, kind="stable")[:k]
    return keys[order], sample[order]


@dataclass
class Moments:
    """Count, per-column mean and sum of squared deviations (M2) of the rows seen so far, the bottom-k
    sample of those rows (``keys``: their hashes, ascending; ``sample``: the rows), and per column the exact
    smallest and largest value and whether every value is a whole number: a column's support and lattice
    need every row, not a sample (one 0 among millions of values > 0 makes the support [0, inf))."""

    count: int = 0
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    m2: np.ndarray = field(default_factory=lambda: np.zeros(0))
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    sample: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    low: np.ndarray = field(default_factory=lambda: np.zeros(0))
    high: np.ndarray = field(default_factory=lambda: np.zeros(0))
    whole: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @classmethod
    def of(cls, matrix: np.ndarray, rows: np.ndarray | None = None, k: int = SAMPLE_ROWS) -> Moments:
        """The moments of ``matrix``, whose rows have the global indices ``rows`` (default 0, 1, ...)."""
        rows = np.arange(len(matrix)) if rows is None else rows
        keys, sample = _lowest(row_hash(rows), matrix, k)
        width = matrix.shape[1]
        if len(matrix) == 0:
            empty = np.zeros(width)
            return cls(
                0, empty, empty, keys, sample, np.full(width, np.inf), np.full(width, -np.inf), np.ones(width, bool)
            )
        mean = matrix.mean(0)
        whole = (matrix == np.round(matrix)).all(0)
        return cls(len(matrix), mean, ((matrix - mean) ** 2).sum(0), keys, sample, matrix.min(0), matrix.max(0), whole)

    def merge(self, other: Moments, k: int = SAMPLE_ROWS) -> Moments:
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / n)
        m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / n)
        keys, sample = _lowest(np.concatenate([self.keys, other.keys]), np.concatenate([self.sample, other.sample]), k)
        low, high = np.minimum(self.low, other.low), np.maximum(self.high, other.high)
        return Moments(n, mean, m2, keys, sample, low, high, self.whole & other.whole)

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation (ddof=0), as numpy's ``std`` and ``Schema.infer`` use."""
        return np.sqrt(np.maximum(self.m2, 0.0) / max(self.count, 1))

    def to_state(self) -> dict:
        """Picklable parts for gathering across ranks (the sample stays an array: up to k x columns floats)."""
        return {
            "count": self.count,
            "mean": self.mean.tolist(),
            "m2": self.m2.tolist(),
            "keys": self.keys,
            "sample": self.sample,
            "low": self.low.tolist(),
            "high": self.high.tolist(),
            "whole": self.whole.tolist(),
        }

    @classmethod
    def from_state(cls, state: dict) -> Moments:
        return cls(
            int(state["count"]),
            np.asarray(state["mean"], dtype=np.float64),
            np.asarray(state["m2"], dtype=np.float64),
            np.asarray(state["keys"], dtype=np.uint64),
            np.asarray(state["sample"], dtype=np.float64),
            np.asarray(state["low"], dtype=np.float64),
            np.asarray(state["high"], dtype=np.float64),
            np.asarray(state["whole"], dtype=bool),
        )


def merge_all(parts: list[Moments]) -> Moments:
    """Merge in list order, so every process merging the same list gets bit-identical statistics."""
    total = Moments()
    for part in parts:
        total = total.merge(part)
    return total


def schema_from_moments(names: list[str], dtypes: list[str], moments: Moments) -> Schema:
    """The schema ``Schema.infer`` would build from the whole table, from its merged moments.

    Streamed columns are numbers, each one feature (the raw value is the training matrix's column), so the
    roles are the numeric ones that need no discrete part: ``integer`` for a column of whole numbers
    (dequantized, samples rounded and clipped to its range), else ``continuous`` (with the support > 0 of
    a column of values all > 0). No atoms, and no categorical column for few distinct values: those need
    the discrete part, which a stream does not fit. The roles' own ``fit`` reads the bottom-k sample with
    the exact extremes added when it lacks them, so support and range are those of every row, and for a
    table of up to ``SAMPLE_ROWS`` rows everything else is what ``Schema.infer`` computes too."""
    from .columns import infer_column

    if moments.count < 2:
        raise DataError(f"the table has {moments.count} data row(s); at least 2 are needed to fit")
    columns = []
    for i, (name, dtype) in enumerate(zip(column_names(names), dtypes, strict=False)):
        std = float(moments.std[i])
        # Chunked moments of a constant column can leave a rounding residue where the whole-table
        # std is exactly 0; treat a std that small relative to the mean as constant too.
        constant = std == 0.0 or std <= 1e-12 * abs(float(moments.mean[i]))
        mean = float(moments.mean[i])
        if constant:
            columns.append(Column(name, "constant", dtype, value=mean, reason="a single value"))
            continue
        values = moments.sample[:, i]
        extremes = [v for v in (moments.low[i], moments.high[i]) if not (values == v).any()]
        values = np.concatenate([values, extremes])
        whole = bool(moments.whole[i])
        series = pd.Series(values, name=name)
        if whole and pd.api.types.is_integer_dtype(_pandas_dtype(dtype)):
            series = series.astype(dtype)  # (Int64 of a pandas-written Parquet file too)
        role = "integer" if whole else "continuous"
        column = infer_column(series, {"role": role, "atoms": []})
        reason = "whole numbers (streamed)" if whole else "numbers (streamed)"
        columns.append(replace(column, dtype=dtype, reason=reason))
    if not any(c.modelled for c in columns):
        raise DataError("every column is constant; there is no density to learn")
    schema = Schema(columns)
    # A column that others determine exactly, checked on the sample (its features are the modelled columns).
    check_independent(schema, moments.sample[:, [i for i, c in enumerate(columns) if c.modelled]], streamed=True)
    return schema


def _pandas_dtype(name: str) -> object:
    """A dtype name as pandas reads it (``Int64``, ``int64``, ``float64``), object when it is none."""
    try:
        return pd.api.types.pandas_dtype(name)
    except TypeError:
        return object


def common_dtype(a: str, b: str) -> str:
    """The dtype of a column whose chunks had dtypes ``a`` and ``b`` (int + float -> float64, as pandas does)."""
    if a == b:
        return a
    try:
        return str(np.result_type(np.dtype(a), np.dtype(b)))
    except TypeError:
        return "float64"
