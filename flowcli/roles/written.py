"""Values as people write them and as files type them: what a column holds beyond plain numbers and labels.

Read once from the training column (``columns._evidence``), stored in the column (``Column.written``,
``decimals`` and the datetime fields), so that scoring reads values the same way and samples come back
written the same way:

- **Numbers written as text** with thousands separators (``13,786.89``, ``1 234``, ``1'234``) or percent
  signs (``12%``, ``12.5 %``) are numbers when every value of the column is so written, with one
  separator. A percentage is the number before its sign (``12%`` is 12: the column's unit is the
  percentage point, and dividing by 100 would add rounding). Samples are written back the same way
  (separator, sign, decimals). A column mostly of numbers with a value that is not one is an error naming
  the value and its row: a typo, not a text column. (Decimal commas were turned into points by the reader.)
- **Amounts of money**: the same with one currency symbol ($, €, £, ¥) before or after every value
  (``$1,234.50``, ``-$5``, ``12,50 €``): the number, written back with the symbol where it was.
- **Codes**: digit strings with a leading zero or plus sign (``00501``, ``+33612345678``) make a column
  text: its labels are kept exactly as written.
- **Decimals**: floats that all have at most k <= 6 decimals are sampled rounded to k decimals; ``Decimal``
  values (Parquet decimal128) come back as ``Decimal`` with their scale.
- **Dates and times**: datetime64 columns (any unit and time zone), ``datetime.date`` values (Parquet
  date32), and text in one consistent format, tried in ``DATE_FORMATS`` order with the times of
  ``TIME_FORMATS``: ISO first, then day-first before month-first (``01/02/2020`` is the 1st of February
  unless some value, such as ``01/31/2020``, only reads month-first). Read as microseconds on the wall
  clock of the column's time zone.
- **Values no role can model**: nested lists or structs, binary values, a column without any value.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import DataError, shown
from .base import Times, integer_typed, is_placeholder, parse_numbers, restore

if TYPE_CHECKING:
    from ..columns import Column

NUMBER = re.compile(
    r"^(?P<sign>[-+]?)(?P<cur>[$\u20ac\u00a3\u00a5]\s?)?(?P<int>\d{1,3}(?:(?P<sep>[, \u00a0'])\d{3})(?:(?P=sep)\d{3})*|\d+)"
    r"(?:\.(?P<frac>\d+))?(?P<pct>\s?%)?(?P<after>\s?[\u20ac\u00a3\u00a5$])?$"
)
CODE = re.compile(r"^(\+\d+|[-+]?0\d+)$")
MAX_DECIMALS = 6
DATE_FORMATS = (
    "%Y-%m-%d",
    "%Y/%m/%d",
    "%d/%m/%Y",
    "%m/%d/%Y",
    "%d.%m.%Y",
    "%d-%m-%Y",
    "%m-%d-%Y",
    "%d/%m/%y",
    "%m/%d/%y",
    "%d.%m.%y",
    "%d %b %Y",
    "%d %B %Y",
    "%d-%b-%Y",
    "%b %d, %Y",
    "%B %d, %Y",
    "%b %d %Y",
)
TIME_FORMATS = ("", " %H:%M", " %H:%M:%S", " %H:%M:%S.%f", "T%H:%M", "T%H:%M:%S", "T%H:%M:%S.%f")
ZONES = ("%z", " %z")
_DATE_LIKE = re.compile(r"^\d{1,4}[-/. ]|^[A-Za-z]{3,9}\.? \d")
UNIT_STEPS = {"D": 86_400_000_000, "h": 3_600_000_000, "min": 60_000_000, "s": 1_000_000, "ms": 1000, "us": 1}
UNIT_NAMES = {"D": "day", "h": "hour", "min": "minute", "s": "second", "ms": "millisecond", "us": "microsecond"}


@dataclass(frozen=True)
class Values:
    """What a training column holds, for ``Evidence``: numbers (and how written), times, or a note."""

    numbers: np.ndarray | None = None
    written: dict[str, Any] | None = None
    decimals: int | None = None
    times: Times | None = None
    note: str = ""


def unusable(series: pd.Series, present: pd.Series) -> str | None:
    """Why no role can model a column, or None: no value at all, nested values, binary values."""
    if len(present) == 0:
        return "every value is missing"
    if not pd.api.types.is_object_dtype(series):
        return None
    kinds = set(present.map(type))
    if any(issubclass(k, (list, tuple, dict, set, np.ndarray)) for k in kinds):
        return "nested values (lists or structs)"
    if any(issubclass(k, (bytes, bytearray, memoryview)) for k in kinds):
        return "binary values"
    return None


def read_values(series: pd.Series, present: pd.Series, isna: np.ndarray, needs_numbers: bool | None) -> Values:
    """What a column that is not boolean holds. ``needs_numbers``: None when left to inference; True
    when the config's role needs numbers; False when it takes labels as they are."""
    name = str(series.name)
    if pd.api.types.is_numeric_dtype(series):
        numbers = present.to_numpy(dtype=np.float64, na_value=np.nan)
        float_dtype = pd.api.types.is_float_dtype(series)
        return Values(numbers=numbers, decimals=decimals_of(numbers) if float_dtype else None)
    if needs_numbers is None:
        times = read_times(series, present)
        if times is not None:
            return Values(times=times)
    if len(present) and present.map(lambda v: isinstance(v, decimal.Decimal)).all():
        scale = max(max(0, -int(v.as_tuple().exponent)) for v in present)
        return Values(
            numbers=present.map(float).to_numpy(dtype=np.float64), written={"kind": "decimal", "scale": scale}
        )
    if needs_numbers is False or isinstance(series.dtype, pd.CategoricalDtype):
        return Values()
    text = present.map(str).str.strip()
    code = text[text.str.match(CODE)]
    if len(code) and needs_numbers is None:
        return Values(note=f"codes such as {code.iloc[0]!r} are kept as written")
    numbers, written = read_numbers(text, name, np.flatnonzero(~isna), required=bool(needs_numbers))
    if numbers is None:
        return Values()
    return Values(numbers=numbers, written=written, decimals=None if written else decimals_of(numbers))


