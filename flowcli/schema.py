"""Column roles and their reversible encodings; stored as JSON in the checkpoint.

The schema turns a DataFrame into the float matrix the flow sees (``to_matrix``), back again
(``to_frame``), and builds the preprocessing layer whose log|det| makes ``logprob`` a density in the
units of the user's columns. Columns are matched by name, never by position.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .errors import DataError
from .layers.base import Layer


@dataclass
class Column:
    name: str
    role: str  # "continuous" (standardized) or "constant" (not modelled, reproduced as is)
    dtype: str  # the pandas dtype of the training column, restored on output
    mean: float = 0.0
    std: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _numeric_values(series: pd.Series, row_offset: int) -> np.ndarray:
    """The column as float64, or a DataError naming the column, the bad value and its row (1-based)."""
    name = series.name
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        converted = pd.to_numeric(series, errors="coerce")
        bad = converted.isna() & series.notna()
        if bad.any():
            pos = int(np.argmax(bad.to_numpy()))
            raise DataError(f"column {name!r}, row {row_offset + pos + 1}: {series.iloc[pos]!r} is not a number")
        values = converted.to_numpy(dtype=np.float64, na_value=np.nan)
    finite = np.isfinite(values)
    if not finite.all():
        pos = int(np.argmin(finite))
        what = "missing value" if np.isnan(values[pos]) else f"{values[pos]} is not a finite number"
        raise DataError(f"column {name!r}, row {row_offset + pos + 1}: {what}")
    return values


def _restore_dtype(values: np.ndarray, dtype_name: str) -> np.ndarray:
    """Cast model output back to the training column's dtype (integers are rounded)."""
    try:
        dtype = np.dtype(dtype_name)
    except TypeError:  # a pandas extension dtype: leave as float
        return values
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    if dtype.kind == "f":
        return values.astype(dtype)
    if dtype.kind == "b":
        return values >= 0.5
    return values


class Schema:
    """The ordered columns of the training table and how each is encoded for the flow."""

    def __init__(self, columns: list[Column]) -> None:
        self.columns = columns

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def modelled(self) -> list[Column]:
        return [c for c in self.columns if c.role != "constant"]

    @property
    def dim(self) -> int:
        return len(self.modelled)

    @classmethod
    def infer(cls, frame: pd.DataFrame) -> "Schema":
        if frame.shape[1] == 0:
            raise DataError("the table has no columns")
        if frame.shape[0] < 2:
            raise DataError(f"the table has {frame.shape[0]} data row(s); at least 2 are needed to fit")
        duplicated = frame.columns[frame.columns.duplicated()]
        if len(duplicated):
            raise DataError(f"column {duplicated[0]!r} appears more than once")
        columns = []
        for name in frame.columns:
            values = _numeric_values(frame[name], 0)
            std = float(values.std())
            role = "constant" if std == 0.0 else "continuous"
            columns.append(Column(str(name), role, str(frame[name].dtype), float(values.mean()), std if std > 0 else 1.0))
        if not any(c.role != "constant" for c in columns):
            raise DataError("every column is constant; there is no density to learn")
        return cls(columns)

    def to_matrix(self, frame: pd.DataFrame, row_offset: int = 0) -> np.ndarray:
        """The modelled columns of ``frame`` (matched by name) as a float64 matrix in data units."""
        missing = [c.name for c in self.modelled if c.name not in frame.columns]
        if missing:
            raise DataError(f"missing column {missing[0]!r}; the model needs: {', '.join(self.names)}")
        if not self.modelled:
            return np.zeros((len(frame), 0))
        return np.column_stack([_numeric_values(frame[c.name], row_offset) for c in self.modelled])

    def to_frame(self, matrix: np.ndarray) -> pd.DataFrame:
        """Rows in data units back to a DataFrame with the training columns, order and dtypes."""
        data: dict[str, Any] = {}
        modelled = iter(range(matrix.shape[1]))
        for col in self.columns:
            values = np.full(len(matrix), col.mean) if col.role == "constant" else matrix[:, next(modelled)]
            data[col.name] = _restore_dtype(values, col.dtype)
        return pd.DataFrame(data)

    def preprocessing(self) -> "Standardize":
        mean = torch.tensor([c.mean for c in self.modelled])
        std = torch.tensor([c.std for c in self.modelled])
        return Standardize(mean, std)

    def to_dict(self) -> list[dict[str, Any]]:
        return [c.to_dict() for c in self.columns]

    @classmethod
    def from_dict(cls, raw: list[dict[str, Any]]) -> "Schema":
        return cls([Column(**c) for c in raw])


class Standardize(Layer):
    """z = (x - mean) / std with the training statistics; log|det| = -sum(log std).

    Part of the flow so that densities are in the units of the user's data. Statistics live in the
    schema JSON, not in the weights, so the buffers are not persistent.
    """

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return (x - self.mean) / self.std, (-self.std.log().sum()).expand(x.shape[0])

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return z * self.std + self.mean, self.std.log().sum().expand(z.shape[0])
