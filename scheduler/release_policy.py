"""The release policy the scheduler runs under (config: smets1.config_policy).

Every MP230 decision is taken in one of two places, and each asks this object first:

* at submission (intake.py): where an unscheduled large request goes. MP230: policy.py
  (`place_unscheduled`: planned, held for a schedule, or refused); the other kinds plan
  it on the day it is submitted, and nothing is held or refused;
* at release (release.py): how much goes out and when. MP230 and equal_share: at most
  the day's capacity, paced across the off-peak hours; equal_share also stops a User at
  its share of the day; no_limit: everything due, at once, peak hours too.

`smets1 run` asks whether a campaign's agreed schedule is to be requested
(`asks_for_schedules`): only under MP230.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from smets1.config_dcc import SchedulerConfig
from smets1.config_policy import EqualSharePolicy, PolicyKind


@dataclass(frozen=True, slots=True)
class ReleasePolicy:
    kind: PolicyKind
    #: equal_share: divide the day's capacity by this many Users (None: count them).
    share_users: int | None = None

    @classmethod
    def from_config(cls, cfg: SchedulerConfig) -> ReleasePolicy:
        policy = cfg.policy
        users = policy.users if isinstance(policy, EqualSharePolicy) else None
        return cls(PolicyKind(policy.kind), users)

    @property
    def mp230(self) -> bool:
        """MP230's admission: the User's daily allowance, holds, refusals, schedules."""
        return self.kind is PolicyKind.MP230

    @property
    def asks_for_schedules(self) -> bool:
        return self.kind is PolicyKind.MP230

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


#: The default: today's behaviour.
MP230 = ReleasePolicy(PolicyKind.MP230)
