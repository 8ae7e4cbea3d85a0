"""The release queue: accepted work waiting to be released, in the order it goes out.

Large requests planned on a day not yet opened wait in that day's bucket, in submission
order. When the release loop opens a day (release.py), its bucket becomes due: security
fixes in a queue of their own, released first; routine work in one queue per User, taken
round robin across Users and first come, first served within a User. Small images are
due at once.

Intake, schedules and security moves put requests in (`enqueue`) and take waiting ones
out again (`dequeue`) when they are cancelled or moved; they `wake` the release loop
when they are done. Only the release loop takes work off (`open_days`, `pick`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from scheduler.requests import ActivationRequest, Priority


class ReleaseQueue:
    def __init__(self) -> None:
        # Large requests planned on a day not yet opened, by day, in submission order.
        self._future: dict[int, list[ActivationRequest]] = {}
        self._opened_through: int | None = None
        # Opened (due) work: security first, then round robin across Users.
        self._due_security: deque[ActivationRequest] = deque()
        self._due: dict[int, deque[ActivationRequest]] = {}
        self._rr: deque[int] = deque()
        self._wakeup = asyncio.Event()

    # -- putting work in and taking it back --------------------------------------------

    def enqueue(self, req: ActivationRequest) -> None:
        day = req.planned_day or 0
        if not req.large:
            self._push_due(req)
        elif self._opened_through is None or day > self._opened_through:
            self._future.setdefault(day, []).append(req)
        else:
            self._push_due(req)

    def _push_due(self, req: ActivationRequest) -> None:
        if req.priority is Priority.SECURITY:
            self._due_security.append(req)
            return
        q = self._due.get(req.user)
        if q is None:
            q = self._due[req.user] = deque()
        if not q:
            self._rr.append(req.user)
        q.append(req)

    def dequeue(self, req: ActivationRequest) -> None:
        bucket = self._future.get(req.planned_day or 0)
        if bucket is not None and req in bucket:
            bucket.remove(req)
            return
        if req in self._due_security:
            self._due_security.remove(req)
            return
        q = self._due.get(req.user)
        if q is not None and req in q:
            q.remove(req)
            if not q and req.user in self._rr:
                # An emptied queue leaves the round, or its User would get two turns later.
                self._rr.remove(req.user)

    # -- what is waiting on a day ------------------------------------------------------

    def routine_on(self, day: int) -> list[ActivationRequest]:
        """Waiting work planned on `day`, oldest first, leaving out due security fixes
        (the pool a security fix takes its place from)."""
        pool: list[ActivationRequest] = list(self._future.get(day, []))
        if self._opened_through is not None and day <= self._opened_through:
            for q in self._due.values():
                pool.extend(r for r in q if r.planned_day == day)
        return pool

    def attached_to(self, schedule_id: int, day: int) -> list[ActivationRequest]:
        """Waiting requests of the schedule's batch on `day`."""
        return [
            r
            for r in [*self._future.get(day, []), *self._due_pool()]
            if r.schedule_id == schedule_id and r.planned_day == day
        ]

    def _due_pool(self) -> list[ActivationRequest]:
        out = list(self._due_security)
        for q in self._due.values():
            out.extend(q)
        return out

    # -- the release loop's side -------------------------------------------------------

    def open_days(self, today: int) -> None:
        """Make the work of every day up to `today` due."""
        for day in sorted(d for d in self._future if d <= today):
            for req in self._future.pop(day):
                self._push_due(req)
        self._opened_through = today

    def due_count(self) -> int:
        return len(self._due_security) + sum(len(q) for q in self._due.values())

    def next_day(self) -> int | None:
        """The first day with work not yet opened."""
        return min(self._future, default=None)

    def due_users(self) -> list[int]:
        """Users with routine work due, in the round's order."""
        return list(self._rr)

    def pick(self, allowed: Callable[[int], bool] | None = None) -> ActivationRequest | None:
        """The next due request: security first, then the next User in the round (with
        `allowed`, the next User in the round it allows; None if it allows none)."""
        if self._due_security:
            return self._due_security.popleft()
        # Each turn either hands out a request or drops a User with nothing due, so one
        # turn a User in the round is enough (more only revisits Users `allowed` refused).
        turns = len(self._rr)
        while self._rr and turns > 0:
            turns -= 1
            user = self._rr[0]
            self._rr.rotate(-1)
            q = self._due.get(user)
            if not q:
                self._rr.pop()
                continue
            if allowed is not None and not allowed(user):
                continue
            req = q.popleft()
            if not q:
                # The rotation put this User last: it leaves the round from there.
                self._rr.pop()
            return req
        return None

    # -- waking the release loop -------------------------------------------------------

    def wake(self) -> None:
        """New or moved work: the release loop looks again."""
        self._wakeup.set()

    def rearm(self) -> None:
        self._wakeup.clear()

    def woken(self) -> Coroutine[Any, Any, bool]:
        """A wait for the next `wake` (to race against a timer)."""
        return self._wakeup.wait()
