"""continuous: any real number, the value itself standardized. The fallback of inference for numbers."""

from __future__ import annotations

from .base import Evidence, register_role
from .numeric import NumericRole


@register_role("continuous")
class Continuous(NumericRole):
    """A real-valued column: y = (x - median) / scale, with soft tails (see ``numeric.py``)."""

    inference_rank = 50  # last: numbers nothing else claimed

    def claims(self, evidence: Evidence) -> str | None:
        return "numbers" if evidence.numbers is not None else None
