"""Security moves: security work really goes first (MP230: "security updates might
require precedence").

A security fix is placed on the first day of its admission window that can take it, the
day of submission first: a day with free capacity takes it as routine work would; a full
day takes it in place of routine work still waiting for that day, so the fix never waits
for tomorrow's free capacity while today's routine work goes out. The routine request it
displaces is the latest unscheduled one waiting for that day, moved to the earliest later
day with room (within its User's daily allowance); failing that, one device of an agreed
schedule's batch, moved to the next day with room. Either way its User is told
(`moved` or `schedule_moved`). The moved request leaves the release queue and goes back in
on its new day; the fix joins the day's security queue, released before any routine work
still due (release_queue.py), so it goes out today within the day's capacity.

Work already released cannot be displaced: if none of the day's work still waits, the fix
tries the next day. The User's unscheduled daily allowance applies to security fixes too
(past it, the fix is held for a schedule like any other request).
"""

from __future__ import annotations

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

    def place(self, user: int, first_day: int) -> Decision:
        """Decide one unscheduled security fix; a PLANNED decision is booked on the
        calendar (and any routine request it displaced has moved)."""
        cal, limits = self.calendar, self.limits
        for day in range(first_day, first_day + limits.admission_days):
            if cal.user_unscheduled(day, user) >= limits.user_daily_limit:
                return Decision(Placement.HELD, day)
            if cal.free(day) > 0:
                cal.book(day, user)
                return Decision(Placement.PLANNED, day)
            if self._displace(user, day):
                return Decision(Placement.PLANNED, day)
        last = first_day + limits.admission_days
        return Decision(Placement.REFUSED, earliest_day(cal, limits, user, last))

    def _displace(self, user: int, day: int) -> bool:
        """Book the fix on the full `day` in place of routine work waiting for it: routine
        unscheduled work first, then (telling its owner) one device of an agreed
        schedule. False if nothing of that day is left to move."""
        for scheduled in (False, True):
            victim = self._latest_waiting(day, scheduled)
            if victim is None:
                continue
            new_day = self._move_target(victim, day)
            if new_day is None:
                continue
            self._move_request(victim, day, new_day, reason="a security fix took its place")
            self.calendar.book(day, user)
            return True
        return False

    def _latest_waiting(self, day: int, scheduled: bool) -> ActivationRequest | None:
        """The latest submitted routine request still waiting for `day`, of an agreed
        schedule's batch or not."""
        for r in reversed(self.queue.routine_on(day)):
            if (
                r.priority is Priority.ROUTINE
                and r.state is RequestState.WAITING
                and (r.schedule_id is not None) is scheduled
            ):
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
