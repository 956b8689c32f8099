"""Column statistics in one streaming pass, mergeable across chunks, files and ranks.

Training on data that does not fit in memory (or that is split across processes) cannot call
``Schema.infer`` on one DataFrame. Instead each chunk contributes its count, mean and sum of squared
deviations, and partial results are merged with the pairwise update of Chan, Golub & LeVeque (1979),
which is exact in exact arithmetic and numerically stable (no ``sum(x**2) - n*mean**2`` cancellation).
The schema built from merged moments matches ``Schema.infer`` on the whole table to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import DataError
from .schema import Column, Schema


@dataclass
class Moments:
    """Count, per-column mean and sum of squared deviations (M2) of the rows seen so far."""

    count: int = 0
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    m2: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @classmethod
    def of(cls, matrix: np.ndarray) -> Moments:
        if len(matrix) == 0:
            return cls(0, np.zeros(matrix.shape[1]), np.zeros(matrix.shape[1]))
        mean = matrix.mean(0)
        return cls(len(matrix), mean, ((matrix - mean) ** 2).sum(0))

    def merge(self, other: Moments) -> Moments:
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / n)
        m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / n)
        return Moments(n, mean, m2)

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation (ddof=0), as numpy's ``std`` and ``Schema.infer`` use."""
        return np.sqrt(np.maximum(self.m2, 0.0) / max(self.count, 1))

    def to_state(self) -> dict:
        return {"count": self.count, "mean": self.mean.tolist(), "m2": self.m2.tolist()}

    @classmethod
    def from_state(cls, state: dict) -> Moments:
        return cls(
            int(state["count"]), np.asarray(state["mean"], dtype=np.float64), np.asarray(state["m2"], dtype=np.float64)
        )


def merge_all(parts: list[Moments]) -> Moments:
    """Merge in list order, so every process merging the same list gets bit-identical statistics."""
    total = Moments()
    for part in parts:
        total = total.merge(part)
    return total


def schema_from_moments(names: list[str], dtypes: list[str], moments: Moments) -> Schema:
    """The schema ``Schema.infer`` would build from the whole table, from its merged moments."""
    if moments.count < 2:
        raise DataError(f"the table has {moments.count} data row(s); at least 2 are needed to fit")
    # Streamed data is modelled with continuous (or constant) columns only: the other roles' inference
    # rules need the whole table (distinct values, labels, missing values), which moments do not keep.
    columns = []
    for i, (name, dtype) in enumerate(zip(names, dtypes, strict=False)):
        std = float(moments.std[i])
        # Chunked moments of a constant column can leave a rounding residue where the whole-table
        # std is exactly 0; treat a std that small relative to the mean as constant too.
        constant = std == 0.0 or std <= 1e-12 * abs(float(moments.mean[i]))
        mean = float(moments.mean[i])
        if constant:
            columns.append(Column(name, "constant", dtype, value=mean, reason="a single value"))
        else:
            columns.append(Column(name, "continuous", dtype, mean, std, fill=mean, reason="numbers (streamed)"))
    if not any(c.modelled for c in columns):
        raise DataError("every column is constant; there is no density to learn")
    return Schema(columns)


def common_dtype(a: str, b: str) -> str:
    """The dtype of a column whose chunks had dtypes ``a`` and ``b`` (int + float -> float64, as pandas does)."""
    if a == b:
        return a
    try:
        return str(np.result_type(np.dtype(a), np.dtype(b)))
    except TypeError:
        return "float64"
