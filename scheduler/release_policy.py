"""The release policy the scheduler runs under (config: smets1.config_policy).

Every MP230 decision is taken in one of two places, and each asks this object first:

* at submission (intake.py): where an unscheduled large request goes. MP230: policy.py
  (`place_unscheduled`: planned, held for a schedule, or refused); the other kinds plan
  it on the day it is submitted, and nothing is held or refused;
* at release (release.py): how much goes out and when. MP230 and equal_share: at most
  the day's capacity, paced across the off-peak hours; equal_share also stops a User at
  its share of the day; no_limit: everything due, at once, peak hours too;
  spare_capacity: MP230's admission, and at release each hour of the day (local time)
  holds at most its own budget (`hour_budgets`), paced across that hour.

spare_capacity's budgets: the background's daily profile (`background.hourly_weights`,
24 weights from local midnight) says how busy each hour is. An hour's room is what the
network could carry, if the busiest hour left `headroom` of it spare, less that hour's
background: `busiest / (1 - headroom) - weight` (with `headroom` 1: the same for every
hour). The day's capacity is shared among the hours in proportion to their rooms (whole
numbers, largest remainders first, summing to the capacity); an hour any part of which is
in a peak window gets none. Only the weights' proportions count: the day's total is the
capacity whatever the request rates, and the policy moves large images between the hours
of the day, it does not release fewer. An hour's unused budget is not carried to the
next (a burst into a busy hour is what the policy is there to avoid).

`smets1 run` asks whether a campaign's agreed schedule is to be requested
(`asks_for_schedules`): under MP230 and spare_capacity.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo

from smets1.config_dcc import SchedulerConfig
from smets1.config_policy import EqualSharePolicy, PolicyKind, SpareCapacityPolicy

HOURS_A_DAY = 24
HOUR_SECONDS = 3_600.0


@dataclass(frozen=True, slots=True)
class ReleasePolicy:
    kind: PolicyKind
    #: equal_share: divide the day's capacity by this many Users (None: count them).
    share_users: int | None = None
    #: spare_capacity: large images each local hour (00:00 first) may take; they sum to
    #: the day's capacity.
    hour_budgets: tuple[int, ...] | None = None
    #: spare_capacity: where the hours are read (`scheduler.peak_timezone`).
    zone: tzinfo | None = None

    @classmethod
    def from_config(
        cls, cfg: SchedulerConfig, hourly_weights: Sequence[float] | None = None
    ) -> ReleasePolicy:
        """The policy of a scheduler config. `hourly_weights`: the background's daily
        profile (`background.hourly_weights`), which spare_capacity's budgets follow;
        without one (a scheduler built without the fleet config: image plans and trials)
        every hour counts as equally busy."""
        policy = cfg.policy
        kind = PolicyKind(policy.kind)
        if isinstance(policy, EqualSharePolicy):
            return cls(kind, policy.users)
        if isinstance(policy, SpareCapacityPolicy):
            closed = peak_hours([(w.start_hour, w.end_hour) for w in cfg.peak_windows])
            budgets = hour_budgets(
                cfg.large_images_per_day,
                hourly_weights or (1.0,) * HOURS_A_DAY,
                policy.headroom,
                closed,
            )
            return cls(kind, hour_budgets=budgets, zone=ZoneInfo(cfg.peak_timezone))
        return cls(kind)

    @property
    def mp230_admission(self) -> bool:
        """MP230's admission: the User's daily allowance, holds, refusals, schedules
        (mp230 and spare_capacity)."""
        return self.kind in (PolicyKind.MP230, PolicyKind.SPARE_CAPACITY)

    @property
    def asks_for_schedules(self) -> bool:
        return self.mp230_admission

    @property
    def hourly(self) -> bool:
        """spare_capacity: each hour of the day held to its own budget."""
        return self.hour_budgets is not None

    def hour_slot(self, t: float) -> tuple[float, float, int]:
        """spare_capacity: the local hour `t` falls in: its start, its end and its
        budget."""
        assert self.hour_budgets is not None and self.zone is not None
        local = datetime.fromtimestamp(t, self.zone)
        # Whole hours of the wall clock: the UK's clocks change on the hour (a repeated
        # hour in autumn is two slots, each with the hour's budget).
        start = local.replace(minute=0, second=0, microsecond=0).timestamp()
        return start, start + HOUR_SECONDS, self.hour_budgets[local.hour]

    @property
    def paced(self) -> bool:
        """Held to the day's capacity, spread over its off-peak hours (not no_limit)."""
        return self.kind is not PolicyKind.NO_LIMIT

    @property
    def shared(self) -> bool:
        return self.kind is PolicyKind.EQUAL_SHARE

    def share(self, capacity: int, users_with_work: int) -> int:
        """equal_share: what each User may have released in a day."""
        n = self.share_users or max(1, users_with_work)
        return capacity // n

    def below_share(
        self, capacity: int, released: Mapping[int, int], waiting: Iterable[int]
    ) -> Callable[[int], bool]:
        """equal_share: whether a User may have one more released today, given what each
        User has had released today and the Users with work waiting."""
        users = {u for u, n in released.items() if n > 0}
        users.update(waiting)
        share = self.share(capacity, len(users))
        return lambda user: released.get(user, 0) < share


def peak_hours(windows: Iterable[tuple[float, float]]) -> frozenset[int]:
    """The hours of the day (0-23) any part of which a peak window [start, end) covers."""
    return frozenset(h for h in range(HOURS_A_DAY) for a, b in windows if a < h + 1 and b > h)


def hour_budgets(
    capacity: int, weights: Sequence[float], headroom: float, closed: frozenset[int]
) -> tuple[int, ...]:
    """spare_capacity: the day's capacity shared among the hours in proportion to the
    room the background leaves in each (module docstring); none for `closed` hours.
    Whole numbers summing to `capacity` (largest remainders first, earlier hours first
    on a tie), or all 0 if every hour is closed."""
    busiest = max(weights)
    rooms = [
        0.0 if h in closed else (1.0 if headroom >= 1 else busiest / (1 - headroom) - w)
        for h, w in enumerate(weights)
    ]
    total = sum(rooms)
    if total <= 0:
        return (0,) * len(weights)
    exact = [capacity * r / total for r in rooms]
    budgets = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda h: (budgets[h] - exact[h], h))
    for h in by_remainder[: capacity - sum(budgets)]:
        budgets[h] += 1
    return tuple(budgets)


#: The default: today's behaviour.
MP230 = ReleasePolicy(PolicyKind.MP230)
