"""categorical: labels, one discrete feature (``FeatureSpec.levels`` = K, + 1 with missing values): the
category index k as k + 1/2, which the model gives an exact probability. Missing values are a level of
their own, the last.

Inferred for booleans, text, and numbers with at most ``MAX_INTEGER_LEVELS`` distinct values: a density
would put spikes of unbounded height on so few values. A label not seen in training has probability 0.

Levels are in sorted order (numbers written as text, such as ``10%``, by their value), except for an
ordered pandas Categorical (an ordered Parquet dictionary), whose order is kept and comes back ordered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import DataError, shown
from .base import (
    MAX_INTEGER_LEVELS,
    Encoded,
    Evidence,
    FeatureSpec,
    Role,
    bool_from_text,
    discrete_spec,
    integer_typed,
    plain,
    register_role,
    restore,
)

if TYPE_CHECKING:
    from ..columns import Column


@register_role("categorical")
class Categorical(Role):
    """A column of labels, each a unit cell of one feature."""

    inference_rank = 30  # after ignore, which takes identifiers among the text columns
    needs_numbers = False  # set in the config, a text column stays text
    missing_level = True

    def claims(self, evidence: Evidence) -> str | None:
        if isinstance(evidence.series.dtype, pd.CategoricalDtype):
            return "ordered categories" if evidence.series.dtype.ordered else "categories"
        if evidence.numbers is None:
            return "booleans" if evidence.is_bool else "text"
        if evidence.distinct <= MAX_INTEGER_LEVELS:
            return f"numbers with {evidence.distinct} <= {MAX_INTEGER_LEVELS} distinct values"
        return None

    def fit(self, column: Column, evidence: Evidence, override: Mapping[str, Any]) -> Column:
        counts = evidence.present.value_counts(sort=False)
        dtype = evidence.series.dtype
        ordered = isinstance(dtype, pd.CategoricalDtype) and bool(dtype.ordered)
        if isinstance(dtype, pd.CategoricalDtype):  # the dtype's order, of the levels that occur
            labels = [c for c in dtype.categories if counts.get(c, 0) > 0]
        elif evidence.written is not None and evidence.numbers is not None:  # 10%, 9%: by value, not as text
            value = dict(zip(evidence.present, evidence.numbers, strict=True))
            labels = sorted(counts.index.tolist(), key=lambda label: value[label])
        else:
            try:
                labels = sorted(counts.index.tolist())
            except TypeError:  # mixed label types: keep the order of first appearance
                labels = counts.index.tolist()
        unused = isinstance(dtype, pd.CategoricalDtype) and len(labels) < len(dtype.categories)
        column = replace(
            column,
            categories=[plain(v) for v in labels],
            ordered=ordered,
            dtype_categories=[plain(v) for v in dtype.categories] if unused else None,
        )
        if column.levels < 2:
            raise DataError(f"column {column.name!r}: a categorical column needs at least two levels")
        return column

    def feature_specs(self, column: Column) -> list[FeatureSpec]:
        return [discrete_spec(column.levels)]

    def encode(self, column: Column, series: pd.Series, row_offset: int) -> Encoded:
        codes, invalid = _codes(column, series, row_offset)
        return [codes + 0.5], np.zeros(len(series)), invalid

    def decode(self, column: Column, features: list[np.ndarray], n: int) -> pd.Series | None:
        (x,) = features
        codes = np.clip(np.floor(x), 0, column.levels - 1).astype(np.int64)
        labels = np.array(list(column.categories or []) + [None], dtype=object)
        if column.ordered or column.dtype == "category":  # all the labels, not only those drawn this time
            categories = column.dtype_categories or column.categories
            return pd.Series(pd.Categorical(labels[codes], categories=categories, ordered=column.ordered))
        categories = list(column.categories or [])
        whole = all(
            isinstance(c, (int, float)) and not isinstance(c, bool) and float(c).is_integer() for c in categories
        )
        return restore(labels[codes], column.dtype, integer=integer_typed(column, whole))

    def describe(self, column: Column) -> str:
        categories = column.categories or []
        # A label holding the list's separator or a line break is quoted, so the list reads one way.
        shown = ", ".join(repr(c) if isinstance(c, str) and ("," in c or "\n" in c) else str(c) for c in categories[:6])
        more = ", ..." if len(categories) > 6 else ""
        return f"{len(categories)} levels: {shown}{more}"

    def stand_in(self, column: Column) -> float:
        return 0.5  # the centre of the first cell


def _codes(column: Column, series: pd.Series, row_offset: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """The category index of each value (the missing level for missing values), and the invalid entries."""
    labels = list(column.categories or [])
    lookup = {label: i for i, label in enumerate(labels)}
    values = series
    if labels and all(isinstance(c, str) for c in labels) and not pd.api.types.is_string_dtype(series):
        # A chunk of a text column may have been parsed as numbers, and dates or Decimals are stored as
        # their text (``plain``): compare as text.
        values = series.astype(object).where(series.notna(), None).map(lambda v: v if v is None else str(v))
    elif labels and all(isinstance(c, bool) for c in labels):
        # A boolean column given as text (an API frame read as strings, ``given={"smoker": "true"}``): the
        # spellings a table file's booleans are read from.
        values = series.map(bool_from_text)
    codes = pd.Series(values, dtype=object).map(lookup).to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    isna = series.isna().to_numpy()
    if column.missing:
        codes[isna] = len(labels)
    invalid = []
    for p in np.flatnonzero(np.isnan(codes)):
        if isna[p]:
            message = "missing value (the training data had none in this column)"
        else:
            known = ", ".join(shown(c) for c in labels[:8]) + (", ..." if len(labels) > 8 else "")
            message = f"unseen category {shown(series.iloc[p])} (known: {known})"
        invalid.append((int(p), f"column {column.name!r}, row {row_offset + p + 1}: {message}"))
    return np.nan_to_num(codes, nan=0.0), invalid
