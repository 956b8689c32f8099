"""Column roles: how each column of a table is inferred, checked, encoded for the flow and decoded.

A column becomes zero, one or two *features* (coordinates the flow sees):

    role         features   encoding of a value x (before standardizing)
    continuous   value      x
    positive     value      log x
    bounded      value      logit((x - low) / (high - low))
    integer      value      x, dequantized: x + u with u ~ U(-1/2, 1/2) in training, u = 0 at scoring
    categorical  value      k + 1/2 + u for the category index k of K levels, u ~ U(-1/4, 1/4) in training,
                            u = 0 at scoring: the middle half of unit cell k (see ``CATEGORY_WIDTH``)
    constant     none       (mass 1 at the training value)
    ignore       none       (not modelled)

A numeric column with missing values gets a missingness indicator first (a two-level categorical
feature) and its value second; a categorical one gets a "missing" level instead. How each of these
enters ``logprob`` is documented in the README ("What logprob means") and in ``Preprocess``.

Inference is deliberately conservative, and each column carries the reason it got its role:

- booleans and text -> categorical (text that is mostly numbers is a typo -> error naming the value);
  text with more than ``ID_LIKE_MIN`` distinct values, nearly one per row, -> ignore (an identifier);
- one value and nothing missing -> constant;
- numbers with at most ``MAX_INTEGER_LEVELS`` distinct values -> categorical (a density would put spikes
  of unbounded height on so few values; a value not seen in training then has probability 0);
- other numbers that are all whole -> integer;
- other numbers -> continuous. Positive and bounded are never inferred (a log or logit changes what the
  density means, which the user should choose); set them in the ``columns:`` section of the config.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from .errors import ConfigError, DataError

ROLES = ("continuous", "positive", "bounded", "integer", "categorical", "constant", "ignore")
OVERRIDABLE = ("continuous", "positive", "bounded", "integer", "categorical", "ignore")
MAX_INTEGER_LEVELS = 10  # numeric columns with at most this many distinct values are categorical
ID_LIKE_MIN = 100  # text columns with more distinct values than this, nearly one per row, are identifiers
# Categories are dequantized over the middle half of their unit cell, not all of it. The gap between
# neighbouring categories lets a smooth flow drop its density between them instead of having to draw a
# cliff at the cell boundary, which it cannot, and which otherwise leaks much of a common category's mass
# into a rare neighbour (a 0.6% missing rate came out as 16% in samples of penguins.csv with full cells).
CATEGORY_WIDTH = 0.5

# Feature kinds of the preprocessing layer.
AFFINE, LOG, LOGIT = 0, 1, 2


def parse_column_overrides(raw: Any) -> dict[str, dict[str, Any]]:
    """Validate the ``columns:`` section of a config: ``name: role`` or ``name: {role: bounded, low: 0, high: 1}``."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"columns: expected a mapping of column name to role, got {raw!r}")
    out: dict[str, dict[str, Any]] = {}
    for name, spec in raw.items():
        where = f"columns.{name}"
        if isinstance(spec, str):
            spec = {"role": spec}
        if not isinstance(spec, dict) or "role" not in spec:
            raise ConfigError(f"{where}: expected a role ({', '.join(OVERRIDABLE)}) or a mapping with a 'role' key")
        role = spec["role"]
        if role not in OVERRIDABLE:
            close = difflib.get_close_matches(str(role), OVERRIDABLE, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}.role: unknown role {role!r}{hint}; allowed: {', '.join(OVERRIDABLE)}")
        allowed = {"role", "low", "high"} if role == "bounded" else {"role"}
        for key in spec:
            if key not in allowed:
                raise ConfigError(
                    f"{where}.{key}: unknown key for role {role!r}; allowed keys: {', '.join(sorted(allowed))}"
                )
        if role == "bounded":
            for key in ("low", "high"):
                value = spec.get(key)
                if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                    raise ConfigError(f"{where}.{key}: a bounded column needs a finite number, got {value!r}")
            if not spec["low"] < spec["high"]:
                raise ConfigError(f"{where}: low ({spec['low']}) must be less than high ({spec['high']})")
            spec = {"role": role, "low": float(spec["low"]), "high": float(spec["high"])}
        out[str(name)] = dict(spec)
    return out