def decimals_of(numbers: np.ndarray) -> int | None:
    """The most decimals (1..6) any of ``numbers`` has, or None (whole numbers, or more than 6)."""
    finite = numbers[np.isfinite(numbers)]
    if not len(finite) or (finite == np.round(finite)).all() or np.abs(finite).max() >= 1e9:
        return None
    for k in range(1, MAX_DECIMALS + 1):
        if (np.round(finite, k) == finite).all():
            return k
    return None


# ---------------------------------------------------------------------------------------- numbers


def _parts(text: pd.Series) -> pd.DataFrame:
    """The parts of each value as ``NUMBER`` reads it (all NaN where it does not)."""
    return text.str.extract(NUMBER)


def _numbers_of(parts: pd.DataFrame) -> np.ndarray:
    digits = parts["int"].fillna("").str.replace(r"[^\d]", "", regex=True)
    frac = parts["frac"].fillna("")
    joined = parts["sign"].fillna("") + digits + np.where(frac != "", "." + frac, "")
    numbers = pd.to_numeric(joined.where(parts["int"].notna()), errors="coerce")
    return numbers.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)


def read_numbers(
    text: pd.Series, name: str, rows: np.ndarray, required: bool
) -> tuple[np.ndarray | None, dict[str, Any] | None]:
    """Present text values as numbers and, when written with separators or %, how; (None, None) for
    text. Mostly numbers with a value that is not one (or is written differently): an error naming it."""
    parts = _parts(text)
    matched = parts["int"].notna().to_numpy()
    seps, pcts = parts["sep"].dropna(), parts["pct"].notna().to_numpy()
    money = (parts["cur"].fillna("") + "|" + parts["after"].fillna("")).where(parts["int"].notna())
    # The symbol and its place, spaces aside ("$ 5" and "$5" are one way of writing): as scoring compares.
    money_key = money.str.replace(" ", "")
    one_currency = money_key.nunique() <= 1 and (money_key != "|").all()  # every value with one symbol, placed alike
    if (
        matched.all()
        and seps.nunique() <= 1
        and (pcts.all() or not pcts.any())
        and ((money == "|").all() or one_currency)
        and (len(seps) or pcts.any() or one_currency)
    ):
        frac = parts["frac"].fillna("").str.len()
        # Whether numbers of 4 digits or more are written with the separator, or mostly without it (one
        # "4,000" among plain "3750"s): then samples are written plain, and the separator is still read.
        long = parts["int"].str.replace(r"[^\d]", "", regex=True).str.len() >= 4
        grouped = bool(parts["sep"][long].notna().mean() >= 0.5) if long.any() else True
        written = {
            "kind": "number",
            "thousands": seps.iloc[0] if len(seps) else "",
            "grouped": grouped,
            "percent": parts["pct"].dropna().iloc[0] if pcts.any() else "",
            "currency": money.iloc[0] if one_currency else "|",  # the symbol before | after the number
            "decimals": int(frac.max()),
            "fixed": bool(frac.nunique() == 1),
        }
        return _numbers_of(parts), written
    plain = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    parses = ~np.isnan(plain)
    formatted = matched & (parts["sep"].notna().to_numpy() | pcts | (money_key != "|").to_numpy())
    if not required and (parses | matched).mean() <= 0.5:
        return None, None
    if parses.all():
        return plain, None
    if formatted.any():  # written with separators or %: the odd one out is the first unlike the most
        sep = parts["sep"].mode()
        usual = (~parts["sep"].notna() | (parts["sep"] == (sep.iloc[0] if len(sep) else ""))).to_numpy()
        usual = usual & (money_key == money_key[matched].mode().iloc[0]).to_numpy()  # the most common currency, or none
        bad = ~matched | ~usual | (pcts != (pcts.mean() > 0.5))
        like = f" written like the column's other values (e.g. {text[formatted].iloc[0]!r})"
    else:
        bad = ~parses
        like = f" (the column's other values are numbers, e.g. {text[parses].iloc[0]!r})" if parses.any() else ""
    pos = int(np.argmax(bad))
    hint = "" if required else f" (set columns: {{{name}: categorical}} in the config if the column is text)"
    raise DataError(f"column {name!r}, row {rows[pos] + 1}: {shown(text.iloc[pos])} is not a number{like}{hint}")


