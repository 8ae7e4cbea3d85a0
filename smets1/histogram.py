"""Fixed-bucket histograms kept on a hot path, exposed as Prometheus histograms
(smets1.metrics) and read by the dashboard: no prometheus-client import here."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(slots=True)
class Buckets:
    """A histogram kept on the hot path (`observe` is a bisect and two additions) and
    exposed at scrape time as a Prometheus histogram: `counts[i]` holds the values at or
    under `bounds[i]` and over the bound before; the last, those over every bound."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        """(upper bound, values at or under it) as prometheus-client wants them."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            out.append((repr(float(bound)), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


#: Simulated seconds from a few minutes to weeks: transfers and release-to-answer times.
SIMULATED_DURATION_BOUNDS: tuple[float, ...] = (
    60, 300, 600, 1_800, 3_600, 7_200, 14_400, 28_800, 43_200, 86_400, 172_800, 259_200,
    345_600, 432_000, 518_400, 604_800, 1_209_600,
)  # fmt: skip


def with_bound(bounds: Sequence[float], edge: float) -> tuple[float, ...]:
    """`bounds` with `edge` among them (a TRT, so that met and missed split on a bucket)."""
    return tuple(sorted({*bounds, edge}))