def _plain(value: Any) -> Any:
    """A label as a JSON-able Python scalar (numpy ints, floats and bools become Python ones)."""
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass
class Column:
    """One training column: its role, the statistics of its encoding, and why it got that role.

    ``mean``/``std`` standardize the encoded value of a numeric column. Categorical features and
    missingness indicators are centred and scaled by their number of levels K, not by the data:
    standardizing a rare level's indicator would put it many deviations out. ``fill`` is an in-domain stand-in (in data units) for missing or out-of-support values.
    """

    name: str
    role: str
    dtype: str  # the pandas dtype of the training column, restored on output
    mean: float = 0.0
    std: float = 1.0
    low: float | None = None  # bounded: the bounds; integer: the observed range (samples are clipped to it)
    high: float | None = None
    categories: list[Any] | None = None  # categorical: the labels, in index order (missing excluded)
    missing: bool = False  # training had missing values: an indicator (numeric) or a "missing" level
    missing_rate: float = 0.0
    fill: float = 0.0
    value: Any = None  # constant: the value
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def modelled(self) -> bool:
        return self.role not in ("constant", "ignore")

    @property
    def has_indicator(self) -> bool:
        return self.missing and self.role != "categorical"

    @property
    def levels(self) -> int:
        """Categorical: the number of cells, the "missing" level included."""
        return len(self.categories or []) + int(self.missing)

    @property
    def width(self) -> int:
        """Number of features the flow sees for this column."""
        return int(self.modelled) + int(self.modelled and self.has_indicator)

    def describe(self) -> str:
        """A short human summary of the encoding, for the table printed at fit time."""
        if self.role == "categorical":
            shown = ", ".join(str(c) for c in (self.categories or [])[:6])
            more = ", ..." if len(self.categories or []) > 6 else ""
            text = f"{len(self.categories or [])} levels: {shown}{more}"
        elif self.role == "integer":
            text = f"{self.low:g} .. {self.high:g}"
        elif self.role == "bounded":
            text = f"({self.low:g}, {self.high:g})"
        elif self.role == "constant":
            text = f"always {self.value!r}"
        elif self.role == "ignore":
            text = "not modelled"
        else:
            text = f"mean {self.mean:.4g}, sd {self.std:.4g}" + (" (of log)" if self.role == "positive" else "")
        if self.missing:
            how = "'missing' level" if self.role == "categorical" else "indicator"
            text += f"; missing {100 * self.missing_rate:.2g}% ({how})"
        return text

    # ------------------------------------------------------------------ features for the flow

    def feature_specs(self) -> list[dict[str, Any]]:
        """The per-feature parameters of the preprocessing layer, in feature order."""

        def spec(
            kind: int,
            shift: float,
            scale: float,
            width: float,
            fill: float,
            low: float = 0.0,
            high: float = 1.0,
            integrate: bool = False,
        ) -> dict[str, Any]:
            return {
                "kind": kind,
                "shift": shift,
                "scale": scale,
                "width": width,
                "fill": fill,
                "low": low,
                "high": high,
                "integrate": integrate,
            }

        specs = []
        if self.has_indicator:
            specs.append(spec(AFFINE, 1.0, 1.0, CATEGORY_WIDTH, 0.5, integrate=True))
        if self.role in ("continuous", "integer"):
            specs.append(spec(AFFINE, self.mean, self.std, 1.0 if self.role == "integer" else 0.0, self.fill))
        elif self.role == "positive":
            specs.append(spec(LOG, self.mean, self.std, 0.0, self.fill))
        elif self.role == "bounded":
            assert self.low is not None and self.high is not None
            specs.append(spec(LOGIT, self.mean, self.std, 0.0, self.fill, self.low, self.high))
        elif self.role == "categorical":
            k = self.levels  # cells [0, k) centred on 0, scaled so many levels do not span a huge range
            specs.append(spec(AFFINE, k / 2, max(1.0, k / 4), CATEGORY_WIDTH, 0.5, integrate=True))
        return specs

    def encode(self, series: pd.Series, row_offset: int) -> tuple[list[np.ndarray], np.ndarray, list[tuple[int, str]]]:
        """Features of a column in data units (NaN = missing value, imputed by the flow's preprocessing),
        the log of the probability factor the encoding cannot express (0, or -inf outside the support),
        and the invalid entries as (position, message)."""
        n = len(series)
        log_mass = np.zeros(n)
        if self.role == "ignore":
            return [], log_mass, []
        if self.role == "constant":
            log_mass[~_equals(series, self.value)] = -np.inf
            return [], log_mass, []
        if self.role == "categorical":
            codes, invalid = self._codes(series, row_offset)
            return [codes + 0.5], log_mass, invalid
        values, invalid = _parse_numbers(series, self.name, row_offset)
        missing = np.isnan(values)
        bad = {p for p, _ in invalid}
        if missing.any() and not self.missing:
            invalid += [
                (
                    int(p),
                    f"column {self.name!r}, row {row_offset + p + 1}: missing value (the training data had none in this column)",
                )
                for p in np.flatnonzero(missing)
                if p not in bad
            ]
        if self.role == "integer":
            fractional = ~missing & (values != np.round(values))
            invalid += [
                (
                    int(p),
                    f"column {self.name!r}, row {row_offset + p + 1}: {values[p]!r} is not a whole number (the column is integer)",
                )
                for p in np.flatnonzero(fractional)
            ]
        outside = np.zeros(n, dtype=bool)
        if self.role == "positive":
            outside = ~missing & (values <= 0)
        elif self.role == "bounded":
            outside = ~missing & ((values <= self.low) | (values >= self.high))
        log_mass[outside] = -np.inf  # a value outside the support has density 0
        values = np.where(outside, self.fill, values)
        features = [values]
        if self.has_indicator:
            features.insert(0, np.where(missing, 1.5, 0.5))
        return features, log_mass, invalid

    def _codes(self, series: pd.Series, row_offset: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
        labels = list(self.categories or [])
        lookup = {label: i for i, label in enumerate(labels)}
        values = series
        if (
            labels
            and all(isinstance(c, str) for c in labels)
            and not (pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series))
        ):
            # A chunk of a text column may have been parsed as numbers: compare as text.
            values = series.astype(object).where(series.notna(), None).map(lambda v: v if v is None else str(v))
        codes = pd.Series(values, dtype=object).map(lookup).to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
        isna = series.isna().to_numpy()
        if self.missing:
            codes[isna] = len(labels)
        invalid = []
        for p in np.flatnonzero(np.isnan(codes)):
            if isna[p]:
                message = "missing value (the training data had none in this column)"
            else:
                known = ", ".join(repr(c) for c in labels[:8]) + (", ..." if len(labels) > 8 else "")
                message = f"unseen category {_plain(series.iloc[p])!r} (known: {known})"
            invalid.append((int(p), f"column {self.name!r}, row {row_offset + p + 1}: {message}"))
        return np.nan_to_num(codes, nan=0.0), invalid

    def decode(self, features: list[np.ndarray], n: int) -> pd.Series | None:
        """Features back to a column with the training labels and dtype; None for ignored columns."""
        if self.role == "ignore":
            return None
        if self.role == "constant":
            return _restore(np.full(n, self.value, dtype=object), self.dtype)
        if self.role == "categorical":
            (x,) = features
            codes = np.clip(np.floor(x), 0, self.levels - 1).astype(np.int64)
            labels = np.array(list(self.categories or []) + [None], dtype=object)
            return _restore(labels[codes], self.dtype)
        values = features[-1]
        if self.role == "integer":
            values = np.clip(np.rint(values), self.low, self.high)
        if self.has_indicator:
            values = np.where(np.floor(features[0]) >= 1, np.nan, values)
        if self.role == "integer":
            return _restore(values, self.dtype, integer=True)
        return _restore(values, self.dtype)


