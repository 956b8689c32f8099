"""Columns: how each column of a table is inferred, checked, encoded for the flow and decoded.

A column becomes zero, one or two *features* (coordinates the flow sees). What a column does is its
*role*, a class in ``flowcli/roles/`` registered by name; ``Column`` holds the role's name and the
statistics it fitted (what the checkpoint stores) and hands every question to the role:

    role         features   encoding of a value x (before standardizing)
    continuous   value      x; log(expm1(x / s)) when the continuous values are all > 0 (kept support)
    positive     value      log x
    bounded      value      logit((x - low) / (high - low))
    integer      value      x, dequantized: x + u with u ~ U(-1/2, 1/2) in training, u = 0 at scoring
    categorical  discrete   k + 1/2 for the category index k of K levels (+ a "missing" level)
    datetime     value      days since the column's origin (a training value), from whole microseconds
    constant     none       (mass 1 at the training value)
    ignore       none       (not modelled)

A *discrete* feature (``FeatureSpec.levels`` > 0) holds ``code + 0.5`` and gets an exact probability
from the model; a continuous one holds a value in data units, NaN where the row has none. A numeric
column with missing values or atoms (point masses: ``roles/atoms.py`` has the rule) gets a discrete
*state* feature first (0 = a continuous value, 1 = missing if the column has missing values, then one
code per atom) and its value second, NaN unless the state is 0; a categorical one gets a "missing"
level instead. How each of these enters ``logprob`` is documented in the README ("What logprob
means").

Atoms, the kept support and the grid of numeric columns (``roles/atoms.py``, ``roles/continuous.py``):

- a value is an atom if it holds at least 1% of the present values and at least 10 rows, and at least
  4 times as many rows as the most common of its neighbours within 2 steps on the column's grid (the
  step: 1 for whole numbers, the learnt step, 10^-decimals; floats without a grid have no neighbours); in a column
  of values >= 0, 0 is an atom whenever it occurs (one row is enough); at most 8 atoms: that zero, then the most common.
  ``columns: {x: {atoms: [0]}}`` sets them (the role stays inferred), ``atoms: []`` switches them off.
  The column's statistics (median, scale, fill, bounds, support) are those of its other values;
- a continuous column whose other values are all > 0 gets the support x > 0 (an inverse softplus);
  integers keep their observed range, positive and bounded their own support;
- floats are rounded to their decimals, and to a learnt step (0.25, 5, ...) when nearly all distinct
  values are multiples of one; samples are rounded, kept inside the support and off the atoms.

Inference is deliberately conservative, and each column carries the reason it got its role. Roles are
asked in the order of their ``inference_rank`` and the first to claim the column gets it:

- one value and nothing missing -> constant;
- dates and times (datetime64, date objects, text in one date format) -> datetime;
- no value at all, nested values, binary values -> ignore, and so is text with more than ``ID_LIKE_MIN``
  distinct values, nearly one per row (an identifier);
- booleans and text -> categorical (text that is mostly numbers is a typo -> error naming the value;
  numbers written with thousands separators or percent signs are numbers: see ``roles/written.py``);
- numbers with at most ``MAX_INTEGER_LEVELS`` distinct values -> categorical (a density would put spikes
  of unbounded height on so few values; a value not seen in training then has probability 0);
- other numbers that are all whole -> integer;
- other numbers -> continuous. Positive and bounded are never inferred (a log or logit changes what the
  density means, which the user should choose); set them in the ``columns:`` section of the config.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from .errors import ConfigError, DataError, shown
from .roles import (
    ID_LIKE_MIN,
    MAX_INTEGER_LEVELS,
    ROLE_REGISTRY,
    SET_IN_CONFIG,
    Encoded,
    Evidence,
    FeatureSpec,
    Role,
    inference_order,
    overridable_roles,
    parse_numbers,
    read_values,
    unusable,
)
from .roles.atoms import parse_atoms

# The built-in roles as registered on import (the override parser reads the registry itself, so a role
# registered later is accepted too).
ROLES = tuple(ROLE_REGISTRY)
OVERRIDABLE = overridable_roles()
# datasource.py parses streamed chunks with the same parser, under its former private name here.
_parse_numbers = parse_numbers


def parse_column_overrides(raw: Any) -> dict[str, dict[str, Any]]:
    """Validate the ``columns:`` section of a config: ``name: role``, ``name: {role: bounded, low: 0, high: 1}``,
    or ``name: {atoms: [0]}`` (atoms of a numeric column, its role left to inference; ``[]``: none)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"columns: expected a mapping of column name to role, got {raw!r}")
    roles = overridable_roles()
    out: dict[str, dict[str, Any]] = {}
    for name, spec in raw.items():
        where = f"columns.{name}"
        if isinstance(spec, str):
            spec = {"role": spec}
        if not isinstance(spec, dict) or not ("role" in spec or set(spec) == {"atoms"}):
            raise ConfigError(
                f"{where}: expected a role ({', '.join(roles)}) or a mapping with a 'role' key (or only 'atoms')"
            )
        parsed: dict[str, Any] = {}
        if "role" in spec:
            parsed = _parse_role(spec, where, roles)
        if "atoms" in spec:
            parsed["atoms"] = parse_atoms(spec["atoms"], f"{where}.atoms")
        out[str(name)] = parsed
    return out


