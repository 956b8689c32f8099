"""What the number-valued roles (continuous, positive, bounded, integer) share.

Such a column is one feature, its value in data units, mapped by the role's ``transform``, then
standardized robustly and given soft tails (both part of the flow, with their log|det|, in ``Preprocess``):

    t = transform(x);  y = (t - median) / scale;  feature = y where |y| <= TAIL_KNEE,
                                                 else sign(y) (TAIL_KNEE + asinh(|y| - TAIL_KNEE))

- **Robust scale**: ``scale = IQR / 1.349`` of the transformed training values (the standard deviation
  of a normal distribution with that interquartile range, so it equals the sd on normal data), or their
  standard deviation when the IQR is 0 (more than half the values equal), or 1 when that is 0 too. A few
  wild values cannot hijack it: a column ~ N(100, 10) with 5 values up to 3e6 has an sd of 4.5e4, which
  squeezed the real rows into a sliver of the standardized space (3.6% of default-config samples landed
  above 1000, where 0.1% of the data is); its IQR / 1.349 is 10.
- **Soft tails**: beyond ``TAIL_KNEE`` robust units the value is compressed logarithmically (asinh of
  the excess: identity, slope and curvature match at the knee, so the density stays smooth). Outliers
  6 orders of magnitude out arrive near 18 instead of 3e5, so they neither dominate the loss and its
  gradients nor the covariance the flow starts from (``layers/linear.Whiten``), and heavy tails reach
  the flow as moderate ones. Normal data is untouched (6e-5 of it lies beyond 4 sd). The map is a
  bijection of the real line with its log|det| in ``logprob``, so densities stay exact in data units.

A column with missing values gets a missingness indicator first (a two-level category), and its missing
values are imputed by ``Preprocess``. A value outside the role's support scores -inf (density 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from ..errors import DataError
from .base import IDENTITY, Encoded, Evidence, FeatureSpec, Role, Transform, indicator_spec
from .written import as_written, parse_written

if TYPE_CHECKING:
    from ..columns import Column

IQR_TO_SD = 1.349  # the interquartile range of a normal distribution, in standard deviations
TAIL_KNEE = 4.0  # robust units beyond which a numeric feature's tails are compressed (see the module docstring)


def robust_location_scale(values: np.ndarray, sd: float | None = None) -> tuple[float, float]:
    """(median, IQR / 1.349) of ``values``; the scale falls back to ``sd`` (default: the values' standard
    deviation) when the IQR is 0, and to 1 when that is 0 too. ``values`` may be a sample of the column
    (the streamed fit's, ``moments.py``) with ``sd`` computed exactly over all of it."""
    q25, median, q75 = np.quantile(values, [0.25, 0.5, 0.75])
    scale = float(q75 - q25) / IQR_TO_SD
    if not scale > 0:
        scale = float(values.std()) if sd is None else sd
    return float(median), scale if scale > 0 else 1.0


class NumericRole(Role):
    """A role whose column is a number: one value feature, plus an indicator if values are missing."""

    transform: ClassVar[Transform] = IDENTITY
    dequantize: ClassVar[float] = 0.0  # the dequantization width of the value feature (0: continuous)
    whole: ClassVar[bool] = False  # decoded values are whole numbers: restore an integer dtype
    writes_numbers = True

    def check(self, column: Column, evidence: Evidence, numbers: np.ndarray, override: Mapping[str, Any]) -> None:
        """Raise a DataError at the first training value outside the role's support. Default: none."""

    def bounds(self, numbers: np.ndarray, override: Mapping[str, Any]) -> tuple[float | None, float | None]:
        """The ``low``/``high`` stored in the column. Default: none."""
        return None, None

    def transform_bounds(self, column: Column) -> tuple[float, float]:
        """The ``low``/``high`` the transform sees. Default: (0, 1), unused by transforms without bounds."""
        return 0.0, 1.0

    def outside(self, column: Column, values: np.ndarray) -> np.ndarray:
        """Per value: outside the support, so its density is 0. Default: nothing is."""
        return np.zeros(len(values), dtype=bool)

    def invalid(self, column: Column, values: np.ndarray, row_offset: int) -> list[tuple[int, str]]:
        """Values this role refuses when scoring, as (position, message). Default: none."""
        return []

    def fit(self, column: Column, evidence: Evidence, override: Mapping[str, Any]) -> Column:
        numbers = evidence.numbers
        if numbers is None:  # only booleans reach here without numbers: text was parsed or refused
            raise DataError(f"column {column.name!r}: true/false values cannot be {self.name}; make it categorical")
        if numbers.size == 0:
            raise DataError(f"column {column.name!r}: every value is missing; it cannot be {self.name}")
        self.check(column, evidence, numbers, override)
        low, high = self.bounds(numbers, override)
        encoded = self.transform.numpy(numbers, 0.0 if low is None else low, 1.0 if high is None else high)
        location, scale = robust_location_scale(encoded)
        return replace(
            column,
            mean=location,
            std=scale,
            low=low,
            high=high,
            fill=float(np.median(numbers)),
        )

    def feature_specs(self, column: Column) -> list[FeatureSpec]:
        low, high = self.transform_bounds(column)
        value = FeatureSpec(
            self.transform, column.mean, column.std, self.dequantize, column.fill, low, high, tail=TAIL_KNEE
        )
        return [indicator_spec(), value] if self.has_indicator(column) else [value]

    def encode(self, column: Column, series: pd.Series, row_offset: int) -> Encoded:
        n = len(series)
        log_mass = np.zeros(n)
        values, invalid = self.parse(column, series, row_offset)
        missing = np.isnan(values)
        bad = {p for p, _ in invalid}
        if missing.any() and not column.missing:
            invalid += [
                (
                    int(p),
                    f"column {column.name!r}, row {row_offset + p + 1}: missing value (the training data had none in this column)",
                )
                for p in np.flatnonzero(missing)
                if p not in bad
            ]
        invalid += self.invalid(column, values, row_offset)
        outside = ~missing & self.outside(column, values)
        log_mass[outside] = -np.inf  # a value outside the support has density 0
        values = np.where(outside, column.fill, values)
        features = [values]
        if self.has_indicator(column):
            features.insert(0, np.where(missing, 1.5, 0.5))
        return features, log_mass, invalid

    def parse(self, column: Column, series: pd.Series, row_offset: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
        """A column's values in the units of the feature (NaN: missing or invalid), and the invalid entries
        as (position, message). Default: numbers, read the way the training values were written."""
        return parse_written(series, column.written, column.name, row_offset)

    def round(self, column: Column, values: np.ndarray) -> np.ndarray:
        """Decoded values onto the role's support before missing values are put back. Default: as they are."""
        return values

    def decode(self, column: Column, features: list[np.ndarray], n: int) -> pd.Series | None:
        values = self.round(column, features[-1])
        if self.has_indicator(column):
            values = np.where(np.floor(features[0]) >= 1, np.nan, values)
        return self.restore(column, values)

    def restore(self, column: Column, values: np.ndarray) -> pd.Series:
        """Decoded values (NaN: missing) as the training column's: its dtype, or text written like it."""
        return as_written(values, column, self.whole)

    def describe(self, column: Column) -> str:
        return f"median {column.mean:.4g}, scale {column.std:.4g}"
