"""Columns that are linear functions of other columns: tables without a density.

A table holding the same quantity twice (a length in cm and in inches, a date written two ways, a total
beside its parts) lies on a lower-dimensional subspace: its rows have no density, and a flow fitted to them
drives its log-likelihood towards infinity along the missing direction. The fit then "diverges" or keeps a
Gaussian start whose score is meaningless, and nothing says why. So before training, the continuous
features that are not dequantized (integers and atoms are: their noise keeps a density) are checked for
linear relations that hold exactly, or to within float32's precision (training runs in float32, so a
relation closer than that is exact for the flow), and the fit stops with an error naming each derived
column and its relation, which the user resolves by leaving the column out
(``columns: {name: {role: ignore}}``) or keeping only what it adds (a difference, a duration).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .errors import DataError

if TYPE_CHECKING:
    from .schema import Schema

# A relation holds when the residual's variance is below this share of the column's: a residual sd of
# 3e-7 of the column's, a few float32 steps (float32 resolves 6e-8 of a value), in which training runs: a
# float32 copy of a column (residual ~1e-7) is caught, a price and its tax-included price rounded to cents
# (residual ~1e-6 of a spread of thousands) keeps its density and fits.
RELATIVE_VARIANCE = 1e-13
CHECK_ROWS = 20_000  # rows the search reads (evenly spaced); a relation found is verified on every row


def check_independent(schema: Schema, matrix: np.ndarray, streamed: bool = False) -> None:
    """Raise a DataError naming every continuous column that is a linear function of the columns
    before it in the training feature matrix ``matrix`` (``Schema.to_features``: data units, NaN where a
    row has no value). ``streamed``: the advice suits a streamed fit."""
    specs = schema.feature_specs()
    owners = [c.name for c in schema.columns for _ in range(c.width)]
    dated = {c.name for c in schema.columns if c.role == "datetime"}  # offsets from origins of their own
    candidates = [j for j, spec in enumerate(specs) if spec.levels == 0 and spec.width == 0]
    # Relations are looked for on the rows with every candidate's value: columns present in fewer than half
    # the rows are left out, or two sparse columns never present together would leave no row to look at.
    candidates = [j for j in candidates if np.isfinite(matrix[:, j]).mean() >= 0.5]
    if len(candidates) < 2:
        return
    values = matrix[:, candidates]
    values = values[np.isfinite(values).all(axis=1)]  # rows with every candidate's value
    if len(values) < len(candidates) + 2:
        return  # too few rows to tell a relation from chance
    names = [owners[j] for j in candidates]
    picked = values[np.linspace(0, len(values) - 1, min(len(values), CHECK_ROWS)).astype(int)]
    centred = picked - picked.mean(axis=0)
    sd = centred.std(axis=0)
    z = centred / np.where(sd > 0, sd, 1.0)
    correlation = z.T @ z / len(z)
    # Each column against the independent ones before it, in the table's order (a Cholesky factor grown
    # column by column): the residual variance of its regression on them is the factor's squared diagonal.
    kept: list[int] = []
    factor = np.zeros((0, 0))
    found = []
    for k in range(len(candidates)):
        if sd[k] == 0:
            continue
        cross = np.linalg.solve(factor, correlation[kept, k]) if kept else np.zeros(0)
        residual = correlation[k, k] - cross @ cross
        if residual <= RELATIVE_VARIANCE:
            relation = _relation(values, k, kept, names, sd, dated)
            if relation is not None:  # else exact on the rows read only, not on every row: a density after all
                found.append(relation)
                continue
        grown = np.zeros((len(kept) + 1, len(kept) + 1))
        grown[: len(kept), : len(kept)] = factor
        grown[-1, :-1], grown[-1, -1] = cross, np.sqrt(max(residual, RELATIVE_VARIANCE))
        factor = grown
        kept.append(k)
    if found:
        many = len(found) > 1
        columns = ", ".join(f"{name!r}" for name, _ in found)
        relations = "; ".join(text for _, text in found)
        ignore = ", ".join(f"{name}: {{role: ignore}}" for name, _ in found)
        them = "them" if many else "it"
        # A streamed fit takes no columns: section (its roles come from one pass over the files).
        how = f"write the files without {them}" if streamed else f"config: columns: {{{ignore}}}"
        raise DataError(
            f"column{'s' if many else ''} {columns} {'are linear functions' if many else 'is a linear function'} "
            f"of other columns ({relations}), exactly or to within float32's precision, in which training runs: "
            f"such a table has no density to learn. Leave {them} out ({how}), or keep only what "
            f"{'they add' if many else 'it adds'} (a difference, a duration) as a column"
        )


def _relation(
    values: np.ndarray, derived: int, sources: list[int], names: list[str], sd: np.ndarray, dated: set[str]
) -> tuple[str, str] | None:
    """The least-squares relation ``derived = sum(c * source) + b`` on every row, as (name, its text) with
    the sources that take part, or None when it does not hold on every row. Dates (``dated``) are offsets
    from origins of their own, so a relation with one is said without its numbers."""
    design = np.column_stack([values[:, sources], np.ones(len(values))])
    target = values[:, derived]
    coefficients, *_ = np.linalg.lstsq(design, target, rcond=None)
    residual = target - design @ coefficients
    if residual.var() > RELATIVE_VARIANCE * target.var():
        return None
    *slopes, intercept = coefficients
    taking_part = [(c, names[i]) for c, i in zip(slopes, sources, strict=True) if abs(c) * sd[i] > 1e-6 * sd[derived]]
    if {names[derived], *(name for _, name in taking_part)} & dated:
        if len(taking_part) == 1 and np.isclose(taking_part[0][0], 1.0, rtol=1e-6):
            return names[derived], f"{names[derived]} = {taking_part[0][1]} + a fixed time"
        return names[derived], f"{names[derived]} follows {', '.join(name for _, name in taking_part)} linearly"
    terms = [name if np.isclose(c, 1.0, rtol=1e-9) else f"{c:.6g} * {name}" for c, name in taking_part]
    text = " + ".join(terms) or "a constant"
    if abs(intercept) > 1e-9 * (float(np.abs(target).max()) or 1.0):
        text += f" {'+' if intercept > 0 else '-'} {abs(intercept):.6g}"
    return names[derived], f"{names[derived]} = {text}"