def _parse_role(spec: dict[str, Any], where: str, roles: tuple[str, ...]) -> dict[str, Any]:
    """The role of an override mapping and its validated options (``atoms`` is parsed by the caller)."""
    role = spec["role"]
    if role not in roles:
        close = difflib.get_close_matches(str(role), roles, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{where}.role: unknown role {role!r}{hint}; allowed: {', '.join(roles)}")
    rules = ROLE_REGISTRY[role]
    allowed = {"role", *rules.options, *(("atoms",) if rules.takes_atoms else ())}
    for key in spec:
        if key not in allowed:
            raise ConfigError(
                f"{where}.{key}: unknown key for role {role!r}; allowed keys: {', '.join(sorted(allowed))}"
            )
    return {"role": role, **rules.parse_options(spec, where)}


@dataclass
class Column:
    """One training column: its role, the statistics of its encoding, and why it got that role.

    ``mean``/``std`` standardize the encoded value of a numeric column: its location and scale, which are
    the median and IQR / 1.349 since flowcli standardizes robustly (``roles/numeric.py``; the field names
    are kept from when they were the mean and sd), of its continuous values (atoms excluded). Discrete
    features (categories, states) are not standardized. ``fill`` is an in-domain stand-in (in data units)
    for missing or out-of-support values.
    """

    name: str
    role: str
    dtype: str  # the pandas dtype of the training column, restored on output
    mean: float = 0.0
    std: float = 1.0
    low: float | None = None  # bounded: the bounds; integer: the observed range (samples are clipped to it)
    high: float | None = None
    categories: list[Any] | None = None  # categorical: the labels, in index order (missing excluded)
    # categorical from a pandas Categorical with categories no row holds: all of them, in the dtype's order,
    # so outputs keep the training dtype (the model gives the unused ones probability 0); else None
    dtype_categories: list[Any] | None = None
    missing: bool = False  # training had missing values: a state code (numeric) or a "missing" level
    missing_rate: float = 0.0
    fill: float = 0.0
    value: Any = None  # constant: the value
    reason: str = ""
    written: dict[str, Any] | None = None  # how the values were written, if not plainly (roles/written.py)
    decimals: int | None = None  # floats with at most this many decimals: samples are rounded to them
    origin: int | None = None  # datetime: microseconds since 1970 (wall clock) of the value that is day 0
    unit: str | None = None  # datetime: the resolution of the values (D, h, min, s, ms, us)
    tz: str | None = None  # datetime: the time zone of the values (None: naive)
    ordered: bool = False  # categorical: the levels are ordered, in ``categories`` order
    atoms: list[float] | None = None  # numeric: the point masses, in state-code order (roles/atoms.py)
    atom_rates: list[float] | None = None  # numeric: each atom's share of the training rows
    step: float | None = None  # numeric: the learnt grid step, coarser than the decimals (samples are rounded to it)
    bound_scale: float | None = None  # continuous with a lower bound: the s of t = log(expm1((x - low) / s))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def rules(self) -> Role:
        """The registered role that implements this column's ``role``."""
        return ROLE_REGISTRY[self.role]

    @property
    def modelled(self) -> bool:
        return self.rules.modelled

    @property
    def has_state(self) -> bool:
        """A numeric column with a discrete state feature (missing values or atoms) before its value."""
        return self.rules.has_state(self)

    @property
    def levels(self) -> int:
        """Categorical: the number of cells, the "missing" level included."""
        return len(self.categories or []) + int(self.missing)

    @property
    def width(self) -> int:
        """Number of features the flow sees for this column."""
        return len(self.feature_specs())

    def describe(self) -> str:
        """A short human summary of the encoding, for the table printed at fit time."""
        text = self.rules.describe(self)
        if self.missing and self.modelled:
            how = "'missing' level" if self.rules.missing_level else "a state"
            text += f"; missing {100 * self.missing_rate:.2g}% ({how})"
        return text

    def feature_specs(self) -> list[FeatureSpec]:
        """The per-feature parameters of the preprocessing layer, in feature order."""
        return self.rules.feature_specs(self)

    def encode(self, series: pd.Series, row_offset: int) -> Encoded:
        """Features of a column in data units (NaN = missing value, imputed by the flow's preprocessing),
        the log of the probability factor the encoding cannot express (0, or -inf outside the support),
        and the invalid entries as (position, message)."""
        return self.rules.encode(self, series, row_offset)

    def decode(self, features: list[np.ndarray], n: int) -> pd.Series | None:
        """Features back to a column with the training labels and dtype; None for ignored columns."""
        return self.rules.decode(self, features, n)

    def outside_sampled(self, features: list[np.ndarray], n: int) -> np.ndarray:
        """Per decoded row: a value outside the range samples keep to (``Role.outside_sampled``)."""
        return self.rules.outside_sampled(self, features, n)

    def never_drawn(self, series: pd.Series, row_offset: int) -> np.ndarray:
        """Per value: one this column's samples never hold (``Role.never_drawn``)."""
        return self.rules.never_drawn(self, series, row_offset)

    def stand_in(self) -> float:
        """A harmless feature value for an invalid entry when scoring (its row scores -inf anyway)."""
        return self.rules.stand_in(self)


# ---------------------------------------------------------------------------------------- inference


def infer_column(series: pd.Series, override: dict[str, Any] | None) -> Column:
    """The role and statistics of one training column (see the module docstring for the rules)."""
    isna = series.isna().to_numpy()
    override = override or {}
    chosen = ROLE_REGISTRY[override["role"]] if "role" in override else None

    def column(role: Role, reason: str, evidence: Evidence | None = None) -> Column:
        numeric = evidence is not None and role.writes_numbers  # how numbers are written back
        return Column(
            name=str(series.name),
            role=role.name,
            dtype=str(series.dtype),
            missing=bool(isna.any()),
            missing_rate=float(isna.mean()),
            reason=reason + (f"; {evidence.note}" if evidence is not None and evidence.note else ""),
            written=evidence.written if numeric and evidence is not None else None,
            decimals=evidence.decimals if numeric and evidence is not None else None,
        )

    if chosen is not None and not chosen.reads_values:
        return column(chosen, SET_IN_CONFIG)
    evidence = _evidence(series, isna, chosen)
    if chosen is not None:
        return chosen.fit(column(chosen, SET_IN_CONFIG, evidence), evidence, override)
    for role in inference_order():
        reason = role.claims(evidence)
        if reason is None:
            continue
        if override.get("atoms") and not role.takes_atoms:
            raise DataError(
                f"column {series.name!r}: the config gives it atoms, but it was inferred {role.name} ({reason}); "
                "atoms apply to continuous, positive, bounded and integer columns: set its role too"
            )
        return role.fit(column(role, reason, evidence), evidence, override)
    raise RuntimeError(f"no column role claims column {series.name!r}")  # continuous takes any numbers


def _evidence(series: pd.Series, isna: np.ndarray, chosen: Role | None) -> Evidence:
    """Read a training column once for every role's rule: text is parsed as numbers when the config's
    role needs numbers or, left to inference, when most of it parses (then the rest are typos); dates,
    codes and numbers written with separators are recognized (``roles/written.py``)."""
    name = str(series.name)
    present = series[~isna]
    why_not = unusable(series, present)
    if why_not is not None and (chosen is None or not len(present)):
        return Evidence(series, isna, present, False, None, 0, unusable=why_not)
    if why_not is not None and chosen is not None:
        raise DataError(f"column {name!r}: {why_not}; it cannot be {chosen.name}")
    is_bool = pd.api.types.is_bool_dtype(series) or (
        len(present) > 0
        and pd.api.types.is_object_dtype(series)
        and bool(present.map(type).isin([bool, np.bool_]).all())
    )
    if is_bool:
        return Evidence(series, isna, present, True, None, int(present.nunique()))
    values = read_values(series, present, isna, None if chosen is None else chosen.needs_numbers)
    numbers = values.numbers
    if numbers is not None and np.isinf(numbers).any():
        pos = int(np.flatnonzero(~isna)[np.argmax(np.isinf(numbers))])
        raise DataError(f"column {name!r}, row {pos + 1}: {shown(series.iloc[pos])} is not a finite number")
    return Evidence(
        series,
        isna,
        present,
        False,
        numbers,
        int(present.nunique()),
        times=values.times,
        written=values.written,
        decimals=values.decimals,
        note=values.note,
    )


def columns_from_dicts(raw: list[dict[str, Any]]) -> list[Column]:
    known = {f for f in Column.__dataclass_fields__}
    return [Column(**{k: v for k, v in c.items() if k in known}) for c in raw]


__all__ = [
    "ID_LIKE_MIN",
    "MAX_INTEGER_LEVELS",
    "OVERRIDABLE",
    "ROLES",
    "Column",
    "columns_from_dicts",
    "infer_column",
    "parse_column_overrides",
]
