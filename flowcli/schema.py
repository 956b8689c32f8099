"""The table's columns and their reversible encodings; stored as JSON in the checkpoint.

The schema turns a DataFrame into the feature matrix the flow sees (``to_features``: data units, NaN
for missing values), back again (``to_frame``), and builds the preprocessing layer whose log|det| (and
dequantization / imputation terms) make ``logprob`` a density in the units of the user's columns times
the probability of its discrete values. Columns are matched by name, never by position. How each column
is inferred and encoded lives in ``columns.py`` and its role in ``roles/``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .columns import Column, columns_from_dicts, infer_column
from .errors import DataError
from .layers.base import Layer
from .roles import FeatureSpec, Transform

OnInvalid = Literal["error", "neg-inf"]
# The largest excess over the tail knee that the inverse expands: sinh of it is 1e15 (robust units), far
# beyond any value a column can sensibly hold and still finite after unstandardizing in float32 and float64.
MAX_TAIL_EXCESS = math.asinh(1e15)


# Rounds of drawing again the sampled rows with a value beyond an integer or date column's training range
# (``redraw_outside``): each round keeps the few percent that fall outside.
REDRAW_ROUNDS = 20


def column_names(labels: Any) -> list[str]:
    """Column labels as the names a model stores: text (a frame built from a numpy array has the labels 0,
    1, ...), without spaces around it (a header `` a , b `` names ``a`` and ``b``, as the CSV reader reads
    it; pandas keeps the spaces). Labels that would collide once stripped keep their spaces."""
    names = [str(label).strip() for label in labels]
    return names if len(set(names)) == len(names) else [str(label) for label in labels]


def text_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its column labels as the names a model stores (``column_names``)."""
    names = column_names(frame.columns)
    if names == list(frame.columns):
        return frame
    return frame.set_axis(names, axis=1)


def redraw_outside(
    schema: Schema, x: np.ndarray, redraw: Callable[[np.ndarray], np.ndarray], drawn: np.ndarray | None = None
) -> np.ndarray:
    """``x`` (drawn rows, features in data units) with the rows that hold a value beyond an integer or date
    column's training range (``Schema.outside_sampled``; ``drawn``: which cells were drawn) replaced by
    ``redraw(rows)``, again until none is left: samples then follow the density truncated to the range.
    Clipping alone piled the mass beyond it onto the range's ends (5% of a timestamp column's samples on its
    first and last instants). At most ``REDRAW_ROUNDS`` rounds and as many rows redrawn as ``x`` has, so at
    most twice the work of the draw: a briefly fitted model with most of a column's mass beyond its range
    (a UMNN after one epoch: 20 rounds cost minutes) stops there, and decoding clips what is left."""
    budget = len(x)
    for _ in range(REDRAW_ROUNDS):
        again = np.flatnonzero(schema.outside_sampled(x, drawn))
        if not len(again) or len(again) > budget:
            break
        x[again] = redraw(again)
        budget -= len(again)
    return x


