"""The contract every column role follows, the registry that maps role names to roles, and shared helpers.

A role is everything flowcli knows about one kind of column: when inference picks it, which keys it
accepts in the config's ``columns:`` section, how it checks and summarizes the training values, the
features it gives the flow (and their preprocessing), how it encodes a column for the flow and decodes
features back, and its one-line description for the table printed at fit time.

A new role is one module in ``flowcli/roles/`` with a ``Role`` subclass decorated with
``@register_role("name")``, imported from ``roles/__init__.py``. Roles are stateless: the statistics of a
column live in its ``Column`` (columns.py), which is what the checkpoint stores; a role is the set of
methods over it. A role whose features need a transform other than the identity (log, logit) defines a
``Transform`` next to it; ``schema.Preprocess`` applies whatever transforms the feature specs name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..errors import shown

if TYPE_CHECKING:
    from ..columns import Column

MAX_INTEGER_LEVELS = 10  # numeric columns with at most this many distinct values are categorical
SET_IN_CONFIG = "set in the config"  # the reason of a role chosen in the config's columns: section

# One encoded column: its features in data units (NaN = missing), the per-row log of the probability
# factor the features cannot express (0, or -inf outside the support), and the invalid entries as
# (position, message).
Encoded = tuple[list[np.ndarray], np.ndarray, list[tuple[int, str]]]


# ---------------------------------------------------------------------------------------- transforms


class Transform:
    """An elementwise bijection t = f(x) of one feature in data units, applied before standardizing.

    ``low``/``high`` are the feature's bounds (0 and 1 where it has none). ``Preprocess`` evaluates a
    transform on the whole feature matrix and keeps its result only where the feature uses it, so the
    other entries are first replaced by ``safe_input`` (no inf or NaN, which would poison gradients)."""

    name: ClassVar[str] = "identity"
    identity: ClassVar[bool] = True  # Preprocess leaves identity features as they are, at no cost

    def forward(self, x: Tensor, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        """t = f(x) and log|dt/dx|, elementwise."""
        return x, torch.zeros_like(x)

    def inverse(self, t: Tensor, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        """x = f^-1(t) and log|dx/dt|, elementwise."""
        return t, torch.zeros_like(t)

    def safe_input(self, x: Tensor, low: Tensor, high: Tensor) -> Tensor:
        """A value inside the transform's domain for every entry (broadcastable to ``x``)."""
        return x

    def numpy(self, x: np.ndarray, low: float, high: float) -> np.ndarray:
        """f(x) on training values, for the standardizing statistics."""
        return x


IDENTITY = Transform()


@dataclass(frozen=True)
class FeatureSpec:
    """The parameters of one feature in the preprocessing layer: y = (f(x) - shift) / scale.

    ``levels`` > 0 makes the feature *discrete*: its value in the feature matrix is ``code + 0.5``, code
    in ``0 .. levels - 1`` (a category, or the state of a numeric column: continuous, missing, an atom),
    and the model gives it an exact probability; ``levels == 0`` is a continuous feature in data units (NaN
    where the row has no continuous value there). ``width`` > 0 dequantizes a feature over that much of
    its unit cell (integers); ``fill`` is an in-domain stand-in, in data units, for a missing value;
    ``tail`` > 0 compresses y beyond +-tail logarithmically (see ``roles/numeric.py``; 0: no compression).
    ``low``/``high`` are the transform's parameters (the bounds of a logit, a bound and a reference
    point for the inverse softplus)."""

    transform: Transform
    shift: float
    scale: float
    width: float
    fill: float
    low: float = 0.0
    high: float = 1.0
    levels: int = 0
    tail: float = 0.0


def discrete_spec(levels: int) -> FeatureSpec:
    """A discrete feature of ``levels`` codes (a category index or a numeric column's state). The model
    reads only ``levels`` (``discrete.DiscreteModel``); discrete features are not preprocessed."""
    return FeatureSpec(IDENTITY, 0.0, 1.0, 0.0, 0.5, levels=levels)


# ---------------------------------------------------------------------------------------- roles


