"""The logprob quantiles of held-out rows that ``fit`` stores in a checkpoint, written and read here only.

``fit`` stores ``info["logprob_quantiles"]``, version 2::

    {"version": 2, "source", "rows", "levels": [...], "values": [...],          # all held-out rows
     "pattern_columns": [...], "pattern_min_rows": 50, "pattern_other_rows": n,
     "patterns": [{"absent": [column, ...], "rows": n, "source": "held-out", "values": [...]}, ...]}

``levels``/``values`` are the quantile function of ``log p(x)`` on rows the model did not train on, on a
grid of levels; values between grid points are interpolated linearly. ``patterns`` holds the same grid
for each pattern of absent cells (the modelled columns whose cell in a row has no continuous value: it
is missing, or on one of the column's atoms; ``[]`` for rows with every cell present) that has at least
``MIN_PATTERN_ROWS`` held-out rows with a finite score, at most ``MAX_PATTERNS`` of them; a pattern too
rare among the held-out rows takes its grid from rows the model sampled (``source: "sampled"``; fit
draws ``CALIBRATION_SAMPLES`` of them), when they hold enough of it. The model knows the share of each
pattern exactly and samples each with its density, so a rare pattern still gets a scale of its own: on
ADBench pima (5 columns with 0 as an atom, 30 held-out rows) this raised the AUROC of the percentile
from 0.56 (one scale for all) to 0.67. The score of a row with absent cells is on another scale than a
complete row's (it has no density for its absent values and a probability for their being absent), so
``logprob --flag-below`` and ``--percentile`` compare each row with its own pattern's quantiles
(``StoredQuantiles.thresholds`` / ``percentile``). A row whose pattern is not stored is compared with
the nearest stored pattern: the one whose missing cells differ from the row's in the fewest columns
(ties: the one with more held-out rows), i.e. the one whose score covers the most nearly the same
observed cells, hence the nearest scale; the overall quantiles are a mixture dominated by the most
common pattern, which can be further from the row's. Without stored patterns, every row is compared
with the overall quantiles; a table without pattern columns whose held-out rows are fewer than
``MIN_PATTERN_ROWS`` takes them from the sampled rows (``source: "sampled"``). ``report`` draws the overall ones as anomaly thresholds and ``inspect``
shows both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import CheckpointError

INFO_KEY = "logprob_quantiles"
VERSION = 2  # 2: per-pattern quantiles beside the overall ones

# Levels kept in the checkpoint: every percent, plus fine ones in both tails (anomaly thresholds live
# in the lower tail).
QUANTILE_LEVELS = sorted(
    {0.0, 0.0005, 0.001, 0.002, 0.005, 0.995, 0.998, 0.999, 0.9995, 1.0}
    | {round(i / 100, 2) for i in range(1, 100)}
    | {round(0.01 + i / 1000, 3) for i in range(-9, 10)}
)
# A pattern gets quantiles of its own from this many held-out rows with a finite score: enough for
# the 5% quantile to lie between its 2nd and 4th lowest scores; the 1% one is then about the lowest.
MIN_PATTERN_ROWS = 50
MAX_PATTERNS = 64  # the most frequent ones (each is a grid of len(QUANTILE_LEVELS) numbers)
CALIBRATION_SAMPLES = 20_000  # rows fit samples for the patterns too rare among the held-out rows
# Rows fit samples for the overall quantiles of a table without patterns whose held-out rows are too few.
SMALL_TABLE_CALIBRATION_SAMPLES = 2_000


def _patterns(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of a bool matrix (patterns) and, per row, the index of its pattern.

    Rows are packed into 64-bit words and numbered word by word (a sort of integers per word), as
    ``np.unique(mask, axis=0)`` sorts rows as raw bytes, about 100x slower on a 65536-row chunk."""
    n, k = mask.shape
    if k == 0 or n == 0:
        return np.zeros((min(n, 1), k), dtype=bool), np.zeros(n, dtype=np.intp)
    packed = np.packbits(mask, axis=1)
    words = np.pad(packed, ((0, 0), (0, -packed.shape[1] % 8))).view(np.uint64)
    codes = np.zeros(n, dtype=np.int64)
    for j in range(words.shape[1]):
        _, word = np.unique(words[:, j], return_inverse=True)
        _, codes = np.unique(codes * (int(word.max()) + 1) + word.reshape(-1), return_inverse=True)
    _, first = np.unique(codes, return_index=True)
    return mask[first], codes.reshape(-1)


