"""What background traffic counts: requests met and missed against their targets, and
their latencies, by kind and by hour of day, for the run's summary.

Latencies go into log-spaced histograms (buckets 1 % wide), not lists: the estate's
months of reads would be hundreds of millions of values, the histograms stay at most a
few thousand counters. A percentile is read as its bucket's geometric middle, so it is
within half a percent of the exact value.

A request missed unanswered counts in the latencies at the time it was given up (or the
run ended): a lower bound, its answer took longer if it came at all. So traffic that leaves
reads unanswered never shows a better p95 than traffic that answers them late.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

#: The smallest latency told apart from 0; anything shorter falls in the first bucket.
LATENCY_FLOOR_SECONDS = 1e-3
#: Each bucket is this much wider than the one before (1 %).
BUCKET_GROWTH = 1.01
_LOG_GROWTH = math.log(BUCKET_GROWTH)
HOURS = 24


@dataclass(slots=True)
class LatencyHistogram:
    """Counts of latencies by log-spaced bucket."""

    counts: Counter[int] = field(default_factory=Counter)
    n: int = 0

    def observe(self, seconds: float) -> None:
        if seconds > LATENCY_FLOOR_SECONDS:
            bucket = int(math.log(seconds / LATENCY_FLOOR_SECONDS) / _LOG_GROWTH)
        else:
            bucket = 0
        self.counts[bucket] += 1
        self.n += 1

    def percentile(self, q: float) -> float | None:
        """The q-th percentile (0-100) of the latencies seen, or None if there were none."""
        if not self.n:
            return None
        rank = max(1, math.ceil(q / 100 * self.n))
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return LATENCY_FLOOR_SECONDS * BUCKET_GROWTH ** (bucket + 0.5)
        raise AssertionError("the counts add up to fewer than n")


@dataclass(slots=True)
class Tally:
    """One kind's outcomes, or one hour's."""

    requests: int = 0
    met: int = 0
    missed: int = 0
    #: Missed because no answer came before the request was given up (or the run ended).
    unanswered: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def answered(self, seconds: float, target: float) -> None:
        self.latency.observe(seconds)
        if seconds <= target:
            self.met += 1
        else:
            self.missed += 1

    def lost(self, waited: float) -> None:
        """Missed, unanswered after `waited` seconds: a lower bound of its latency."""
        self.latency.observe(waited)
        self.missed += 1
        self.unanswered += 1


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass(slots=True)
class BackgroundStats:
    """Every outcome, by kind (in the config's order) and by hour of day of the request."""

    kind_names: tuple[str, ...]
    targets: tuple[float, ...]
    kinds: list[Tally] = field(init=False)
    hours: list[Tally] = field(init=False)
    #: Requests that waited at the DCO for one of `max_open_requests`.
    waited: int = 0
    #: The most requests open at once.
    peak_open: int = 0
    #: Answers that came after their request was given up.
    late_answers: int = 0

    def __post_init__(self) -> None:
        self.kinds = [Tally() for _ in self.kind_names]
        self.hours = [Tally() for _ in range(HOURS)]

    def made(self, kind: int, hour: int) -> None:
        self.kinds[kind].requests += 1
        self.hours[hour].requests += 1

    def answered(self, kind: int, hour: int, seconds: float) -> None:
        target = self.targets[kind]
        self.kinds[kind].answered(seconds, target)
        self.hours[hour].answered(seconds, target)

    def lost(self, kind: int, hour: int, waited: float) -> None:
        self.kinds[kind].lost(waited)
        self.hours[hour].lost(waited)

    def summary(self, open_at_end: int, timezone: str) -> dict[str, Any]:
        """The summary's `background` section."""
        every = LatencyHistogram()
        for tally in self.kinds:
            every.counts.update(tally.latency.counts)
            every.n += tally.latency.n
        requests = sum(t.requests for t in self.kinds)
        met = sum(t.met for t in self.kinds)
        missed = sum(t.missed for t in self.kinds)
        return {
            "requests": requests,
            "met": met,
            "missed": missed,
            "unanswered": sum(t.unanswered for t in self.kinds),
            "open_at_end": open_at_end,
            "met_share": round(met / (met + missed), 6) if met + missed else None,
            "p50_seconds": _seconds(every.percentile(50)),
            "p95_seconds": _seconds(every.percentile(95)),
            "waited_for_dco": self.waited,
            "peak_open": self.peak_open,
            "late_answers": self.late_answers,
            "kinds": {
                name: {
                    "target_seconds": target,
                    "requests": t.requests,
                    "met": t.met,
                    "missed": t.missed,
                    "unanswered": t.unanswered,
                    "p50_seconds": _seconds(t.latency.percentile(50)),
                    "p95_seconds": _seconds(t.latency.percentile(95)),
                }
                for name, target, t in zip(self.kind_names, self.targets, self.kinds, strict=True)
            },
            "by_hour": {
                "timezone": timezone,
                "requests": [t.requests for t in self.hours],
                "missed": [t.missed for t in self.hours],
                "p95_seconds": [_seconds(t.latency.percentile(95)) for t in self.hours],
            },
        }