def example(written: dict[str, Any]) -> str:
    """How a number of a column is written, for messages."""
    return str(format_numbers(np.array([1234.5]), written)[0])


def parse_written(
    series: pd.Series, written: dict[str, Any] | None, name: str, row_offset: int
) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """A column as float64 (NaN where missing) read the way its training values were written, and the
    entries that are not numbers so written, as (position, message)."""
    if not written or written.get("kind") != "number" or pd.api.types.is_numeric_dtype(series):
        return parse_numbers(series, name, row_offset)
    isna = series.isna().to_numpy() | is_placeholder(series)  # "-" in a column of numbers: missing
    text = series.astype(object).where(~isna, "").map(str).str.strip()
    parts = _parts(text)
    values = _numbers_of(parts)
    unlike = parts["sep"].notna() & (parts["sep"] != written["thousands"])
    money = parts["cur"].fillna("") + "|" + parts["after"].fillna("")
    ok = parts["int"].notna() & ~unlike & (parts["pct"].notna() == bool(written["percent"]))
    ok &= money.str.replace(" ", "") == str(written.get("currency", "|")).replace(" ", "")
    bad = ~isna & ~ok.to_numpy()
    values[isna | bad] = np.nan
    invalid = [
        (
            int(p),
            f"column {name!r}, row {row_offset + p + 1}: {shown(series.iloc[p])} is not a number written like {example(written)!r}",
        )
        for p in np.flatnonzero(bad)
    ]
    return values, invalid


def format_numbers(values: np.ndarray, written: dict[str, Any]) -> np.ndarray:
    """Numbers as text written like the column's (NaN -> None)."""
    k, sep, percent = int(written["decimals"]), str(written["thousands"]), str(written["percent"])
    sep = sep if written.get("grouped", True) else ""  # (checkpoints before "grouped" always grouped)
    before, after = str(written.get("currency", "|")).split("|")

    def one(v: float) -> str | None:
        if np.isnan(v):
            return None
        text = f"{v:,.{k}f}" if sep else f"{v:.{k}f}"
        if k and not written["fixed"]:
            text = text.rstrip("0").rstrip(".")
        if text.startswith("-") and not text.strip("-0.,"):
            text = text[1:]  # no "-0.00"
        text = (text.replace(",", sep) if sep and sep != "," else text) + percent
        if before or after:  # -$1,234.50: the sign before the symbol
            sign, digits = ("-", text[1:]) if text.startswith("-") else ("", text)
            text = sign + before + digits + after
        return text

    return np.array([one(float(v)) for v in values], dtype=object)