def logprob_quantiles(
    values: np.ndarray,
    source: str,
    absent: np.ndarray | None = None,
    columns: Sequence[str] = (),
    sampled: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Quantiles of ``logprob`` (``values``) on held-out rows, as stored under ``info["logprob_quantiles"]``;
    per pattern of absent cells of ``columns`` too when the rows' ``absent`` matrix is given. A pattern
    with too few held-out rows takes its quantiles from ``sampled`` (the scores and absent cells of rows
    the model sampled) when that has enough rows of it."""
    finite = np.isfinite(values)
    stored: dict[str, Any] = {
        "version": VERSION,
        "source": source,
        "rows": len(values),
        "levels": QUANTILE_LEVELS,
        "values": np.quantile(values[finite], QUANTILE_LEVELS).tolist() if finite.any() else [],
    }
    if absent is None:
        return stored
    columns = [str(c) for c in columns]
    held_out = _pattern_grids(values, absent, columns, "held-out")
    found = {tuple(p["absent"]) for p in held_out}
    extra = (
        [p for p in _pattern_grids(*sampled, columns, "sampled") if tuple(p["absent"]) not in found] if sampled else []
    )
    kept = (held_out + extra)[:MAX_PATTERNS]
    stored["pattern_columns"] = columns
    stored["pattern_min_rows"] = MIN_PATTERN_ROWS
    # Held-out rows whose pattern has no grid of its own, from held-out or from sampled rows: compared
    # with the nearest pattern (a pattern with a sampled grid is compared with that, not the nearest one).
    with_grid = {tuple(p["absent"]) for p in kept}
    keys, inverse = _patterns(absent)
    named = [tuple(columns[j] for j in np.flatnonzero(key)) for key in keys]
    stored["pattern_other_rows"] = int(sum(np.sum(inverse == i) for i, key in enumerate(named) if key not in with_grid))
    stored["patterns"] = kept
    return stored


def _pattern_grids(values: np.ndarray, absent: np.ndarray, columns: list[str], source: str) -> list[dict[str, Any]]:
    """The quantile grid of every pattern with at least ``MIN_PATTERN_ROWS`` finite scores, most rows first."""
    finite = np.isfinite(values)
    keys, inverse = _patterns(absent)
    scored = np.bincount(inverse, weights=finite, minlength=len(keys))
    order = sorted(range(len(keys)), key=lambda i: (-scored[i], keys[i].tolist()))
    return [
        {
            "absent": [columns[j] for j in np.flatnonzero(keys[i])],
            "rows": int(np.sum(inverse == i)),
            "source": source,
            "values": np.quantile(values[(inverse == i) & finite], QUANTILE_LEVELS).tolist(),
        }
        for i in order
        if scored[i] >= MIN_PATTERN_ROWS
    ]


def _grid(levels: Any, values: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """Two equal, finite, increasing grids of at least two points, or None."""
    try:
        lv = np.asarray(levels, dtype=np.float64)
        vs = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if lv.ndim != 1 or lv.shape != vs.shape or len(lv) < 2 or not np.isfinite(vs).all() or np.any(np.diff(lv) < 0):
        return None
    return lv, vs


@dataclass(frozen=True)
class Pattern:
    """The stored quantiles of the rows whose cells in ``absent`` (and no others) are absent (missing, or on
    an atom), from held-out rows or from rows the model sampled (``source``)."""

    absent: tuple[str, ...]
    rows: int
    values: np.ndarray
    source: str = "held-out"  # or "sampled": rows the model drew, for a pattern too rare among held-out rows

    @property
    def label(self) -> str:
        return ", ".join(self.absent) if self.absent else "none (complete rows)"


def _parse_patterns(raw: Mapping[str, Any], levels: np.ndarray) -> tuple[tuple[str, ...], tuple[Pattern, ...]]:
    """(pattern columns, patterns) of a stored dict; ((), ()) when absent or malformed (then every row
    is compared with the overall quantiles)."""
    columns, entries = raw.get("pattern_columns"), raw.get("patterns")
    if not isinstance(columns, list) or not isinstance(entries, list):
        return (), ()
    patterns = []
    for entry in entries:
        grid = _grid(levels, entry.get("values")) if isinstance(entry, dict) else None
        missing = entry.get("absent") if isinstance(entry, dict) else None
        if grid is None or not isinstance(missing, list) or not set(missing) <= set(columns):
            return (), ()
        origin = str(entry.get("source") or "held-out")
        patterns.append(Pattern(tuple(str(c) for c in missing), int(entry.get("rows") or 0), grid[1], origin))
    return tuple(str(c) for c in columns), tuple(patterns)


@dataclass(frozen=True)
class StoredQuantiles:
    """The stored quantile functions, parsed and checked once.

    ``levels``/``values`` (all held-out rows) are empty when the checkpoint has none or they are malformed
    (not two equal, finite, increasing grids of at least two points); ``usable`` tells which.
    ``patterns`` are those of the missingness patterns with enough held-out rows, most rows first.
    """

    levels: np.ndarray
    values: np.ndarray
    source: str  # which rows they come from, e.g. "1522 validation rows"
    pattern_columns: tuple[str, ...] = ()
    patterns: tuple[Pattern, ...] = ()
    min_rows: int = MIN_PATTERN_ROWS
    other_rows: int = 0  # held-out rows in patterns without quantiles of their own

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> StoredQuantiles:
        raw = info.get(INFO_KEY)
        if not isinstance(raw, dict):
            return cls(np.empty(0), np.empty(0), "held-out rows")
        source = " ".join(str(x) for x in (raw.get("rows"), raw.get("source")) if x is not None) + " rows"
        grid = _grid(raw.get("levels"), raw.get("values"))
        if grid is None:
            return cls(np.empty(0), np.empty(0), source)
        columns, patterns = _parse_patterns(raw, grid[0])
        min_rows, other = raw.get("pattern_min_rows"), raw.get("pattern_other_rows")
        return cls(
            grid[0],
            grid[1],
            source,
            columns,
            patterns,
            int(min_rows) if isinstance(min_rows, int) else MIN_PATTERN_ROWS,
            int(other) if isinstance(other, int) else 0,
        )

    @property
    def usable(self) -> bool:
        return len(self.levels) > 0

    def at(self, levels: tuple[float, ...], values: np.ndarray | None = None) -> list[tuple[float, float]]:
        """(level, threshold) for each of ``levels`` inside the stored grid, of the overall quantiles or
        of ``values`` (a pattern's); [] when unusable."""
        if not self.usable:
            return []
        grid = self.values if values is None else values
        return [(q, float(np.interp(q, self.levels, grid))) for q in levels if self.levels[0] <= q <= self.levels[-1]]

    @property
    def per_pattern(self) -> bool:
        """Rows with missing cells have thresholds of their own: worth showing beside the overall ones
        (with complete rows only, the one pattern's quantiles are the overall ones)."""
        return any(p.absent for p in self.patterns) or (bool(self.patterns) and self.other_rows > 0)

    def threshold(self, level: float) -> float:
        """The ``level``-quantile of ``logprob`` over all the held-out rows (interpolated)."""
        self._require()
        return float(np.interp(level, self.levels, self.values))

    def pattern_index(self, absent: np.ndarray) -> np.ndarray:
        """Per row of ``absent`` (its absent cells, a bool matrix over ``pattern_columns``): the index in ``patterns`` of the quantiles it is compared with (its own
        pattern's, else the nearest stored pattern's: see the module docstring); -1 (the overall
        quantiles) for every row when no pattern is stored."""
        if not self.patterns:
            return np.full(len(absent), -1, dtype=np.intp)
        keys, inverse = _patterns(absent)
        distance = np.empty((len(keys), len(self.patterns)), dtype=np.intp)
        for i, p in enumerate(self.patterns):
            distance[:, i] = (keys != np.array([c in p.absent for c in self.pattern_columns])).sum(axis=1)
        # argmin takes the first of equal distances: the pattern with the most rows.
        return distance.argmin(axis=1)[inverse] if len(absent) else np.zeros(0, dtype=np.intp)

    def thresholds(self, level: float, absent: np.ndarray) -> np.ndarray:
        """Per row of ``frame``: the ``level``-quantile of ``logprob`` over the held-out rows of its
        missingness pattern (see ``pattern_index``)."""
        self._require()
        grids = [p.values for p in self.patterns] + [self.values]  # index -1: the overall quantiles
        table = np.array([np.interp(level, self.levels, grid) for grid in grids])
        return table[self.pattern_index(absent)]

    def percentile(self, logprob: np.ndarray, absent: np.ndarray | None = None) -> np.ndarray:
        """Percentile (0-100) of each ``logprob`` among the held-out rows (interpolated): those of the
        row's missingness pattern when ``frame`` (the scored rows) is given, else all of them."""
        self._require()
        logprob = np.asarray(logprob, dtype=np.float64)
        if absent is None or not self.patterns:
            return 100.0 * np.interp(logprob, self.values, self.levels, left=0.0, right=1.0)
        index = self.pattern_index(absent)
        out = np.empty(len(logprob))
        for i in np.unique(index):
            rows = index == i
            out[rows] = 100.0 * np.interp(logprob[rows], self.patterns[i].values, self.levels, left=0.0, right=1.0)
        return out

    def _require(self) -> None:
        if not self.usable:
            raise CheckpointError(
                "this checkpoint holds no logprob quantiles of held-out rows; refit it with this flowcli"
            )
