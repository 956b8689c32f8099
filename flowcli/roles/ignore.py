"""ignore: not modelled, left out of samples, and not needed when scoring.

Inferred for identifiers (text with more than ``ID_LIKE_MIN`` distinct values, nearly one per row) and
for columns no role can model: nested lists or structs, binary values, no value at all; the reason in
the column table says which. Set in the config, the column's values are not even read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Evidence, Role, register_role

if TYPE_CHECKING:
    from ..columns import Column

ID_LIKE_MIN = 100  # text columns with more distinct values than this, nearly one per row, are identifiers


@register_role("ignore")
class Ignore(Role):
    """A column the flow does not see."""

    inference_rank = 20  # before categorical, which would otherwise take identifiers as text
    modelled = False
    reads_values = False

    def claims(self, evidence: Evidence) -> str | None:
        if evidence.unusable is not None:
            return f"{evidence.unusable}: not modelled"
        present, distinct = evidence.present, evidence.distinct
        if (
            evidence.numbers is None
            and not evidence.is_bool
            and distinct > ID_LIKE_MIN
            and distinct > 0.9 * len(present)
        ):
            return f"text with {distinct} distinct values in {len(evidence.series)} rows: an identifier"
        return None

    def describe(self, column: Column) -> str:
        return "not modelled"
