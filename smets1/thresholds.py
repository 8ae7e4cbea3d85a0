"""Thresholds a run is gated on: a count (`10`) or a share of the run (`2.5%`).

`--max-failed` and `--max-trt-missed` on the command line, `max_failed` and
`max_trt_missed` in a fleet config; orchestrator.gate checks a summary against them.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any


class ThresholdKind(enum.Enum):
    COUNT = "count"
    PERCENT = "percent"


@dataclass(frozen=True, slots=True)
class Threshold:
    """At most `value` requests (COUNT), or at most `value` per cent of them (PERCENT)."""

    kind: ThresholdKind
    value: float

    def limit(self, total: int) -> float:
        """The most allowed out of `total`."""
        return self.value if self.kind is ThresholdKind.COUNT else total * self.value / 100

    def __str__(self) -> str:
        if self.kind is ThresholdKind.COUNT:
            return f"{self.value:,.0f}"
        return f"{self.value:g}%"


def parse_threshold(value: Any) -> Threshold:
    """`10` or `"10"`: a count; `"2.5%"`: a percentage (0-100). ValueError otherwise,
    saying what was expected."""
    expected = "expected a whole number of requests (10) or a percentage (2.5%)"
    if isinstance(value, Threshold):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{expected}, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{expected}, got {value}")
        return Threshold(ThresholdKind.COUNT, float(value))
    text = value.strip()
    if text.endswith("%"):
        try:
            pct = float(text[:-1])
        except ValueError:
            raise ValueError(f"{expected}, got {value!r}") from None
        if not math.isfinite(pct) or not 0 <= pct <= 100:
            raise ValueError(f"a percentage must be 0-100, got {value!r}")
        return Threshold(ThresholdKind.PERCENT, pct)
    try:
        count = int(text)
    except ValueError:
        raise ValueError(f"{expected}, got {value!r}") from None
    if count < 0:
        raise ValueError(f"{expected}, got {value!r}")
    return Threshold(ThresholdKind.COUNT, float(count))
