"""Security moves: a security fix that finds no room takes the place of routine work.

On the first day of the admission window that has any, the latest routine unscheduled
request waiting for that day is moved to its next day with room (within its User's daily
allowance); failing that, one device of an agreed schedule's batch is moved (its owner
told). The fix is booked on the day that was freed. The moved request leaves the release
queue and goes back in on its new day.
"""

from __future__ import annotations

from collections.abc import Callable

from scheduler.calendar import Calendar
from scheduler.notify import Notifier
from scheduler.policy import Decision, Limits, Placement, earliest_day
from scheduler.release_queue import ReleaseQueue
from scheduler.requests import ActivationRequest, Priority, RequestState
from scheduler.schedules import Schedules
from scheduler.store import Store


class SecurityMoves:
    def __init__(
        self,
        *,
        limits: Limits,
        calendar: Calendar,
        store: Store,
        notifier: Notifier,
        queue: ReleaseQueue,
        schedules: Schedules,
    ) -> None:
        self.limits = limits
        self.calendar = calendar
        self.store = store
        self.notifier = notifier
        self.queue = queue
        self.schedules = schedules

    def make_room(self, user: int, first_day: int) -> Decision:
        """A security fix with no room: move routine unscheduled work, then (telling its
        owner) one device of an agreed schedule, off the first day that has any."""
        for day in range(first_day, first_day + self.limits.admission_days):
            victim = self._latest_open(day, lambda r: r.schedule_id is None)
            if victim is None:
                victim = self._latest_open(day, lambda r: r.schedule_id is not None)
            if victim is None:
                continue
            new_day = self._move_target(victim, day)
            if new_day is None:
                continue
            self._move_request(victim, day, new_day, reason="a security fix took its place")
            self.calendar.book(day, user)
            return Decision(Placement.PLANNED, day)
        return Decision(Placement.REFUSED, None)

    def _latest_open(
        self, day: int, pred: Callable[[ActivationRequest], bool]
    ) -> ActivationRequest | None:
        for r in reversed(self.queue.routine_on(day)):
            if r.priority is Priority.ROUTINE and r.state is RequestState.WAITING and pred(r):
                return r
        return None

    def _move_target(self, req: ActivationRequest, day: int) -> int | None:
        """The next day after `day` with room for `req`: for unscheduled work also within
        its User's daily allowance (None: none within the horizon)."""
        if req.schedule_id is None:
            return earliest_day(self.calendar, self.limits, req.user, day + 1)
        new_day = day + 1
        while self.calendar.free(new_day) <= 0:
            new_day += 1
        return new_day

    def _move_request(self, req: ActivationRequest, day: int, new_day: int, reason: str) -> None:
        """Take a waiting request off `day` and plan it on `new_day` (`_move_target`)."""
        self.queue.dequeue(req)
        if req.schedule_id is None:
            self.calendar.move_booking(req.user, day, new_day)
        else:
            self.schedules.move_device(req.schedule_id, day, new_day)
        req.planned_day = new_day
        self.store.save_request(req)
        self.queue.enqueue(req)
        self.notifier.post(
            req.user,
            "schedule_moved" if req.schedule_id is not None else "moved",
            {
                "request_id": req.request_id,
                "schedule_id": req.schedule_id,
                "from_date": self.calendar.date_of(day),
                "to_date": self.calendar.date_of(new_day),
                "reason": reason,
            },
        )
