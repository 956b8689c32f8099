"""constant: one value and nothing missing. No features: the value has probability 1, any other
probability 0. Inferred only; a column the config names is never constant. (A column without any value
is ignored, see ``ignore``.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import shown
from .base import Encoded, Evidence, Role, plain, register_role, restore

if TYPE_CHECKING:
    from ..columns import Column


@register_role("constant")
class Constant(Role):
    """A column with a single value: mass 1 there."""

    inference_rank = 10  # first: one value is constant whatever its type
    overridable = False
    modelled = False

    def claims(self, evidence: Evidence) -> str | None:
        if evidence.distinct == 1 and not evidence.isna.any():
            return "a single value"
        return None

    def fit(self, column: Column, evidence: Evidence, override: Mapping[str, Any]) -> Column:
        return replace(column, value=None if evidence.distinct == 0 else plain(evidence.present.iloc[0]))

    def encode(self, column: Column, series: pd.Series, row_offset: int) -> Encoded:
        log_mass = np.zeros(len(series))
        log_mass[~_equals(series, column.value)] = -np.inf
        return [], log_mass, []

    def decode(self, column: Column, features: list[np.ndarray], n: int) -> pd.Series | None:
        return restore(np.full(n, column.value, dtype=object), column.dtype)

    def describe(self, column: Column) -> str:
        return f"always {shown(column.value)}"


def _equals(series: pd.Series, value: Any) -> np.ndarray:
    """Per row: the value equals the constant (numbers compared as numbers, so 5 == 5.0 == "5"; a date
    or Decimal, stored as its text, by its text)."""
    if value is None:
        return series.isna().to_numpy()
    try:
        numeric = float(value) if not isinstance(value, (str, bool)) else None
    except (TypeError, ValueError):
        numeric = None
    if numeric is not None:
        parsed = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        return parsed == numeric
    if isinstance(value, str) and not pd.api.types.is_string_dtype(series):
        series = series.astype(object).map(lambda v: v if isinstance(v, str) or pd.isna(v) else str(v))
    return (series.astype(object) == value).to_numpy(dtype=bool)
