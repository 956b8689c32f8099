"""continuous: any real number, the value itself standardized. The fallback of inference for numbers.

**Kept support.** When every continuous training value (atoms excluded, ``atoms.py``) is > 0, the
column gets the lower bound 0 (``Column.low``): the value is modelled as t = log(expm1(x / s)), the
inverse of a softplus with s the robust scale of the values (``bound_scale``), before the usual robust
standardizing. That map is log(x / s) near 0 and x / s - (a vanishing term) far from it, so a column far
from 0 (a year, a height) keeps the shape of its density, and a skewed one near 0 (prices, durations)
gets a log-like one; samples are never <= 0 and a value <= 0 has density 0 (it scores -inf, unless it
is an atom such as 0). The explicit ``positive`` role (log x) stays the user's choice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from .base import Evidence, Transform, register_role
from .numeric import NumericRole, robust_location_scale

if TYPE_CHECKING:
    from ..columns import Column


class InverseSoftplus(Transform):
    """t = log(expm1(u)), u = (x - low) / (high - low), on x > low: ``high - low`` is the scale s."""

    name = "inverse-softplus"
    identity = False

    def forward(self, x: Tensor, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        scale = high - low
        u = (x - low) / scale
        log_one_minus = torch.log(-torch.expm1(-u))  # log(1 - e^-u): stable near 0 and for large u
        return u + log_one_minus, -torch.log(scale) - log_one_minus

    def inverse(self, t: Tensor, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        # u = softplus(t), kept >= the smallest normal number, so a sample is never on the bound (which
        # this very model would score -inf).
        info = torch.finfo(t.dtype)
        t = t.clamp_min(math.log(info.tiny))
        scale = high - low
        u = torch.logaddexp(t, torch.zeros_like(t))
        return low + scale * u, torch.log(scale) + torch.nn.functional.logsigmoid(t)

    def safe_input(self, x: Tensor, low: Tensor, high: Tensor) -> Tensor:
        return high.expand_as(x)

    def numpy(self, x: np.ndarray, low: float, high: float) -> np.ndarray:
        u = (x - low) / (high - low)
        return u + np.log(-np.expm1(-u))


INVERSE_SOFTPLUS = InverseSoftplus()


@register_role("continuous")
class Continuous(NumericRole):
    """A real-valued column: y = (x - median) / scale, with soft tails (see ``numeric.py``); a column of
    values > 0 on the inverse-softplus scale (see the module docstring)."""

    inference_rank = 50  # last: numbers nothing else claimed

    def claims(self, evidence: Evidence) -> str | None:
        return "numbers" if evidence.numbers is not None else None

    def bounds(self, numbers: np.ndarray, override: Mapping[str, Any]) -> tuple[float | None, float | None]:
        return (0.0, None) if len(numbers) and bool((numbers > 0).all()) else (None, None)

    def transform_of(self, column: Column) -> Transform:
        return INVERSE_SOFTPLUS if column.low is not None else self.transform

    def transform_bounds(self, column: Column) -> tuple[float, float]:
        if column.low is None:
            return 0.0, 1.0
        return column.low, column.low + (column.bound_scale or 1.0)

    def bound_scale(self, numbers: np.ndarray, low: float | None) -> float | None:
        return None if low is None else robust_location_scale(numbers - low)[1]

    def outside(self, column: Column, values: np.ndarray) -> np.ndarray:
        if column.low is None:
            return np.zeros(len(values), dtype=bool)
        return values <= column.low

    def exclusive_bounds(self, column: Column) -> tuple[float | None, float | None]:
        return column.low, None

    def support(self, column: Column) -> str:
        if column.low is None:
            return ""
        return f"support > {column.low:g} (values all > {column.low:g}: inverse softplus, s = {column.bound_scale or 1.0:.4g})"

    def summary(self, column: Column) -> str:
        return super().summary(column) + (" (of inverse softplus)" if column.low is not None else "")
