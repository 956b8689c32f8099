"""bounded: numbers strictly between the config's ``low`` and ``high``, modelled on the logit scale,
y = (logit((x - low) / (high - low)) - median) / scale (robust standardizing and soft tails: see ``numeric.py``).

Never inferred: the bounds are the user's to state (the observed range is not a bound).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, DataError, shown
from .base import Evidence, Transform, register_role
from .numeric import NumericRole, describe_atoms

if TYPE_CHECKING:
    from ..columns import Column


class Logit(Transform):
    """t = logit((x - low) / (high - low)) on low < x < high."""

    name = "logit"
    identity = False

    def forward(self, x: Tensor, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        width = high - low
        u = (x - low) / width
        return torch.log(u) - torch.log1p(-u), -torch.log(width) - torch.log(u) - torch.log1p(-u)

    def inverse(self, t: Tensor, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        width = high - low
        ladj = torch.log(width) + torch.nn.functional.logsigmoid(t) + torch.nn.functional.logsigmoid(-t)
        # sigmoid rounds to 0 or 1 for |t| > 37 (float64): keep samples strictly inside (low, high), where
        # the model that drew them can score them.
        x = low + width * torch.sigmoid(t)
        return torch.minimum(torch.maximum(x, torch.nextafter(low, high)), torch.nextafter(high, low)), ladj

    def safe_input(self, x: Tensor, low: Tensor, high: Tensor) -> Tensor:
        return ((low + high) / 2).expand_as(x)

    def numpy(self, x: np.ndarray, low: float, high: float) -> np.ndarray:
        u = (x - low) / (high - low)
        return np.log(u) - np.log1p(-u)


@register_role("bounded")
class Bounded(NumericRole):
    """A column of numbers in (low, high) on the logit scale."""

    options = ("low", "high")
    transform = Logit()

    def parse_options(self, spec: Mapping[str, Any], where: str) -> dict[str, Any]:
        for key in ("low", "high"):
            value = spec.get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ConfigError(f"{where}.{key}: a bounded column needs a finite number, got {value!r}")
        if not spec["low"] < spec["high"]:
            raise ConfigError(f"{where}: low ({spec['low']}) must be less than high ({spec['high']})")
        return {"low": float(spec["low"]), "high": float(spec["high"])}

    def check(self, column: Column, evidence: Evidence, numbers: np.ndarray, override: Mapping[str, Any]) -> None:
        low, high = override["low"], override["high"]
        outside = (numbers <= low) | (numbers >= high)
        if outside.any():
            pos = evidence.row_of(outside)
            raise DataError(
                f"column {column.name!r}, row {pos + 1}: {shown(evidence.series.iloc[pos])} is not strictly between {low:g} and {high:g} (the config's bounds)"
            )

    def bounds(self, numbers: np.ndarray, override: Mapping[str, Any]) -> tuple[float | None, float | None]:
        return override["low"], override["high"]

    def transform_bounds(self, column: Column) -> tuple[float, float]:
        assert column.low is not None and column.high is not None
        return column.low, column.high

    def outside(self, column: Column, values: np.ndarray) -> np.ndarray:
        return (values <= column.low) | (values >= column.high)

    def exclusive_bounds(self, column: Column) -> tuple[float | None, float | None]:
        return column.low, column.high

    def describe(self, column: Column) -> str:
        return "; ".join(text for text in (f"({column.low:g}, {column.high:g})", describe_atoms(column)) if text)