def _equals(series: pd.Series, value: Any) -> np.ndarray:
    if value is None:
        return series.isna().to_numpy()
    try:
        numeric = float(value) if not isinstance(value, (str, bool)) else None
    except (TypeError, ValueError):
        numeric = None
    if numeric is not None:
        parsed = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        return parsed == numeric
    return (series.astype(object) == value).to_numpy(dtype=bool)


def _parse_numbers(series: pd.Series, name: str, row_offset: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """A column as float64 (NaN where missing), and the entries that are not numbers."""
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
        bad = np.zeros(len(values), dtype=bool)
    else:
        converted = pd.to_numeric(series, errors="coerce")
        values = converted.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
        bad = np.isnan(values) & series.notna().to_numpy()
    infinite = np.isinf(values)
    invalid = [
        (int(p), f"column {name!r}, row {row_offset + p + 1}: {series.iloc[p]!r} is not a number")
        for p in np.flatnonzero(bad)
    ]
    invalid += [
        (int(p), f"column {name!r}, row {row_offset + p + 1}: {values[p]} is not a finite number")
        for p in np.flatnonzero(infinite)
    ]
    values[bad | infinite] = np.nan
    return values, invalid


def _restore(values: np.ndarray, dtype_name: str, integer: bool = False) -> pd.Series:
    """Values (an object or float array, None/NaN = missing) as a Series of the training dtype.

    Integer columns that had missing values come back as pandas' nullable ``Int64``, so whole numbers
    stay whole numbers; booleans with missing values as nullable ``boolean``."""
    series = pd.Series(values)
    has_missing = bool(series.isna().any())
    try:
        if integer and (has_missing or np.dtype(dtype_name).kind not in "iu"):
            return series.astype("Int64" if has_missing or np.dtype(dtype_name).kind == "f" else dtype_name)
        if dtype_name == "bool" and has_missing:
            return series.astype("boolean")
        if has_missing and np.dtype(dtype_name).kind in "iu":
            return series.astype("Int64")
        return series.astype(dtype_name)
    except (TypeError, ValueError):
        try:
            return series.astype(dtype_name)
        except (TypeError, ValueError):
            return series


# ---------------------------------------------------------------------------------------- inference


def infer_column(series: pd.Series, override: dict[str, Any] | None) -> Column:
    """The role and statistics of one training column (see the module docstring for the rules)."""
    name = str(series.name)
    dtype = str(series.dtype)
    n = len(series)
    isna = series.isna().to_numpy()
    missing_rate = float(isna.mean())
    role = override["role"] if override else None
    base = {"name": name, "dtype": dtype, "missing": bool(isna.any()), "missing_rate": missing_rate}
    if role == "ignore":
        return Column(role="ignore", reason="set in the config", **base)

    present = series[~isna]
    textual = not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series))
    is_bool = pd.api.types.is_bool_dtype(series) or (
        len(present) > 0
        and pd.api.types.is_object_dtype(series)
        and bool(present.map(type).isin([bool, np.bool_]).all())
    )
    numbers: np.ndarray | None = None
    if not is_bool:
        parsed = pd.to_numeric(present, errors="coerce") if textual else present
        parsed_values = np.asarray(parsed, dtype=np.float64)
        parses = ~np.isnan(parsed_values)
        if not textual or (role != "categorical" and (role is not None or parses.mean() > 0.5)):
            if not parses.all():
                pos = int(np.flatnonzero(~isna)[np.argmin(parses)])
                raise DataError(
                    f"column {name!r}, row {pos + 1}: {series.iloc[pos]!r} is not a number"
                    + (
                        f" (set columns: {{{name}: categorical}} in the config if the column is text)"
                        if role is None
                        else ""
                    )
                )
            if np.isinf(parsed_values).any():
                pos = int(np.flatnonzero(~isna)[np.argmax(np.isinf(parsed_values))])
                raise DataError(f"column {name!r}, row {pos + 1}: {series.iloc[pos]!r} is not a finite number")
            numbers = parsed_values
    distinct = present.nunique()

    if role is None:
        if distinct == 0 or (distinct == 1 and not isna.any()):
            value = None if distinct == 0 else _plain(present.iloc[0])
            return Column(
                role="constant", value=value, reason="a single value" if distinct else "every value is missing", **base
            )
        if numbers is None:
            if not is_bool and distinct > ID_LIKE_MIN and distinct > 0.9 * len(present):
                return Column(
                    role="ignore", reason=f"text with {distinct} distinct values in {n} rows: an identifier", **base
                )
            role, reason = "categorical", "booleans" if is_bool else "text"
        elif distinct <= MAX_INTEGER_LEVELS:
            # A continuous density would put spikes of unbounded height on so few values.
            role, reason = "categorical", f"numbers with {distinct} <= {MAX_INTEGER_LEVELS} distinct values"
        elif np.all(numbers == np.round(numbers)):
            role, reason = "integer", f"whole numbers, {distinct} > {MAX_INTEGER_LEVELS} distinct values"
        else:
            role, reason = "continuous", "numbers"
    else:
        reason = "set in the config"

    if role == "categorical":
        return _categorical(present, base, reason)
    assert numbers is not None
    if numbers.size == 0:
        raise DataError(f"column {name!r}: every value is missing; it cannot be {role}")
    if role == "integer" and not np.all(numbers == np.round(numbers)):
        pos = int(np.flatnonzero(~isna)[np.argmax(numbers != np.round(numbers))])
        raise DataError(
            f"column {name!r}, row {pos + 1}: {series.iloc[pos]!r} is not a whole number (the config says integer)"
        )
    if role == "positive" and (numbers <= 0).any():
        pos = int(np.flatnonzero(~isna)[np.argmax(numbers <= 0)])
        raise DataError(f"column {name!r}, row {pos + 1}: {series.iloc[pos]!r} is not > 0 (the config says positive)")
    low, high = (override or {}).get("low"), (override or {}).get("high")
    if role == "bounded" and ((numbers <= low) | (numbers >= high)).any():
        pos = int(np.flatnonzero(~isna)[np.argmax((numbers <= low) | (numbers >= high))])
        raise DataError(
            f"column {name!r}, row {pos + 1}: {series.iloc[pos]!r} is not strictly between {low:g} and {high:g} (the config's bounds)"
        )
    if role == "integer":
        low, high = float(numbers.min()), float(numbers.max())
    if role == "positive":
        encoded = np.log(numbers)
    elif role == "bounded":
        encoded = _logit((numbers - low) / (high - low))
    else:
        encoded = numbers
    std = float(encoded.std())
    return Column(
        role=role,
        mean=float(encoded.mean()),
        std=std if std > 0 else 1.0,
        low=low,
        high=high,
        fill=float(np.median(numbers)),
        reason=reason,
        **base,
    )


def _categorical(present: pd.Series, base: dict[str, Any], reason: str) -> Column:
    counts = present.value_counts(sort=False)
    try:
        labels = sorted(counts.index.tolist())
    except TypeError:  # mixed label types: keep the order of first appearance
        labels = counts.index.tolist()
    column = Column(role="categorical", categories=[_plain(v) for v in labels], reason=reason, **base)
    if column.levels < 2:
        raise DataError(f"column {base['name']!r}: a categorical column needs at least two levels")
    return column


def _logit(u: np.ndarray) -> np.ndarray:
    return np.log(u) - np.log1p(-u)


def columns_from_dicts(raw: list[dict[str, Any]]) -> list[Column]:
    known = {f for f in Column.__dataclass_fields__}
    return [Column(**{k: v for k, v in c.items() if k in known}) for c in raw]


__all__ = ["ROLES", "Column", "columns_from_dicts", "infer_column", "parse_column_overrides"]
