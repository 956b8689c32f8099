"""integer: whole numbers, dequantized: x + u with u ~ U(-1/2, 1/2) in training, u = 0 at scoring, then
standardized. Samples are rounded and clipped to the observed range.

Inferred for whole numbers with more than ``MAX_INTEGER_LEVELS`` distinct values (fewer are categorical).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataError, shown
from .base import MAX_INTEGER_LEVELS, Evidence, register_role
from .numeric import NumericRole, describe_atoms

if TYPE_CHECKING:
    from ..columns import Column


def _fractional(numbers: np.ndarray) -> np.ndarray:
    return numbers != np.round(numbers)


@register_role("integer")
class Integer(NumericRole):
    """A column of whole numbers over a unit lattice."""

    inference_rank = 40  # after categorical, which takes whole numbers with few distinct values
    dequantize = 1.0
    whole = True

    def claims(self, evidence: Evidence) -> str | None:
        numbers = evidence.numbers
        if numbers is None or evidence.distinct <= MAX_INTEGER_LEVELS or _fractional(numbers).any():
            return None
        return f"whole numbers, {evidence.distinct} > {MAX_INTEGER_LEVELS} distinct values"

    def check(self, column: Column, evidence: Evidence, numbers: np.ndarray, override: Mapping[str, Any]) -> None:
        if _fractional(numbers).any():
            pos = evidence.row_of(_fractional(numbers))
            raise DataError(
                f"column {column.name!r}, row {pos + 1}: {shown(evidence.series.iloc[pos])} is not a whole number (the config says integer)"
            )

    def bounds(self, numbers: np.ndarray, override: Mapping[str, Any]) -> tuple[float | None, float | None]:
        return float(numbers.min()), float(numbers.max())  # the observed range: samples are clipped to it

    def invalid(self, column: Column, values: np.ndarray, row_offset: int) -> list[tuple[int, str]]:
        fractional = ~np.isnan(values) & _fractional(values)
        return [
            (
                int(p),
                f"column {column.name!r}, row {row_offset + p + 1}: {shown(values[p])} is not a whole number (the column is integer)",
            )
            for p in np.flatnonzero(fractional)
        ]

    def grid(self, column: Column) -> float | None:
        return column.step or 1.0

    def sampled_range(self, column: Column) -> tuple[float | None, float | None]:
        return column.low, column.high  # the observed range of continuous values

    def sampled_margin(self, column: Column) -> float:
        return (column.step or 1.0) / 2  # 49.4 rounds to 49, the maximum: not outside

    def round(self, column: Column, values: np.ndarray) -> np.ndarray:
        """Rounded to whole numbers (or the learnt step) within the observed range of continuous values."""
        return super().round(column, np.clip(values, *self.sampled_range(column)))

    def describe(self, column: Column) -> str:
        low, high = (column.low or 0.0) + 0.0, (column.high or 0.0) + 0.0  # + 0.0: -0 reads as 0
        parts = [f"{low:g} .. {high:g}", describe_atoms(column)]
        parts.append(f"grid {column.step:g}" if column.step is not None else "")
        return "; ".join(text for text in parts if text)
