"""Point masses (atoms) and recorded precision (the grid) of number-valued columns.

**Atoms.** A value of a numeric column (continuous, positive, bounded, integer; never datetime) is an
atom, a discrete outcome with a probability of its own rather than part of the density, when

- it holds at least ``ATOM_MIN_SHARE`` (1%) of the present values and at least ``ATOM_MIN_ROWS`` (10)
  rows, and
- at least ``ATOM_RATIO`` (4) times as many rows as the most common of its neighbours on the column's
  grid: the values within ``NEIGHBOURS`` (2) grid steps either side, the step being 1 for whole
  numbers, the learnt step, or 10^-decimals; in a float column without a grid, its ``NEIGHBOURS``
  nearest distinct values either side (a continuous column's hold a row each; a column of a few dozen
  values on an irregular or standardized grid, such as ADBench cardio's, has common neighbours beside
  each common value, and no atoms: counting no neighbours there made 8 atoms of most of its columns and
  cost 0.04 AUROC). Two steps, not one: in a small table a value that happens to hold 7 rows between
  neighbours of 1 and 0 is chance (penguins' bill length 41.1 mm, whose next-but-one holds 4), and
  heaping on round numbers (body masses on a 25 g grid, mostly multiples of 50) is not a point mass,

or when the column's values are all >= 0 and it is 0 in at least ``ZERO_MIN_ROWS`` (1) row (hours
worked, incomes, claims: the zeros are a different kind of row, and the rest is then > 0). At most
``MAX_ATOMS`` (8) atoms are kept: that zero, then the most common. A popular value among similar neighbours (the mode of
a count) is not an atom; a code such as 0 or -999 for "not measured" is. ``columns: {x: {atoms: [0]}}``
in the config sets the atoms instead, ``atoms: []`` switches them off.

**Grid.** Floats are rounded to their decimals (``written.decimals_of``). Beyond that, a column whose
distinct values are, but for at most ``GRID_SLACK`` (5%) of them, multiples of a coarser step s = m 10^k
(m in 1, 2, 2.5, 5) learns that step (0.25, 0.5, 5, 1000, ...), the coarsest such, and decoded samples
are rounded to it. Learnt from distinct values, so an atom's many rows cannot make the grid, and from at
least ``GRID_MIN_DISTINCT`` of them, so a handful of values cannot make one by chance.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ConfigError

ATOM_MIN_SHARE = 0.01
# 10 rows, not 5: among the few hundred distinct values of a small table, one with 5 to 9 rows between
# neighbours of 0 to 2 turns up by chance (11 of 450 simulated normal columns of 100 to 20,000 rows with
# 0 to 2 decimals got such an "atom" with 5 rows; 1 with 10).
ATOM_MIN_ROWS = 10
ATOM_RATIO = 4.0
NEIGHBOURS = 2  # grid steps on either side whose counts an atom is compared with
# One row is enough: with its zeros as an atom a column of values >= 0 keeps a support > 0 (with a lone 0
# among the values it had none, and a default fit sampled 5.8% negative values).
ZERO_MIN_ROWS = 1
MAX_ATOMS = 8
GRID_SLACK = 0.05
GRID_MIN_DISTINCT = 20
_MANTISSAS = (5.0, 2.5, 2.0, 1.0)


def _multiples(values: np.ndarray, step: float) -> np.ndarray:
    """Per value: a multiple of ``step`` (to a relative 1e-9, so 0.3 counts as 3 x 0.1)."""
    ratio = values / step
    return np.abs(ratio - np.rint(ratio)) <= 1e-9 * np.maximum(1.0, np.abs(ratio))


def natural_grid(numbers: np.ndarray, decimals: int | None) -> float | None:
    """The grid the values are written on without a learnt step: 1 for whole numbers, 10^-decimals."""
    if len(numbers) and bool((numbers == np.round(numbers)).all()):
        return 1.0
    return 10.0**-decimals if decimals is not None else None


def learn_step(numbers: np.ndarray, decimals: int | None) -> float | None:
    """A step coarser than the natural grid that (nearly) every distinct value is a multiple of, or None."""
    base = natural_grid(numbers, decimals)
    distinct = np.unique(numbers)
    if base is None or len(distinct) < GRID_MIN_DISTINCT:
        return None
    top = max(float(np.abs(distinct).max()), base)
    for k in range(int(math.floor(math.log10(top))), int(round(math.log10(base))) - 2, -1):
        for m in _MANTISSAS:
            step = float(f"{m}e{k}")  # exact decimal steps: 0.25, not 0.25000000000000006
            if step <= base * (1 + 1e-9):
                continue
            if step < top and _multiples(distinct, step).mean() >= 1 - GRID_SLACK:
                return step
    return None


def infer_atoms(numbers: np.ndarray, grid: float | None) -> list[float]:
    """The atoms of a column's present values by the rule of the module docstring: the zero of a column of
    values >= 0 first, then the most common."""
    if not len(numbers):
        return []
    values, counts = np.unique(numbers, return_counts=True)
    needed = max(ATOM_MIN_ROWS, ATOM_MIN_SHARE * len(numbers))
    found: list[tuple[bool, int, float]] = []
    for value, count in zip(values, counts, strict=True):
        zero = value == 0 and values[0] >= 0 and count >= ZERO_MIN_ROWS
        if count < needed and not zero:
            continue
        if grid is not None:
            offset = np.abs(values - value) / grid
            near = (offset > 0.5) & (offset < NEIGHBOURS + 0.5)
        else:  # the nearest distinct values either side, wherever they are
            rank = np.arange(len(values)) - int(np.searchsorted(values, value))
            near = (rank != 0) & (np.abs(rank) <= NEIGHBOURS)
        neighbours = int(counts[near].max()) if near.any() else 0
        if zero or count >= ATOM_RATIO * neighbours:
            found.append((bool(zero), int(count), float(value)))
    # The zero of a column of values >= 0 is kept whatever the cap: it is what keeps the rest's support > 0
    # (ADBench thyroid's x1 in [0, 1] has 52 zeros and 8 commoner atoms; without its zero, 3.5% of samples were negative).
    found.sort(key=lambda item: (not item[0], -item[1]))
    return [value for _, _, value in found[:MAX_ATOMS]]


def parse_atoms(raw: Any, where: str) -> list[float]:
    """The config's ``atoms:`` list: finite numbers, no repeats, at most ``MAX_ATOMS``."""
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: a list of numbers (e.g. [0] or [] for none), got {raw!r}")
    for value in raw:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ConfigError(f"{where}: atoms are finite numbers, got {value!r}")
    if len(set(raw)) != len(raw):
        raise ConfigError(f"{where}: {raw!r} repeats a value")
    if len(raw) > MAX_ATOMS:
        raise ConfigError(f"{where}: at most {MAX_ATOMS} atoms, got {len(raw)}")
    return [float(v) for v in raw]