class Schema:
    """The ordered columns of the training table and how each is encoded for the flow."""

    def __init__(self, columns: list[Column]) -> None:
        self.columns = columns

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def modelled(self) -> list[Column]:
        return [c for c in self.columns if c.modelled]

    @property
    def read_names(self) -> list[str]:
        """The columns whose values the model reads, in order: the modelled and the constant ones (not those
        it ignores, which input files need not have)."""
        return [c.name for c in self.columns if c.rules.reads_values]

    @property
    def dim(self) -> int:
        return sum(c.width for c in self.columns)

    @property
    def text_columns(self) -> frozenset[str]:
        """The columns that were text in the training table: readers keep them as text when scoring, so a
        chunk of codes without a leading zero, or of dates, is not taken for numbers."""
        return frozenset(
            c.name
            for c in self.columns
            if (c.dtype in ("object", "str", "string") or c.dtype.startswith("string")) and not _booleans(c)
        )

    @classmethod
    def infer(cls, frame: pd.DataFrame, overrides: dict[str, dict[str, Any]] | None = None) -> Schema:
        """Roles from the data (see ``columns.py``), with the config's ``columns:`` section taking precedence."""
        overrides = overrides or {}
        if frame.shape[1] == 0:
            raise DataError("the table has no columns")
        if frame.shape[0] < 2:
            raise DataError(f"the table has {frame.shape[0]} data row(s); at least 2 are needed to fit")
        duplicated = frame.columns[frame.columns.duplicated()]
        if len(duplicated):
            raise DataError(f"column {duplicated[0]!r} appears more than once")
        unknown = [name for name in overrides if name not in frame.columns]
        if unknown:
            raise DataError(
                f"config columns.{unknown[0]}: no such column in the data; columns: {', '.join(map(str, frame.columns))}"
            )
        columns = [infer_column(frame[name], overrides.get(str(name))) for name in frame.columns]
        if not any(c.modelled for c in columns):
            raise DataError("every column is constant or ignored; there is no density to learn")
        return cls(columns)

    def to_features(
        self, frame: pd.DataFrame, row_offset: int = 0, on_invalid: OnInvalid = "error"
    ) -> tuple[np.ndarray, np.ndarray]:
        """The flow's features of ``frame`` (matched by name) and a per-row log-probability term that the
        features cannot carry (-inf for a value outside a column's support or, with ``on_invalid='neg-inf'``,
        an unparseable value or unseen category; else 0)."""
        needed = self.read_names
        absent = [name for name in needed if name not in frame.columns]
        if absent:
            raise DataError(f"missing column {absent[0]!r}; the model needs: {', '.join(needed)}")
        n = len(frame)
        features: list[np.ndarray] = []
        log_mass = np.zeros(n)
        for col in self.columns:
            if not col.rules.reads_values:
                continue
            values, mass, invalid = col.encode(frame[col.name], row_offset)
            if invalid:
                if on_invalid == "error":
                    raise DataError(min(invalid)[1])
                rows = [p for p, _ in invalid]
                mass[rows] = -np.inf
                values = [np.where(np.isin(np.arange(n), rows), col.stand_in(), v) for v in values]
            features += values
            log_mass += mass
        matrix = np.column_stack(features) if features else np.zeros((n, 0))
        return matrix, log_mass

    def to_frame(self, matrix: np.ndarray) -> pd.DataFrame:
        """Features in data units back to a DataFrame with the training columns (ignored ones left out),
        in order, with their dtypes, labels and missing values."""
        data: dict[str, Any] = {}
        start = 0
        for col in self.columns:
            part = [matrix[:, start + i] for i in range(col.width)]
            start += col.width
            series = col.decode(part, len(matrix))
            if series is not None:
                data[col.name] = series
        return pd.DataFrame(data, index=pd.RangeIndex(len(matrix)))

    def outside_sampled(self, matrix: np.ndarray, drawn: np.ndarray | None = None) -> np.ndarray:
        """Per row of features in data units: some column's value lies outside the range its samples keep
        to (an integer or a date beyond the training range), which ``to_frame`` would clip. ``drawn``: (rows,
        columns with features) which cells count (the drawn ones, not a row's observed values); default all."""
        outside, start, j = np.zeros(len(matrix), dtype=bool), 0, 0
        for col in self.columns:
            if col.width:
                cells = col.outside_sampled([matrix[:, start + i] for i in range(col.width)], len(matrix))
                outside |= cells if drawn is None else cells & drawn[:, j]
                start, j = start + col.width, j + 1
        return outside

    def feature_specs(self) -> list[FeatureSpec]:
        """Every feature's spec, in feature order (the columns of ``to_features``)."""
        return [spec for c in self.columns for spec in c.feature_specs()]

    @property
    def pattern_columns(self) -> list[str]:
        """The modelled columns whose cell a row may lack (``absent_cells``)."""
        return [c.name for c in self.modelled if c.has_state or (c.missing and c.rules.missing_level)]

    def absent_cells(self, matrix: np.ndarray) -> np.ndarray:
        """Per row of a feature matrix and each of ``pattern_columns``: the cell has no continuous value
        (missing, or on one of the column's atoms; a categorical column's cell: missing). Rows with
        different absent cells score densities over different dimensions (README, "Anomaly flags")."""
        masks, start, patterned = [], 0, set(self.pattern_columns)
        for col in self.columns:
            if col.name in patterned:
                code = np.floor(matrix[:, start])
                masks.append(code != 0 if col.has_state else code == col.levels - 1)
            start += col.width
        return np.column_stack(masks) if masks else np.zeros((len(matrix), 0), dtype=bool)

    def preprocessing(self) -> Preprocess:
        """The preprocessing layer of the continuous features (the discrete ones are not preprocessed)."""
        return Preprocess([spec for spec in self.feature_specs() if spec.levels == 0])

    def to_dict(self) -> list[dict[str, Any]]:
        return [c.to_dict() for c in self.columns]

    @classmethod
    def from_dict(cls, raw: list[dict[str, Any]]) -> Schema:
        columns = columns_from_dicts(raw)
        # Checkpoints from before names were stripped may hold 'height ' (a header `height ,weight`).
        names = column_names([c.name for c in columns])
        return cls([c if c.name == name else replace(c, name=name) for c, name in zip(columns, names, strict=True)])


