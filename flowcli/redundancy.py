"""Columns that are exact linear functions of other columns: tables without a density.

A table holding the same quantity twice (a length in cm and in inches, a date written two ways, a total
beside its parts) lies on a lower-dimensional subspace: its rows have no density, and a flow fitted to them
drives its log-likelihood towards infinity along the missing direction. The fit then "diverges" or keeps a
Gaussian start whose score is meaningless, and nothing says why. So before training, the continuous
features that are not dequantized (integers and atoms are: their noise keeps a density) are checked for
exact linear relations, and the fit stops with an error naming each derived column and its relation,
which the user resolves by leaving the column out (``columns: {name: {role: ignore}}``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .errors import DataError

if TYPE_CHECKING:
    from .schema import Schema

# A relation is exact when the residual's variance is below this share of the standardized variance: a
# residual sd of 1e-5 of the column's, near float32's resolution, in which training runs. A column rounded
# after a unit conversion (x * 2.54 to two decimals) keeps a residual far above it and has a density.
RELATIVE_VARIANCE = 1e-10
CHECK_ROWS = 20_000  # rows the search reads (evenly spaced); a relation found is verified on every row


def check_independent(schema: Schema, matrix: np.ndarray, streamed: bool = False) -> None:
    """Raise a DataError naming every continuous column that is an exact linear function of the columns
    before it in the training feature matrix ``matrix`` (``Schema.to_features``: data units, NaN where a
    row has no value). ``streamed``: the advice suits a streamed fit."""
    specs = schema.feature_specs()
    owners = [c.name for c in schema.columns for _ in range(c.width)]
    candidates = [j for j, spec in enumerate(specs) if spec.levels == 0 and spec.width == 0]
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
            relation = _relation(values, k, kept, names, sd)
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
            f"column{'s' if many else ''} {columns} {'are exact linear functions' if many else 'is an exact linear function'} "
            f"of other columns ({relations}): such a table has no density to learn. Leave {them} out ({how})"
        )


def _relation(
    values: np.ndarray, derived: int, sources: list[int], names: list[str], sd: np.ndarray
) -> tuple[str, str] | None:
    """The least-squares relation ``derived = sum(c * source) + b`` on every row, as (name, its text) with
    the sources that take part, or None when it is not exact on every row."""
    design = np.column_stack([values[:, sources], np.ones(len(values))])
    target = values[:, derived]
    coefficients, *_ = np.linalg.lstsq(design, target, rcond=None)
    residual = target - design @ coefficients
    if residual.var() > RELATIVE_VARIANCE * target.var():
        return None
    *slopes, intercept = coefficients
    terms = [
        name if np.isclose(c, 1.0, rtol=1e-9) else f"{c:.6g} * {name}"
        for c, i, name in zip(slopes, sources, [names[i] for i in sources], strict=True)
        if abs(c) * sd[i] > 1e-6 * sd[derived]  # the sources that take part, not rounding residue
    ]
    text = " + ".join(terms) or "a constant"
    if abs(intercept) > 1e-9 * (float(np.abs(target).max()) or 1.0):
        text += f" {'+' if intercept > 0 else '-'} {abs(intercept):.6g}"
    return names[derived], f"{names[derived]} = {text}"