def atom_codes(values: np.ndarray, atoms: list[float]) -> np.ndarray:
    """Per value: the index of the atom it equals exactly, or -1."""
    codes = np.full(len(values), -1, dtype=np.int64)
    for i, atom in enumerate(atoms):
        codes[values == atom] = i
    return codes


def snap(
    values: np.ndarray, grid: float | None, low: float | None, high: float | None, atoms: list[float]
) -> np.ndarray:
    """Decoded continuous values rounded to ``grid``, kept strictly inside the exclusive bounds ``low`` and
    ``high`` (the nearest grid point inside), and moved one grid step off an atom they would land on
    (towards the side of the unrounded value), so rounding neither leaves the support nor adds to an
    atom's share. Without a grid the values are returned as they are."""
    if grid is None:
        return values
    digits = max(0, -math.floor(math.log10(grid)) + 1)
    snapped = np.round(np.rint(values / grid) * grid, digits)
    if low is not None:
        above = np.round((math.floor(low / grid + 1e-9) + 1) * grid, digits)
        snapped = np.where(snapped <= low, above, snapped)
    if high is not None:
        below = np.round((math.ceil(high / grid - 1e-9) - 1) * grid, digits)
        snapped = np.where(snapped >= high, below, snapped)
    for atom in atoms:
        on = np.isclose(snapped, atom, rtol=0, atol=grid * 1e-6)
        side = np.where(values < atom, -grid, grid)
        if low is not None:
            side = np.where(atom - grid <= low, grid, side)
        if high is not None:
            side = np.where(atom + grid >= high, -grid, side)
        snapped = np.where(on, np.round(atom + side, digits), snapped)
    return snapped