class Preprocess(Layer):
    """Per-feature encoding of data units into the flow's standardized space, with its log|det|.

    For each feature: t = f(x), the ``Transform`` its column's role chose in the feature spec (the identity,
    log x for positive, logit((x - low) / (high - low)) for bounded: see ``roles/``); then
    y = (t - shift) / scale; then, for numeric features, soft tails beyond +-``tail`` (y kept up to the
    knee, ``knee + asinh(|y| - knee)`` beyond it; see ``roles/numeric.py``). log|det| sums log|dt/dx|,
    -log scale and the tails' -log hypot(1, |y| - knee), so densities are in the units of the user's data.

    The inverse (sampling, ``decode``) keeps every value representable, so a sample is never inf, NaN,
    0 for a positive column or on the bound of a bounded one, and the model that drew it scores it
    finitely: beyond the tail knee the excess is capped at ``MAX_TAIL_EXCESS`` (values up to 1e15 robust
    units from the median), the log of a positive column at the range of the float type (values in
    [smallest normal, largest / e]), and a bounded column strictly inside its bounds (the nearest
    representable values). The caps act only in the inverse on latent points that would overflow, so the
    density (forward direction) stays exact.

    The preprocessing sees the continuous features only; the discrete ones (categories, the state of a
    numeric column) are modelled exactly by ``discrete.DiscreteModel``. Dequantized features (integers)
    arrive at the centre of their cell. In training mode a uniform offset over the middle ``width`` of the cell is added, so the flow
    fits the density of value + U(-width/2, width/2); at evaluation they stay at the centre. Either way
    log(width) is added: with q = U(-width/2, width/2), log P(value) >= E_q[log p(value + u)] + log(width)
    (Jensen), which is the training objective, and log p(centre) + log(width) is the midpoint estimate of
    log P(value) used for scoring (the mass of the cell = its density times its width).

    Absent values (NaN: a missing cell, or one on an atom, whose value the discrete part already gives)
    are imputed in y-space: y ~ N(0, 1) in training, y = 0 at evaluation, and the log-density of that
    imputation, log N(y; 0, 1), is subtracted. The result estimates the density of the present part of
    the row: exact when the flow has learnt that an absent value's stand-in is independent N(0, 1) noise,
    which is what maximum likelihood on such rows teaches it (the flow knows which cells are absent: the
    discrete part it is conditioned on says so).

    The statistics live in the schema JSON, not in the weights, so the buffers are not persistent.
    """

    # Per feature (class-level annotations so type checkers know these buffers are tensors).
    shift: Tensor
    scale: Tensor
    low: Tensor
    high: Tensor
    fill: Tensor
    width: Tensor
    dequant: Tensor
    kind: Tensor  # the index in ``transforms`` of the feature's transform
    knee: Tensor  # where the soft tails start (robust units; 0: the feature has none)
    tailed: Tensor

    def __init__(self, specs: list[FeatureSpec]) -> None:
        super().__init__()

        def buffer(name: str, values: list[Any], dtype: torch.dtype | None = None) -> None:
            self.register_buffer(name, torch.tensor(values, dtype=dtype or torch.get_default_dtype()), persistent=False)

        buffer("shift", [s.shift for s in specs])
        buffer("scale", [s.scale for s in specs])
        buffer("low", [s.low for s in specs])
        buffer("high", [s.high for s in specs])
        buffer("fill", [s.fill for s in specs])
        buffer("knee", [s.tail for s in specs])
        buffer("tailed", [s.tail > 0 for s in specs], torch.bool)
        self.any_tail = any(s.tail > 0 for s in specs)
        self.any_dequantized = any(s.width > 0 for s in specs)  # else no noise to draw in training
        # The distinct transforms of the features, in order of first use; identity features need no work.
        by_name: dict[str, Transform] = {}
        for s in specs:
            by_name.setdefault(s.transform.name, s.transform)
        names = list(by_name)
        self.transforms: list[tuple[int, Transform]] = [
            (i, t) for i, t in enumerate(by_name.values()) if not t.identity
        ]
        buffer("kind", [names.index(s.transform.name) for s in specs], torch.long)
        buffer("width", [s.width for s in specs])
        buffer("dequant", [s.width > 0 for s in specs], torch.bool)
        # The log(width) of the dequantized features, a constant of every row.
        self.log_width = float(sum(math.log(s.width) for s in specs if s.width > 0))

    def _transform(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """t = f(x) per feature and log|dt/dx|. Each transform runs on the whole matrix (other features
        replaced by an input safe for it) and is kept where it applies: no inf or NaN reaches a gradient."""
        t, ladj = x, torch.zeros_like(x)
        for index, transform in self.transforms:
            mine = self.kind == index
            t_own, ladj_own = transform.forward(
                torch.where(mine, x, transform.safe_input(x, self.low, self.high)), self.low, self.high
            )
            t, ladj = torch.where(mine, t_own, t), torch.where(mine, ladj_own, ladj)
        return t, ladj

    def _untransform(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """x = f^-1(t) per feature and log|dx/dt|."""
        x, ladj = t, torch.zeros_like(t)
        for index, transform in self.transforms:
            mine = self.kind == index
            x_own, ladj_own = transform.inverse(t, self.low, self.high)
            x, ladj = torch.where(mine, x_own, x), torch.where(mine, ladj_own, ladj)
        return x, ladj

    def _tails(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Soft tails: y up to the knee, knee + asinh(excess) beyond it; and log|d out / dy|."""
        excess = (y.abs() - self.knee).clamp_min(0.0)
        beyond = self.tailed & (excess > 0)
        out = torch.where(beyond, torch.sign(y) * (self.knee + torch.asinh(excess)), y)
        return out, torch.where(beyond, -torch.hypot(torch.ones_like(excess), excess).log(), 0.0)

    def _untails(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """The inverse of ``_tails`` (excess capped at ``MAX_TAIL_EXCESS``) and log|dy / du| = log cosh(excess)."""
        excess = (u.abs() - self.knee).clamp(0.0, MAX_TAIL_EXCESS)
        beyond = self.tailed & (u.abs() > self.knee)
        y = torch.where(beyond, torch.sign(u) * (self.knee + torch.sinh(excess)), u)
        log_cosh = excess + torch.log1p(torch.exp(-2 * excess)) - math.log(2)
        return y, torch.where(beyond, log_cosh, 0.0)

    def elementwise(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Each feature's y and log|dy/dx| (n, features), absent values (NaN) at the feature's fill, the
        log(width) of dequantized features not included (``log_widths``): what ``forward`` sums, per feature,
        for the conditional model (``conditional.py``), which scores a subset of the features."""
        x = torch.where(torch.isnan(x), self.fill, x)
        if self.training and self.any_dequantized:
            x = x + (torch.rand_like(x) - 0.5) * self.width
        t, ladj = self._transform(x)
        y = (t - self.shift) / self.scale
        ladj = ladj - torch.log(self.scale)
        if self.any_tail:
            y, tail_ladj = self._tails(y)
            ladj = ladj + tail_ladj
        return y, ladj

    @property
    def log_widths(self) -> Tensor:
        """Per feature: log(width) of a dequantized feature's cell, 0 for the others."""
        return torch.where(self.dequant, self.width.clamp_min(1e-300).log(), 0.0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        missing = torch.isnan(x)
        y, ladj = self.elementwise(x)
        if missing.any():
            stand_in = torch.randn_like(x) if self.training else torch.zeros_like(x)
            y = torch.where(missing, stand_in, y)
            ladj = torch.where(missing, 0.5 * stand_in**2 + 0.5 * math.log(2 * math.pi), ladj)
        return y, ladj.sum(-1) + self.log_width

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        tail_ladj = torch.zeros_like(y)
        if self.any_tail:
            y, tail_ladj = self._untails(y)
        x, ladj = self._untransform(y * self.scale + self.shift)
        big = torch.finfo(x.dtype).max
        x = x.clamp(-big, big)  # a finite sample even where a layer's output was extreme
        return x, (ladj + tail_ladj + torch.log(self.scale)).sum(-1) - self.log_width


def _booleans(column: Column) -> bool:
    """Whether a column's labels are True and False: a text file's true/false column with empty cells is
    read as Python booleans (an object column), and must be read so again when scoring, not as text."""
    labels = column.categories or []
    return bool(labels) and all(isinstance(label, bool) for label in labels)
