"""datetime: dates and times, modelled as a continuous quantity.

A value is read as an instant on the wall clock of the column's time zone, in whole microseconds
(``roles/written.py``: datetime64 of any unit and zone, date objects, text in one format). Its feature is
the number of days since the column's ``origin`` (a training value near the median, rounded to the
column's resolution), computed in float64 from whole microseconds, then standardized like a continuous
column. Subtracting the origin before anything becomes float32 is what keeps the digits: epoch seconds
(about 1.7e9) in float32 would be off by minutes.

Samples are clipped to the training range, rounded to the column's resolution (whole days for dates,
seconds for timestamps written to the second, ...), and written back as the training column's type:
text in its format, ``datetime.date`` values, or datetime64 with its unit and time zone. The density of
``logprob`` is per day.

Inferred for datetime64 columns, columns of dates, and text whose every value is a date or time in one
format. Set in the config, ``format`` names a strftime format for text (``{role: datetime, format:
"%m/%d/%Y"}``) when the inferred one is not the right one (day-first is tried before month-first).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import ConfigError, shown
from .base import Evidence, register_role
from .numeric import NumericRole
from .written import UNIT_NAMES, UNIT_STEPS, format_times, read_times, time_values

if TYPE_CHECKING:
    from ..columns import Column

DAY = UNIT_STEPS["D"]  # microseconds


@register_role("datetime")
class Datetime(NumericRole):
    """Instants as days since the column's origin, standardized."""

    inference_rank = 15  # after constant (one date is constant); before ignore, which would take dates for identifiers
    options = ("format",)
    needs_numbers = False  # set in the config, text is read as dates, not numbers
    reads_times = True
    takes_atoms = False  # an instant is not a point mass (a default date such as 1900-01-01 could be, later)

    def parse_options(self, spec: Mapping[str, Any], where: str) -> dict[str, Any]:
        fmt = spec.get("format")
        if fmt is not None and (not isinstance(fmt, str) or "%" not in fmt):
            raise ConfigError(f"{where}.format: a strftime format such as '%d/%m/%Y', got {fmt!r}")
        return {"format": fmt}

    def claims(self, evidence: Evidence) -> str | None:
        times = evidence.times
        if times is None:
            return None
        written = times.written or {}
        what = {"text": f"text in the format {written.get('format')!r}", "date": "dates"}.get(written.get("kind", ""))
        zone = f" in {times.tz}" if times.tz else ""
        return f"{what or 'timestamps'}{zone}, to the {UNIT_NAMES[times.unit]}"

    def fit(self, column: Column, evidence: Evidence, override: Mapping[str, Any]) -> Column:
        times = evidence.times
        if times is None or override.get("format"):
            times = read_times(evidence.series, evidence.present, fmt=override.get("format"), required=True)
            assert times is not None  # required: read_times raised otherwise
        step = UNIT_STEPS[times.unit]
        origin = int(np.round(np.median(times.micros) / step)) * step
        days = (times.micros - origin) / DAY
        fitted = super().fit(column, replace(evidence, numbers=days), override)
        return replace(
            fitted, origin=origin, unit=times.unit, tz=times.tz, written=times.written, decimals=None, step=None
        )

    def bounds(self, numbers: np.ndarray, override: Mapping[str, Any]) -> tuple[float | None, float | None]:
        return float(numbers.min()), float(numbers.max())  # the training range: samples are clipped to it

    def parse(self, column: Column, series: pd.Series, row_offset: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
        micros, bad = time_values(series, column)
        fmt = (column.written or {}).get("format")
        in_format = f" in the format {fmt!r}" if fmt else ""
        invalid = [
            (
                int(p),
                f"column {column.name!r}, row {row_offset + p + 1}: {shown(series.iloc[p])} is not a date or time{in_format}",
            )
            for p in np.flatnonzero(bad)
        ]
        return (micros - float(column.origin or 0)) / DAY, invalid

    def sampled_range(self, column: Column) -> tuple[float | None, float | None]:
        return column.low, column.high  # the training range

    def sampled_margin(self, column: Column) -> float:
        return UNIT_STEPS[column.unit or "us"] / DAY / 2  # in days: half the step values are rounded to

    def round(self, column: Column, values: np.ndarray) -> np.ndarray:
        return np.clip(values, *self.sampled_range(column))

    def restore(self, column: Column, values: np.ndarray) -> pd.Series:
        step = UNIT_STEPS[column.unit or "us"]
        offsets = np.rint(values * DAY / step) * step  # whole steps: exact in float64 for any real range
        return format_times(float(column.origin or 0) + offsets, column)

    def describe(self, column: Column) -> str:
        low, high = (self.restore(column, np.array([v])).iloc[0] for v in (column.low or 0.0, column.high or 0.0))
        return f"{low} .. {high}, to the {UNIT_NAMES[column.unit or 'us']}"