def as_written(values: np.ndarray, column: Column, whole: bool) -> pd.Series:
    """Decoded numbers (NaN: missing) as the training column's values: text written like it, Decimals
    with its scale, or its dtype (floats rounded to its decimals)."""
    written = column.written or {}
    if written.get("kind") == "number":
        return restore(format_numbers(values, written), column.dtype)
    if written.get("kind") == "decimal":
        scale = int(written["scale"])
        return pd.Series(
            [None if np.isnan(v) else decimal.Decimal(f"{v:.{scale}f}") for v in values.astype(np.float64)],
            dtype=object,
        )
    if column.decimals is not None and not whole:
        values = np.round(values, column.decimals)
    return restore(values, column.dtype, integer=integer_typed(column, whole))


# ---------------------------------------------------------------------------------------- dates and times


def _wall_micros(stamps: pd.Series, tz: str | None) -> np.ndarray:
    """datetime64 values as float64 microseconds since 1970 on the wall clock of ``tz`` (NaN: missing)."""
    if isinstance(stamps.dtype, pd.DatetimeTZDtype):
        stamps = stamps.dt.tz_convert(tz or "UTC").dt.tz_localize(None)
    missing = stamps.isna().to_numpy()
    micros = stamps.astype("datetime64[us]").to_numpy(dtype="datetime64[us]").astype(np.int64).astype(np.float64)
    micros[missing] = np.nan
    return micros


def resolution(micros: np.ndarray) -> str:
    """The coarsest unit that every value is a whole number of."""
    whole = micros[np.isfinite(micros)].astype(np.int64)
    return next((unit for unit, step in UNIT_STEPS.items() if not (whole % step).any()), "us")


ALL_FORMATS = tuple(
    date + time + zone for date in DATE_FORMATS for time in TIME_FORMATS for zone in ("",) + (ZONES if time else ())
)


def _candidates(values: list[str]) -> list[str]:
    """The formats (in ``ALL_FORMATS`` order) that read at least one of ``values``."""
    found = set()
    for value in values:
        if len(value) <= 40 and _DATE_LIKE.match(value):
            for fmt in ALL_FORMATS:
                try:
                    dt.datetime.strptime(value, fmt)
                except ValueError:
                    continue
                found.add(fmt)
    return [fmt for fmt in ALL_FORMATS if fmt in found]


