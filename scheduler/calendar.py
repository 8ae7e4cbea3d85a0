"""The capacity calendar: how many large-image 11.3s each day holds, and for whom.

A day (index from the clock's epoch, UTC midnight) has `capacity` large-image releases.
They are committed in two ways:

* `reserved[day][schedule_id]`: batches of agreed delivery schedules;
* `unscheduled[day][user]`: unscheduled work planned for that day (a User's daily
  allowance is counted here, over all that User's requests).

`released[day]` counts what actually went out, and never passes `capacity`.
Peak windows are hours in which nothing large is released; the rest of the day is the
off-peak time across which a day's work is spread.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

from smets1.clock import DAY_SECONDS

HOUR_SECONDS = 3_600.0


class Calendar:
    def __init__(
        self, epoch: float, capacity: int, peak_windows: list[tuple[float, float]]
    ) -> None:
        self.epoch = epoch
        self.capacity = capacity
        #: Peak windows in seconds into the day, merged and sorted.
        self.peaks = _merge([(a * HOUR_SECONDS, b * HOUR_SECONDS) for a, b in peak_windows])
        self.reserved: defaultdict[int, Counter[int]] = defaultdict(Counter)
        self.unscheduled: defaultdict[int, Counter[int]] = defaultdict(Counter)
        self.released: Counter[int] = Counter()

    # -- days ------------------------------------------------------------------------

    def day_of(self, t: float) -> int:
        return math.floor((t - self.epoch) / DAY_SECONDS)

    def day_start(self, day: int) -> float:
        return self.epoch + day * DAY_SECONDS

    # -- commitments -----------------------------------------------------------------

    def committed(self, day: int) -> int:
        return sum(self.reserved[day].values()) + sum(self.unscheduled[day].values())

    def free(self, day: int) -> int:
        return max(0, self.capacity - self.committed(day))

    def user_unscheduled(self, day: int, user: int) -> int:
        return self.unscheduled[day][user]

    # -- peak windows ----------------------------------------------------------------

    def peak_end(self, t: float) -> float | None:
        """If `t` falls in a peak window, the time it ends; else None."""
        start = self.day_start(self.day_of(t))
        offset = t - start
        for a, b in self.peaks:
            if a <= offset < b:
                return start + b
        return None

    def offpeak_left(self, t: float) -> float:
        """Off-peak seconds from `t` to the end of its day."""
        start = self.day_start(self.day_of(t))
        offset = t - start
        left = DAY_SECONDS - offset
        for a, b in self.peaks:
            left -= max(0.0, b - max(a, offset))
        return max(0.0, left)

    @property
    def offpeak_per_day(self) -> float:
        return DAY_SECONDS - sum(b - a for a, b in self.peaks)


def _merge(windows: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(windows):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
