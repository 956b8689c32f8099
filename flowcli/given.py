"""The command line's conditional questions (issue 15): ``--given COL=VALUE`` and the
seeds of streamed chunks.

A ``--given`` value is read exactly as the same text in a table file would be: the pairs become a one-row
delimited table that ``delimited.read_text_table`` types, with the model's text columns kept as text. So
``--given zip=00501`` stays the label ``'00501'``, ``--given stars=3`` is the integer 3 of a column of
whole numbers, ``--given flag=true`` a boolean, ``--given share=12%`` the text that the column's role
parses, and ``--decimal ,`` reads ``--given x=1,5`` as 1.5, as it would in the file.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .delimited import ReadOptions, read_text_table
from .errors import DataError


def _split(pair: str) -> tuple[str, str]:
    """``COL=VALUE`` split at the first ``=`` (a value may hold ``=``; a column name rarely does)."""
    name, equals, value = pair.partition("=")
    if not equals or not name.strip():
        raise DataError(f"--given {pair!r}: expected COLUMN=VALUE, e.g. --given species=Gentoo")
    if value == "":
        raise DataError(f"--given {pair!r}: no value after '='; leave the column out to leave it free")
    return name.strip(), value


def parse_given(pairs: Sequence[str], text_columns: frozenset[str], decimal: str | None = None) -> dict[str, Any]:
    """``--given`` pairs as {column: value}, each value typed as the same text in a table file would be.

    The names are not checked against the model here: the model's own error names an unknown column, a
    label it never saw, or a value outside the column's support."""
    given: dict[str, str] = {}
    for pair in pairs:
        name, value = _split(pair)
        if name in given:
            raise DataError(f"--given {name!r} appears twice; give each column one value")
        given[name] = value
    names = list(given)
    text = io.StringIO()
    # Every field quoted and tab-separated: a value holding a comma, a quote or a tab stays one field. No
    # header line: column names are the user's, not data to sniff, so the row is read as c0, c1, ...
    csv.writer(text, delimiter="\t", quoting=csv.QUOTE_ALL, lineterminator="\n").writerow(given.values())
    options = ReadOptions(
        sep="\t",
        decimal=decimal or ".",
        header=False,
        text_columns=frozenset(f"c{i}" for i, name in enumerate(names) if name in text_columns),
    )
    row = read_text_table(text.getvalue().encode(), "--given", options).iloc[0]
    values: dict[str, Any] = {}
    for i, name in enumerate(names):
        value = row[f"c{i}"]
        if pd.isna(value):  # "NA", "null", ...: the markers of a missing value in a file
            raise DataError(
                f"--given {name}={given[name]}: a missing value is not a condition; leave the column out to leave it free"
            )
        # Plain Python values (3, not np.int64(3)): what the API documents, and what errors print.
        values[name] = value.item() if isinstance(value, np.generic) else value
    return values


def chunk_seed(seed: int | None, chunk: int) -> int | None:
    """The seed of a streamed chunk, ``chunk`` being its number or its first row (None stays None: fresh
    randomness). Derived with numpy's SeedSequence, so chunks draw independent streams (``seed + chunk``
    would make chunk 1 of --seed 0 repeat chunk 0 of --seed 1). The same seed and --chunk-size give the
    same output; another --chunk-size cuts the input elsewhere, and so draws other values."""
    if seed is None:
        return None
    # Non-negative and below 2**63: what torch.Generator.manual_seed and numpy take.
    return int(np.random.SeedSequence([seed & (2**64 - 1), chunk]).generate_state(1, np.uint64)[0] >> 1)