def text_format(text: pd.Series) -> tuple[str | None, float]:
    """The strftime format that reads every value of ``text`` (see the module docstring) and 1.0; or the
    format that reads most of them and the share it reads; or (None, 0.0)."""
    heads = list(dict.fromkeys(str(v).strip() for v in text.iloc[:20]))[:5]
    sample = text.iloc[:: max(1, len(text) // 200)]
    best: tuple[str | None, float] = (None, 0.0)
    for fmt in _candidates(heads):
        share = float(_parse_text(sample, fmt).notna().mean())
        if share == 1.0:
            share = float(_parse_text(text, fmt).notna().mean())
            if share == 1.0:
                return fmt, 1.0
        best = max(best, (fmt, share), key=lambda pair: pair[1])
    return best


def _parse_text(text: pd.Series, fmt: str) -> pd.Series:
    return pd.to_datetime(text, format=fmt, errors="coerce", utc="%z" in fmt)


def read_times(series: pd.Series, present: pd.Series, fmt: str | None = None, required: bool = False) -> Times | None:
    """A column's present values as instants, or None if they are not all dates or times; with
    ``required`` (the config says datetime) that is an error naming the first value that is not one."""
    if pd.api.types.is_datetime64_any_dtype(series) and fmt is None:
        tz = str(series.dt.tz) if isinstance(series.dtype, pd.DatetimeTZDtype) else None
        micros = _wall_micros(present, tz)
        return Times(micros, resolution(micros), tz, None)
    objects = pd.api.types.is_object_dtype(series) and fmt is None
    if objects and present.map(lambda v: isinstance(v, dt.date) and not isinstance(v, dt.datetime)).all():
        micros = _wall_micros(pd.to_datetime(present), None)
        return Times(micros, "D", None, {"kind": "date"})
    if objects and present.map(lambda v: isinstance(v, dt.datetime)).all():
        micros = _wall_micros(pd.to_datetime(present, utc=True), "UTC")
        return Times(micros, resolution(micros), "UTC", None)
    text = present.map(str).str.strip() if len(present) else present
    share = 0.0  # the share of the values the best format reads
    if fmt is None and pd.api.types.is_string_dtype(series) and len(text):
        fmt, share = text_format(text)
    parsed = _parse_text(text, fmt) if fmt else None
    if parsed is None or parsed.isna().any():
        if not required and share <= 0.5:
            return None
        _not_a_time(series, present, parsed, fmt, required)
    assert parsed is not None
    tz = "UTC" if fmt is not None and "%z" in fmt else None
    micros = _wall_micros(parsed, tz)
    return Times(micros, resolution(micros), tz, {"kind": "text", "format": fmt})


def _not_a_time(
    series: pd.Series, present: pd.Series, parsed: pd.Series | None, fmt: str | None, required: bool
) -> None:
    """Raise the error for the first present value that is not a date or time (in ``fmt``)."""
    pos = int(np.argmax(parsed.isna().to_numpy())) if parsed is not None else 0
    row = int(np.flatnonzero(series.notna().to_numpy())[pos]) + 1 if len(present) else 1
    value = present.iloc[pos] if len(present) else None
    if required:
        expected = f"a date or time in the format {fmt!r}" if fmt else "a date or time in a format flowcli recognizes"
        raise DataError(
            f"column {series.name!r}, row {row}: {shown(value)} is not {expected} (the config says datetime)"
        )
    assert parsed is not None
    like = str(present[parsed.notna().to_numpy()].iloc[0])
    raise DataError(
        f"column {series.name!r}, row {row}: {shown(value)} is not a date or time written like the column's other "
        f"values (e.g. {like!r}, format {fmt!r}) (set columns: {{{series.name}: categorical}} in the config if "
        "the column is text)"
    )


def time_values(series: pd.Series, column: Column) -> tuple[np.ndarray, np.ndarray]:
    """A column as float64 microseconds on the wall clock of the column's time zone (NaN: missing or
    not a time), and per row whether a present value is not a date or time."""
    present = series.notna().to_numpy()
    if pd.api.types.is_datetime64_any_dtype(series):
        return _wall_micros(series, column.tz), np.zeros(len(series), dtype=bool)
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return np.full(len(series), np.nan), present
    fmt = (column.written or {}).get("format")
    values = series.astype(object).where(present, None)
    try:
        if fmt:
            parsed = _parse_text(values.map(lambda v: v if v is None else str(v).strip()), fmt)
        else:
            is_text = values.map(lambda v: isinstance(v, str)).to_numpy()
            parsed = pd.to_datetime(
                values, errors="coerce", utc=True, format="ISO8601" if is_text[present].all() else None
            )
    except (ValueError, TypeError, OverflowError):
        parsed = pd.Series(pd.NaT, index=series.index, dtype="datetime64[us]")
    if isinstance(parsed.dtype, pd.DatetimeTZDtype) and not column.tz:
        parsed = parsed.dt.tz_localize(None)
    micros = _wall_micros(parsed, column.tz)
    return micros, present & np.isnan(micros)


def format_times(micros: np.ndarray, column: Column) -> pd.Series:
    """Microseconds on the column's wall clock (NaN: missing) as values of the training column's type:
    text in its format, dates, or datetime64 with its unit and time zone."""
    missing = np.isnan(micros)
    stamps = pd.Series(np.where(missing, 0, micros).astype(np.int64).astype("datetime64[us]")).where(~missing)
    written = column.written or {}
    if written.get("kind") == "date":
        return pd.Series([None if m else d for m, d in zip(missing, stamps.dt.date, strict=True)], dtype=object)
    if column.tz:
        ambiguous = np.zeros(len(stamps), dtype=bool)  # a repeated hour at a DST change: the standard-time one
        stamps = stamps.dt.tz_localize(column.tz, ambiguous=ambiguous, nonexistent="shift_forward")
    if written.get("kind") == "text":
        return restore(stamps.dt.strftime(str(written["format"])).to_numpy(dtype=object), column.dtype)
    try:
        return stamps.astype(column.dtype)
    except (TypeError, ValueError):
        return stamps
