"""The capacity calendar: how many large-image 11.3s each day holds, and for whom.

A day (index from the clock's epoch, UTC midnight) has `capacity` large-image releases.
They are committed in two ways:

* reservations: batches of agreed delivery schedules, per schedule (`reserve`,
  `move_reservation`; read with `reservations(day)` and `scheduled_on(day)`);
* bookings: unscheduled work planned for that day, per User (`book`, `unbook`,
  `move_booking`; read with `bookings(day)`, `user_unscheduled` and `unscheduled_on`).
  A User's daily allowance is counted here, over all that User's requests.

What actually went out is recorded with `record_release` (read with `released_on` and
`released_per_day`), and never passes `capacity`.

The calendar owns these counters: nothing else writes them, and reading a day that holds
nothing adds nothing (a capacity read over a long horizon must not grow the calendar).
Peak windows are hours in which nothing large is released; the rest of the day is the
off-peak time across which a day's work is spread. Their hours are UK local time, as the
DCC's peak is (`zone`, Europe/London by default: GMT in winter, BST in summer), read off
the wall clock of each local date: 16:00-19:00 is 16:00-19:00 UTC in January and
15:00-18:00 UTC in July. A window that spans a change of the clocks is an hour shorter
(spring) or longer (autumn), as the wall clock says; a wall time the spring change skips
counts as if the change had not happened yet. A capacity day stays a UTC day from the
epoch, so a day's peak time is whatever of the local windows falls within it, worked out
once per day.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta, tzinfo
from types import MappingProxyType
from zoneinfo import ZoneInfo

from smets1.clock import DAY_SECONDS, to_datetime

HOUR_SECONDS = 3_600.0
#: Where the DCC's peak hours are read: UK local time, daylight saving included.
PEAK_ZONE = "Europe/London"

_NOTHING: Mapping[int, int] = MappingProxyType({})


class Calendar:
    def __init__(
        self,
        epoch: float,
        capacity: int,
        peak_windows: list[tuple[float, float]],
        zone: str | tzinfo = PEAK_ZONE,
    ) -> None:
        self.epoch = epoch
        self.capacity = capacity
        #: Peak windows in seconds into the local day (wall clock), merged and sorted.
        self.peaks = _merge([(a * HOUR_SECONDS, b * HOUR_SECONDS) for a, b in peak_windows])
        self.zone = ZoneInfo(zone) if isinstance(zone, str) else zone
        # Day → its peak intervals (absolute times, within the day), worked out once.
        self._peak_times: dict[int, tuple[tuple[float, float], ...]] = {}
        # Day → schedule id → devices. A count that falls to zero keeps its entry: the
        # fair-share claim breaks ties between equal holders on the order they came in.
        self._reserved: dict[int, Counter[int]] = {}
        # Day → User → unscheduled large requests planned on it.
        self._unscheduled: dict[int, Counter[int]] = {}
        self._released: Counter[int] = Counter()
        # Day → User → large 11.3s released (the dashboard's and /metrics' per-User figure).
        self._released_by_user: dict[int, Counter[int]] = {}

    # -- days ------------------------------------------------------------------------

    def day_of(self, t: float) -> int:
        return math.floor((t - self.epoch) / DAY_SECONDS)

    def day_start(self, day: int) -> float:
        return self.epoch + day * DAY_SECONDS

    def date_of(self, day: int | None) -> str | None:
        """The ISO date of a day index (None stays None)."""
        if day is None:
            return None
        return to_datetime(self.day_start(day)).date().isoformat()

    def days(self) -> list[int]:
        """Days on which anything is reserved, booked or released, in order."""
        return sorted({*self._reserved, *self._unscheduled, *self._released})

    # -- writing: only through these -------------------------------------------------

    def book(self, day: int, user: int, n: int = 1) -> None:
        """Plan `n` of the User's unscheduled large requests on `day`."""
        self._unscheduled.setdefault(day, Counter())[user] += n

    def unbook(self, day: int, user: int, n: int = 1) -> None:
        self._unscheduled.setdefault(day, Counter())[user] -= n

    def move_booking(self, user: int, day: int, new_day: int) -> None:
        """One of the User's unscheduled requests leaves `day` for `new_day`."""
        self.unbook(day, user)
        self.book(new_day, user)

    def reserve(self, day: int, schedule_id: int, n: int) -> None:
        """Hold `n` releases on `day` for a batch of an agreed schedule."""
        self._reserved.setdefault(day, Counter())[schedule_id] += n

    def move_reservation(self, schedule_id: int, day: int, new_day: int, n: int) -> None:
        self._reserved.setdefault(day, Counter())[schedule_id] -= n
        self.reserve(new_day, schedule_id, n)

    def record_release(self, day: int, user: int) -> None:
        """A large 11.3 of `user` went out to the DCO on `day`."""
        self._released[day] += 1
        self._released_by_user.setdefault(day, Counter())[user] += 1

    # -- reading ---------------------------------------------------------------------

    def released_on(self, day: int) -> int:
        return self._released[day]

    def released_by_user(self, day: int) -> Mapping[int, int]:
        """User → large 11.3s released on `day` (read only)."""
        released = self._released_by_user.get(day)
        return _NOTHING if released is None else MappingProxyType(released)

    def released_per_day(self) -> dict[int, int]:
        """Day → large 11.3s released, for days with any, in day order."""
        return {d: n for d, n in sorted(self._released.items()) if n}

    def reservations(self, day: int) -> Mapping[int, int]:
        """Schedule id → devices its batch holds on `day` (read only)."""
        held = self._reserved.get(day)
        return _NOTHING if held is None else MappingProxyType(held)

    def bookings(self, day: int) -> Mapping[int, int]:
        """User → unscheduled large requests planned on `day` (read only)."""
        booked = self._unscheduled.get(day)
        return _NOTHING if booked is None else MappingProxyType(booked)

    # These three run for every request placed: they read the counters directly.

    def scheduled_on(self, day: int) -> int:
        held = self._reserved.get(day)
        return 0 if held is None else sum(held.values())

    def unscheduled_on(self, day: int) -> int:
        booked = self._unscheduled.get(day)
        return 0 if booked is None else sum(booked.values())

    def user_unscheduled(self, day: int, user: int) -> int:
        booked = self._unscheduled.get(day)
        return 0 if booked is None else booked[user]

    def committed(self, day: int) -> int:
        return self.scheduled_on(day) + self.unscheduled_on(day)

    def free(self, day: int) -> int:
        return max(0, self.capacity - self.committed(day))

    # -- peak windows ----------------------------------------------------------------

    def peak_times(self, day: int) -> tuple[tuple[float, float], ...]:
        """The peak intervals of `day` as absolute [start, end) times within it, sorted
        (a window that runs past midnight ends the day and starts the next)."""
        cached = self._peak_times.get(day)
        if cached is not None:
            return cached
        start = self.day_start(day)
        end = start + DAY_SECONDS
        spans: list[tuple[float, float]] = []
        if self.peaks:
            first = datetime.fromtimestamp(start, UTC).astimezone(self.zone).date()
            last = datetime.fromtimestamp(end, UTC).astimezone(self.zone).date()
            local = first - timedelta(days=1)
            while local <= last:
                for a, b in self.peaks:
                    lo = max(start, self._wall(local, a))
                    hi = min(end, self._wall(local, b))
                    if lo < hi:
                        spans.append((lo, hi))
                local += timedelta(days=1)
        out = tuple(_merge(spans))
        if len(self._peak_times) > 4_096:  # bounded: a long run reads each day once
            self._peak_times.clear()
        self._peak_times[day] = out
        return out

    def _wall(self, local: date, seconds: float) -> float:
        """The absolute time at which the local wall clock reads `seconds` into `local`."""
        midnight = datetime(local.year, local.month, local.day, tzinfo=self.zone)
        # Aware + timedelta is wall-clock arithmetic; timestamp() applies that wall
        # time's own offset (GMT or BST).
        return (midnight + timedelta(seconds=seconds)).timestamp()

    def peak_end(self, t: float) -> float | None:
        """If `t` falls in a peak window, the time it ends; else None."""
        for a, b in self.peak_times(self.day_of(t)):
            if a <= t < b:
                return b
        return None

    def offpeak_left(self, t: float) -> float:
        """Off-peak seconds from `t` to the end of its day."""
        day = self.day_of(t)
        left = self.day_start(day) + DAY_SECONDS - t
        for a, b in self.peak_times(day):
            left -= max(0.0, b - max(a, t))
        return max(0.0, left)

    def offpeak_seconds(self, day: int) -> float:
        """Off-peak seconds in `day` (a local window can cross a change of the clocks)."""
        return DAY_SECONDS - sum(b - a for a, b in self.peak_times(day))


def _merge(windows: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(windows):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
