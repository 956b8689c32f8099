"""positive: numbers > 0, modelled on the log scale, y = (log x - median) / scale (robust
standardizing and soft tails: see ``numeric.py``).

Never inferred: a log changes what the density means, which the user should choose in the config.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError, shown
from .base import Evidence, Transform, register_role
from .numeric import NumericRole

if TYPE_CHECKING:
    from ..columns import Column


class Log(Transform):
    """t = log x on x > 0, log|dt/dx| = -log x."""

    name = "log"
    identity = False

    def forward(self, x: Tensor, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        return torch.log(x), -torch.log(x)

    def inverse(self, t: Tensor, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        # Clamped to the float type's range, so that a sample is never 0.0 nor inf (which this very
        # model would refuse to score): from the smallest normal number to the largest / e.
        info = torch.finfo(t.dtype)
        t = t.clamp(math.log(info.tiny), math.log(info.max) - 1)
        return torch.exp(t), t

    def safe_input(self, x: Tensor, low: Tensor, high: Tensor) -> Tensor:
        return torch.ones_like(x)

    def numpy(self, x: np.ndarray, low: float, high: float) -> np.ndarray:
        return np.log(x)


@register_role("positive")
class Positive(NumericRole):
    """A column of numbers > 0 on the log scale."""

    transform = Log()

    def check(self, column: Column, evidence: Evidence, numbers: np.ndarray, override: Mapping[str, Any]) -> None:
        if (numbers <= 0).any():
            pos = evidence.row_of(numbers <= 0)
            raise DataError(
                f"column {column.name!r}, row {pos + 1}: {shown(evidence.series.iloc[pos])} is not > 0 (the config says positive)"
            )

    def outside(self, column: Column, values: np.ndarray) -> np.ndarray:
        return values <= 0

    def exclusive_bounds(self, column: Column) -> tuple[float | None, float | None]:
        return 0.0, None

    def summary(self, column: Column) -> str:
        return super().summary(column) + " (of log)"
