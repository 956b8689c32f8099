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

**State and value.** A column with missing values or atoms (point masses, ``atoms.py``) gets a discrete
*state* feature first, ``levels = 1 + (1 if missing) + len(atoms)``, its value ``code + 0.5``: code 0 =
a continuous value, 1 = missing (only if the column has missing values), then one code per atom in
``Column.atoms`` order. The value feature follows, NaN where the state is not 0. The statistics (median,
scale, fill, bounds) are those of the continuous values only, atoms excluded. A value outside the
role's support scores -inf (density 0); an atom is a discrete outcome, wherever it lies.

**Rounding.** Decoded continuous values are rounded to the column's grid (``atoms.snap``: the learnt step,
or the decimals), kept inside the support and off the atoms. ``logprob`` is the density of the unrounded
value: the rounding is post-processing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from ..errors import DataError
from .atoms import atom_codes, infer_atoms, learn_step, natural_grid, snap
from .base import IDENTITY, Encoded, Evidence, FeatureSpec, Role, Transform, discrete_spec
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
    """A role whose column is a number: one value feature, after a state feature if values are missing
    or the column has atoms."""

    transform: ClassVar[Transform] = IDENTITY
    dequantize: ClassVar[float] = 0.0  # the dequantization width of the value feature (0: continuous)
    whole: ClassVar[bool] = False  # decoded values are whole numbers: restore an integer dtype
    writes_numbers = True
    takes_atoms = True

    def check(self, column: Column, evidence: Evidence, numbers: np.ndarray, override: Mapping[str, Any]) -> None:
        """Raise a DataError at the first training value outside the role's support. Default: none.
        ``numbers`` are the continuous values (atoms excluded), in the order of ``evidence.present``
        with the atoms' positions dropped."""

    def bounds(self, numbers: np.ndarray, override: Mapping[str, Any]) -> tuple[float | None, float | None]:
        """The ``low``/``high`` stored in the column. Default: none."""
        return None, None

    def bound_scale(self, numbers: np.ndarray, low: float | None) -> float | None:
        """The transform's scale stored in the column (``continuous`` with a bound). Default: none."""
        return None

    def transform_of(self, column: Column) -> Transform:
        """The transform of the column's value feature. Default: the role's."""
        return self.transform

    def transform_bounds(self, column: Column) -> tuple[float, float]:
        """The ``low``/``high`` the transform sees. Default: (0, 1), unused by transforms without bounds."""
        return 0.0, 1.0

    def outside(self, column: Column, values: np.ndarray) -> np.ndarray:
        """Per value: outside the support, so its density is 0. Default: nothing is."""
        return np.zeros(len(values), dtype=bool)

    def invalid(self, column: Column, values: np.ndarray, row_offset: int) -> list[tuple[int, str]]:
        """Values this role refuses when scoring, as (position, message). Default: none."""
        return []

    def support(self, column: Column) -> str:
        """Which support the column got and why, for the column table ("" when it is the role's own)."""
        return ""

    def atoms_of(self, column: Column, numbers: np.ndarray, override: Mapping[str, Any]) -> list[float]:
        """The config's atoms, or the inferred ones (``atoms.py``)."""
        if override.get("atoms") is not None:
            return list(override["atoms"])
        return infer_atoms(numbers, column.step or natural_grid(numbers, column.decimals))

    def fit(self, column: Column, evidence: Evidence, override: Mapping[str, Any]) -> Column:
        numbers = evidence.numbers
        if numbers is None:  # only booleans reach here without numbers: text was parsed or refused
            raise DataError(f"column {column.name!r}: true/false values cannot be {self.name}; make it categorical")
        if numbers.size == 0:
            raise DataError(f"column {column.name!r}: every value is missing; it cannot be {self.name}")
        if self.takes_atoms:
            column = replace(column, step=learn_step(numbers, column.decimals))
        atoms = self.atoms_of(column, numbers, override) if self.takes_atoms else []
        codes = atom_codes(numbers, atoms)
        rest = numbers[codes < 0]
        if rest.size == 0:
            raise DataError(
                f"column {column.name!r}: every value is an atom ({', '.join(f'{a:g}' for a in atoms)}); make it categorical"
            )
        self.check(column, _without(evidence, codes >= 0), rest, override)
        low, high = self.bounds(rest, override)
        column = replace(column, low=low, high=high, bound_scale=self.bound_scale(rest, low))
        t_low, t_high = self.transform_bounds(column)
        location, scale = robust_location_scale(self.transform_of(column).numpy(rest, t_low, t_high))
        rows = len(evidence.series)
        return replace(
            column,
            mean=location,
            std=scale,
            fill=float(np.median(rest)),
            atoms=atoms if self.takes_atoms else None,
            atom_rates=[float((codes == i).sum() / rows) for i in range(len(atoms))] if self.takes_atoms else None,
        )

    def state_levels(self, column: Column) -> int:
        """The number of codes of the state feature (0: the column has none)."""
        if not self.has_state(column):
            return 0
        return 1 + int(column.missing) + len(column.atoms or [])

    def feature_specs(self, column: Column) -> list[FeatureSpec]:
        low, high = self.transform_bounds(column)
        value = FeatureSpec(
            self.transform_of(column), column.mean, column.std, self.dequantize, column.fill, low, high, tail=TAIL_KNEE
        )
        levels = self.state_levels(column)
        return [discrete_spec(levels), value] if levels else [value]

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
        codes = atom_codes(values, column.atoms or [])
        continuous = np.where(codes >= 0, np.nan, values)
        invalid += self.invalid(column, continuous, row_offset)
        outside = ~np.isnan(continuous) & self.outside(column, continuous)
        log_mass[outside] = -np.inf  # a value outside the support has density 0
        continuous = np.where(outside, column.fill, continuous)
        levels = self.state_levels(column)
        if not levels:
            return [continuous], log_mass, invalid
        state = np.where(codes >= 0, 1 + int(column.missing) + codes, np.where(missing & column.missing, 1, 0))
        return [state + 0.5, continuous], log_mass, invalid

    def parse(self, column: Column, series: pd.Series, row_offset: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
        """A column's values in the units of the feature (NaN: missing or invalid), and the invalid entries
        as (position, message). Default: numbers, read the way the training values were written."""
        return parse_written(series, column.written, column.name, row_offset)

    def sampled_range(self, column: Column) -> tuple[float | None, float | None]:
        """The range the continuous values of samples are clipped to (``round``); None: not clipped."""
        return None, None

    def never_drawn(self, column: Column, series: pd.Series, row_offset: int) -> np.ndarray:
        low, high = self.sampled_range(column)
        if low is None and high is None:
            return np.zeros(len(series), dtype=bool)
        values, _ = self.parse(column, series, row_offset)
        continuous = np.where(atom_codes(values, column.atoms or []) >= 0, np.nan, values)  # atoms are drawn
        with np.errstate(invalid="ignore"):
            return (continuous < (-np.inf if low is None else low)) | (continuous > (np.inf if high is None else high))

    def sampled_margin(self, column: Column) -> float:
        """How far beyond ``sampled_range`` a value still rounds onto its ends (half a grid step)."""
        return 0.0

    def outside_sampled(self, column: Column, features: list[np.ndarray], n: int) -> np.ndarray:
        low, high = self.sampled_range(column)
        if low is None and high is None:
            return np.zeros(n, dtype=bool)
        values, margin = features[-1], self.sampled_margin(column)
        with np.errstate(invalid="ignore"):
            outside = (values < (-np.inf if low is None else low - margin)) | (
                values > (np.inf if high is None else high + margin)
            )
        if self.state_levels(column):  # only rows whose state is "a value" (not missing, not an atom)
            outside &= np.floor(features[0]) <= 0
        return outside

    def round(self, column: Column, values: np.ndarray) -> np.ndarray:
        """Decoded continuous values onto the role's support and the column's grid (``atoms.snap``)."""
        low, high = self.exclusive_bounds(column)
        return snap(values, self.grid(column), low, high, column.atoms or [])

    def grid(self, column: Column) -> float | None:
        """The grid decoded values are rounded to: the learnt step, else 10^-decimals; None: none."""
        if column.step is not None:
            return column.step
        return 10.0**-column.decimals if column.decimals is not None else None

    def exclusive_bounds(self, column: Column) -> tuple[float | None, float | None]:
        """Bounds the rounded values must stay strictly inside (None: unbounded). Default: none."""
        return None, None

    def decode(self, column: Column, features: list[np.ndarray], n: int) -> pd.Series | None:
        values = self.round(column, features[-1])
        levels = self.state_levels(column)
        if levels:
            codes = np.clip(np.floor(features[0]), 0, levels - 1).astype(np.int64)
            states = np.array([np.nan, *([np.nan] if column.missing else []), *(column.atoms or [])])
            values = np.where(codes == 0, values, states[codes])
        return self.restore(column, values)

    def restore(self, column: Column, values: np.ndarray) -> pd.Series:
        """Decoded values (NaN: missing) as the training column's: its dtype, or text written like it."""
        return as_written(values, column, self.whole)

    def summary(self, column: Column) -> str:
        """The first part of ``describe``: the standardizing statistics."""
        return f"median {column.mean:.4g}, scale {column.std:.4g}"

    def describe(self, column: Column) -> str:
        parts = [self.summary(column)]
        parts += [text for text in (self.support(column), describe_atoms(column)) if text]
        if column.step is not None:
            parts.append(f"grid {column.step:g}")
        return "; ".join(parts)


def _without(evidence: Evidence, atom: np.ndarray) -> Evidence:
    """``evidence`` with the present values flagged in ``atom`` (a mask over ``present``) taken for missing,
    so that ``row_of`` over the remaining values names the right row."""
    isna = evidence.isna.copy()
    isna[np.flatnonzero(~evidence.isna)[atom]] = True
    return replace(evidence, isna=isna, present=evidence.present[~atom])


def describe_atoms(column: Column) -> str:
    """ "atoms: 0 (43.1%), -999 (2%)" or ""."""
    if not column.atoms:
        return ""
    rates = column.atom_rates or [math.nan] * len(column.atoms)
    return "atoms: " + ", ".join(f"{a:g} ({100 * r:.3g}%)" for a, r in zip(column.atoms, rates, strict=False))
