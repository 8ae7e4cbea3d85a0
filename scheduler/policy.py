"""The MP230 rules as decisions on a `Calendar`: where a request goes, what a schedule gets.

* Large: strictly over `large_image_threshold_bytes` (750,000 bytes is not large).
* Unscheduled large work is planned on its day if the day has capacity; a User with
  `user_daily_limit` unscheduled activations already on that day is held for a schedule;
  work that finds no capacity within the admission window is refused with the first day
  that would work. The window is what is left of the User's seven days once the
  five-day TRT is taken off: released any later, it could not be answered in time.
* A schedule proposal takes the earliest daily batches that fit the free capacity; where a
  day is held by other Users' schedules, the new User may claim its fair share of that day
  (capacity / number of Users with batches there), moving the excess of the others.

Fairness between Users' unscheduled work: a day's capacity is booked first come, first
served, because a booking is a promise (admission) that the request will meet its TRT;
taking it back to give another User a "fair share" would break that promise. What keeps
one User from starving the others is the daily allowance (at most `user_daily_limit` each,
so 24 Users fill a 12,000 day) and, within each day, the release order: security fixes
first, then round robin across Users, first come first served within a User
(release_queue.py).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from scheduler.calendar import Calendar
from scheduler.errors import AdmissionRefused
from scheduler.release_policy import MP230, ReleasePolicy
from smets1.clock import DAY_SECONDS
from smets1.config_dcc import SchedulerConfig


@dataclass(frozen=True, slots=True)
class Limits:
    capacity: int
    user_daily_limit: int
    large_threshold_bytes: int
    trt_seconds: float
    stale_after_seconds: float
    horizon_days: int
    #: Which rules apply (release_policy.py): MP230's below, or another kind's.
    policy: ReleasePolicy = MP230

    @classmethod
    def from_config(
        cls, cfg: SchedulerConfig, hourly_weights: Sequence[float] | None = None
    ) -> Limits:
        """`hourly_weights`: the background's daily profile, for spare_capacity
        (release_policy.py)."""
        return cls(
            cfg.large_images_per_day,
            cfg.user_daily_limit,
            cfg.large_image_threshold_bytes,
            cfg.trt_seconds,
            cfg.stale_after_seconds,
            cfg.schedule_horizon_days,
            ReleasePolicy.from_config(cfg, hourly_weights),
        )

    @property
    def admission_days(self) -> int:
        """Days (the day of submission first) on which unscheduled work may be released."""
        return max(1, math.floor((self.stale_after_seconds - self.trt_seconds) / DAY_SECONDS))

    def is_large(self, size_bytes: int) -> bool:
        return size_bytes > self.large_threshold_bytes


class Placement(enum.Enum):
    PLANNED = "planned"
    HELD = "held"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Decision:
    placement: Placement
    #: PLANNED: the day; HELD: the day the User's allowance is used up;
    #: REFUSED: the earliest day that would work (None: none found).
    day: int | None


def place_unscheduled(cal: Calendar, limits: Limits, user: int, first_day: int) -> Decision:
    """Decide one unscheduled large request; a PLANNED decision is booked on `cal`."""
    last = first_day + limits.admission_days
    for day in range(first_day, last):
        if cal.user_unscheduled(day, user) >= limits.user_daily_limit:
            return Decision(Placement.HELD, day)
        if cal.free(day) > 0:
            cal.book(day, user)
            return Decision(Placement.PLANNED, day)
    return Decision(Placement.REFUSED, earliest_day(cal, limits, user, last))


def earliest_day(cal: Calendar, limits: Limits, user: int, start: int) -> int | None:
    for day in range(start, start + limits.horizon_days):
        if cal.free(day) > 0 and cal.user_unscheduled(day, user) < limits.user_daily_limit:
            return day
    return None


@dataclass(frozen=True, slots=True)
class Move:
    """`count` devices of schedule `schedule_id` leave `day` for later days."""

    schedule_id: int
    day: int
    count: int


@dataclass(slots=True)
class Proposal:
    batches: dict[int, int] = field(default_factory=dict)
    moves: list[Move] = field(default_factory=list)


def propose(
    cal: Calendar,
    limits: Limits,
    user: int,
    devices: int,
    start_day: int,
    max_per_day: int | None,
    owners: dict[int, int],
) -> Proposal:
    """The earliest daily batches for `devices`; `owners` maps agreed schedule ids to Users."""
    out = Proposal()
    remaining = devices
    per_day = max_per_day or limits.capacity
    day = start_day
    while remaining > 0:
        if day - start_day >= limits.horizon_days:
            raise AdmissionRefused(
                f"no room for {devices} devices within {limits.horizon_days} days", None
            )
        want = min(remaining, per_day)
        take = min(want, cal.free(day))
        if take < want:
            take += _claim_fair_share(cal, user, day, want - take, take, owners, out)
        if take > 0:
            out.batches[day] = take
            remaining -= take
        day += 1
    return out


def _claim_fair_share(
    cal: Calendar,
    user: int,
    day: int,
    short: int,
    have: int,
    owners: dict[int, int],
    out: Proposal,
) -> int:
    held = cal.reservations(day)
    holders = {owners[s] for s, n in held.items() if n > 0 and s in owners}
    holders.discard(user)
    if not holders:
        return 0
    for_schedules = cal.capacity - cal.unscheduled_on(day)
    fair = for_schedules // (len(holders) + 1)
    need = min(short, fair - have)
    if need <= 0:
        return 0
    per_user: dict[int, int] = {}
    for s, n in held.items():
        if owners.get(s, user) != user:
            per_user[owners[s]] = per_user.get(owners[s], 0) + n
    gained = 0
    # Largest holders give first, and only what they hold above the fair share.
    for s, n in sorted(held.items(), key=lambda kv: -kv[1]):
        owner = owners.get(s, user)
        if owner == user or need <= 0:
            continue
        excess = min(n, per_user[owner] - fair)
        give = min(excess, need)
        if give > 0:
            out.moves.append(Move(s, day, give))
            per_user[owner] -= give
            need -= give
            gained += give
    return gained