@dataclass(frozen=True)
class Times:
    """A column of dates or times read as instants (``roles/written.py``): microseconds since 1970-01-01
    on the wall clock of ``tz``, the finest unit the values use, and how they were written."""

    micros: np.ndarray  # float64 per present value (whole numbers)
    unit: str  # resolution: D, h, min, s, ms or us
    tz: str | None  # None: naive times
    written: dict[str, Any] | None  # text in a format, or date objects; None for datetime64 values


@dataclass(frozen=True)
class Evidence:
    """What inference read from a training column, computed once and shared by every role's rule."""

    series: pd.Series
    isna: np.ndarray  # per row: the value is missing
    present: pd.Series  # the values that are not missing
    is_bool: bool
    numbers: np.ndarray | None  # the present values as float64; None for text and booleans
    distinct: int  # distinct present values
    times: Times | None = None  # dates and times (then ``numbers`` is None)
    written: dict[str, Any] | None = None  # numbers written as text with separators or %, or Decimals
    decimals: int | None = None  # float numbers with at most this many decimals (1..6)
    unusable: str | None = None  # why no role can model the values (nested, binary, all missing)
    note: str = ""  # added to the reason of the column's role (e.g. codes kept as text)

    @property
    def name(self) -> str:
        return str(self.series.name)

    def row_of(self, bad: np.ndarray) -> int:
        """The position in the column of the first present value flagged in ``bad`` (a mask over ``present``)."""
        return int(np.flatnonzero(~self.isna)[np.argmax(bad)])


class Role:
    """One kind of column. Subclasses set the class attributes and override the methods that differ."""

    name: ClassVar[str] = ""  # set by ``register_role``
    # Position in the order in which inference asks roles to claim a column (lowest first); None: the
    # role is only ever set in the config.
    inference_rank: ClassVar[int | None] = None
    overridable: ClassVar[bool] = True  # may be set in the config's columns: section
    options: ClassVar[tuple[str, ...]] = ()  # the keys it accepts there besides 'role'
    modelled: ClassVar[bool] = True  # False: the column gives the flow no features
    # False: the role never looks at the values, so a column set to it is not parsed at fit time and may
    # be absent when scoring.
    reads_values: ClassVar[bool] = True
    needs_numbers: ClassVar[bool] = True  # set in the config, a text column must parse as numbers
    reads_times: ClassVar[bool] = False  # set in the config, a column is read as dates and times
    # Decoded values are numbers, written back as the training values were (Column.written, decimals).
    writes_numbers: ClassVar[bool] = False
    # True: a missing value is a level of the column itself; False: numeric columns get a state feature.
    missing_level: ClassVar[bool] = False
    takes_atoms: ClassVar[bool] = False  # accepts ``atoms:`` in the config (numeric roles with point masses)

    def parse_options(self, spec: Mapping[str, Any], where: str) -> dict[str, Any]:
        """The validated options of an override (keys already checked against ``options``)."""
        return {}

    def claims(self, evidence: Evidence) -> str | None:
        """Inference: the reason this role fits a column nobody configured, or None."""
        return None

    def fit(self, column: Column, evidence: Evidence, override: Mapping[str, Any]) -> Column:
        """Check the training values and return ``column`` with this role's statistics filled in."""
        return column

    def has_state(self, column: Column) -> bool:
        """The column gets a discrete state feature (continuous / missing / atoms) before its value."""
        return not self.missing_level and (column.missing or bool(column.atoms))

    def feature_specs(self, column: Column) -> list[FeatureSpec]:
        """The column's features for the preprocessing layer, in feature order."""
        return []

    def encode(self, column: Column, series: pd.Series, row_offset: int) -> Encoded:
        """Features of a column in data units (see ``Encoded``)."""
        return [], np.zeros(len(series)), []

    def decode(self, column: Column, features: list[np.ndarray], n: int) -> pd.Series | None:
        """Features back to a column with the training labels and dtype; None if not modelled."""
        return None

    def describe(self, column: Column) -> str:
        """A short summary of the encoding (without the missing-value note, which ``Column`` adds)."""
        raise NotImplementedError

    def stand_in(self, column: Column) -> float:
        """A harmless feature value for an invalid entry (its row scores -inf anyway)."""
        return column.fill

    def never_drawn(self, column: Column, series: pd.Series, row_offset: int) -> np.ndarray:
        """Per value of ``series``: one that the column's samples never hold although it has a density (a
        number outside the range samples are clipped to), so that nothing can be drawn given it. Default:
        none (a value outside the support is caught by ``encode``)."""
        return np.zeros(len(series), dtype=bool)

    def outside_sampled(self, column: Column, features: list[np.ndarray], n: int) -> np.ndarray:
        """Per decoded row: its value lies outside the range samples keep to (so decoding would clip it).
        Sampling draws such rows again (``Model.draw_rows``): clipped, the mass beyond the range piled up
        on its two ends. Default: none."""
        return np.zeros(n, dtype=bool)


