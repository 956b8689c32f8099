"""The logprob quantiles of held-out rows that ``fit`` stores in a checkpoint, written and read here only.

``fit`` stores ``info["logprob_quantiles"] = {"source", "rows", "levels": [...], "values": [...]}``:
the quantile function of ``log p(x)`` on rows the model did not train on, on a grid of levels. It is
what ``logprob --flag-below`` and ``--percentile`` compare against, what ``report`` draws as anomaly
thresholds and what ``inspect`` shows; values between grid points are interpolated linearly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import CheckpointError

INFO_KEY = "logprob_quantiles"

# Levels kept in the checkpoint: every percent, plus fine ones in both tails (anomaly thresholds live
# in the lower tail).
QUANTILE_LEVELS = sorted(
    {0.0, 0.0005, 0.001, 0.002, 0.005, 0.995, 0.998, 0.999, 0.9995, 1.0}
    | {round(i / 100, 2) for i in range(1, 100)}
    | {round(0.01 + i / 1000, 3) for i in range(-9, 10)}
)


def logprob_quantiles(values: np.ndarray, source: str) -> dict[str, Any]:
    """Quantiles of ``logprob`` on held-out rows, as stored under ``info["logprob_quantiles"]``."""
    finite = values[np.isfinite(values)]
    return {
        "source": source,
        "rows": len(values),
        "levels": QUANTILE_LEVELS,
        "values": np.quantile(finite, QUANTILE_LEVELS).tolist() if len(finite) else [],
    }


@dataclass(frozen=True)
class StoredQuantiles:
    """The stored quantile function, parsed and checked once.

    ``levels``/``values`` are empty when the checkpoint has none or they are malformed (not two equal,
    finite, increasing grids of at least two points); ``usable`` tells which.
    """

    levels: np.ndarray
    values: np.ndarray
    source: str  # which rows they come from, e.g. "1522 validation rows"

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> StoredQuantiles:
        raw = info.get(INFO_KEY)
        if not isinstance(raw, dict):
            return cls(np.empty(0), np.empty(0), "held-out rows")
        source = " ".join(str(x) for x in (raw.get("rows"), raw.get("source")) if x is not None) + " rows"
        try:
            levels = np.asarray(raw.get("levels"), dtype=np.float64)
            values = np.asarray(raw.get("values"), dtype=np.float64)
        except (TypeError, ValueError):
            return cls(np.empty(0), np.empty(0), source)
        if (
            levels.ndim != 1
            or levels.shape != values.shape
            or len(levels) < 2
            or not np.isfinite(values).all()
            or np.any(np.diff(levels) < 0)
        ):
            return cls(np.empty(0), np.empty(0), source)
        return cls(levels, values, source)

    @property
    def usable(self) -> bool:
        return len(self.levels) > 0

    def at(self, levels: tuple[float, ...]) -> list[tuple[float, float]]:
        """(level, threshold) for each of ``levels`` inside the stored grid; [] when unusable."""
        if not self.usable:
            return []
        return [(q, self.threshold(q)) for q in levels if self.levels[0] <= q <= self.levels[-1]]

    def threshold(self, level: float) -> float:
        """The ``level``-quantile of ``logprob`` over the held-out rows (interpolated)."""
        self._require()
        return float(np.interp(level, self.levels, self.values))

    def percentile(self, logprob: np.ndarray) -> np.ndarray:
        """Percentile (0-100) of each ``logprob`` among the held-out rows (interpolated)."""
        self._require()
        return 100.0 * np.interp(logprob, self.values, self.levels, left=0.0, right=1.0)

    def _require(self) -> None:
        if not self.usable:
            raise CheckpointError(
                "this checkpoint holds no logprob quantiles of held-out rows; refit it with this flowcli"
            )