ROLE_REGISTRY: dict[str, Role] = {}


def register_role(name: str) -> Callable[[type[Role]], type[Role]]:
    """Class decorator that makes a role available by name (in the config and in checkpoints)."""

    def decorate(cls: type[Role]) -> type[Role]:
        if name in ROLE_REGISTRY:
            raise RuntimeError(f"column role {name!r} registered twice")
        cls.name = name
        ROLE_REGISTRY[name] = cls()
        return cls

    return decorate


def overridable_roles() -> tuple[str, ...]:
    """The names of the roles the config may set, in registration order."""
    return tuple(name for name, role in ROLE_REGISTRY.items() if role.overridable)


def inference_order() -> list[Role]:
    """The roles inference may pick, in the order they are asked."""
    ranked = [r for r in ROLE_REGISTRY.values() if r.inference_rank is not None]
    return sorted(ranked, key=lambda r: r.inference_rank or 0)


# ---------------------------------------------------------------------------------------- helpers


def plain(value: Any) -> Any:
    """A label as a JSON-able Python scalar (numpy ints, floats and bools become Python ones; dates,
    times, Decimals and anything else JSON cannot hold become their text)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return str(value)


def bool_from_text(value: Any) -> Any:
    """``value`` as a boolean when it is text spelling one ("true", " False"), as a table file's booleans are
    read; anything else as it is (a boolean column given as text through the API compares with its labels)."""
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.strip().lower(), value)
    return value


# Missing too, in a column of numbers (the reader's ``type_column``, and scoring here): the usual "not known"
# marks that no number is ("?" in UCI files, "-" in reports). In a column of labels they are labels.
PLACEHOLDERS = ["?", "-", "--", ".", "n.a.", "N.A."]


def is_placeholder(series: pd.Series) -> np.ndarray:
    """Per value: one of ``PLACEHOLDERS`` (spaces around it aside)."""
    return series.map(lambda v: isinstance(v, str) and v.strip() in PLACEHOLDERS).to_numpy(dtype=bool)


def parse_numbers(series: pd.Series, name: str, row_offset: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """A column as float64 (NaN where missing, placeholders included), and the entries that are not numbers."""
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
        bad = np.zeros(len(values), dtype=bool)
    else:
        converted = pd.to_numeric(series, errors="coerce")
        values = converted.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
        bad = np.isnan(values) & series.notna().to_numpy()
        if bad.any():  # (looked for only where a value did not read)
            bad &= ~is_placeholder(series)
    infinite = np.isinf(values)
    invalid = [
        (int(p), f"column {name!r}, row {row_offset + p + 1}: {shown(series.iloc[p])} is not a number")
        for p in np.flatnonzero(bad)
    ]
    invalid += [
        (int(p), f"column {name!r}, row {row_offset + p + 1}: {values[p]} is not a finite number")
        for p in np.flatnonzero(infinite)
    ]
    values[bad | infinite] = np.nan
    return values, invalid


def integer_typed(column: Column, whole: bool) -> bool:
    """Whether decoded values that are ``whole`` numbers take an integer dtype: those of an integer column,
    and of a float column that had gaps (an integer column with missing values, which pandas and the CSV
    reader hold as floats: ``181,,186``). A float column without gaps keeps its floats (``181.0``): its
    file wrote them so, or its frame held them so."""
    if not whole:
        return False
    try:
        kind = np.dtype(column.dtype).kind
    except TypeError:  # Int64 and other pandas dtypes
        return True
    return kind != "f" or column.missing


def restore(values: np.ndarray, dtype_name: str, integer: bool = False) -> pd.Series:
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
    except (TypeError, ValueError):  # a dtype numpy does not know (Int64, str, ...), or values that do not fit it
        try:
            return series.astype(dtype_name)
        except (TypeError, ValueError):
            return series
