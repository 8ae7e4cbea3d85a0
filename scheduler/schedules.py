"""Agreed delivery schedules: proposals, agreement, batches, and requests attached to them.

It holds every schedule by id and how many devices are attached to each of its daily
batches so far. A proposal (policy.propose) holds nothing; agreeing it reserves its
batches on the calendar, moves the excess of other Users' schedules off days where the
new User claims a fair share (telling their owners), and takes on the User's HELD
requests from the request book.

Intake attaches new requests to a batch (`batch_day`, `assign`) and detaches cancelled
ones (`detach`); security moves shift one device to a later day (`move_device`). Moved
or attached requests go back into the release queue.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from scheduler.book import RequestBook
from scheduler.calendar import Calendar
from scheduler.errors import BadDocument, Forbidden, NotFound, ScheduleConflict
from scheduler.notify import Notifier
from scheduler.policy import Limits, Proposal, propose
from scheduler.release_queue import ReleaseQueue
from scheduler.requests import RequestState, Schedule, ScheduleState
from scheduler.store import Store
from scheduler.users import check_user, may_act_for
from smets1.clock import Clock
from smets1.config_dcc import UserConfig
from smets1.eui64 import format_eui64 as _eui

#: The most devices one schedule may hold, and the largest daily batch a User may ask for.
MAX_SCHEDULE_DEVICES = 1_000_000


class Schedules:
    def __init__(
        self,
        *,
        clock: Clock,
        limits: Limits,
        calendar: Calendar,
        store: Store,
        notifier: Notifier,
        users: Mapping[int, UserConfig],
        book: RequestBook,
        queue: ReleaseQueue,
    ) -> None:
        self.clock = clock
        self.limits = limits
        self.calendar = calendar
        self.store = store
        self.notifier = notifier
        self.users = users
        self.book = book
        self.queue = queue
        self.schedules: dict[int, Schedule] = {}
        #: (schedule, day) → devices attached to that batch so far.
        self._batch_fill: Counter[tuple[int, int]] = Counter()

    # -- restart ---------------------------------------------------------------------

    def restore(self, s: Schedule) -> None:
        """A schedule loaded from the store; an agreed one holds its batches again."""
        self.schedules[s.schedule_id] = s
        if s.state is ScheduleState.AGREED:
            for day, n in s.batches.items():
                self.calendar.reserve(day, s.schedule_id, n)

    def restore_attached(self, schedule_id: int, day: int) -> None:
        """A loaded request that counts against the schedule's batch on `day`."""
        self._batch_fill[(schedule_id, day)] += 1

    # -- looking up ------------------------------------------------------------------

    def for_actor(self, actor: int, schedule_id: int) -> Schedule:
        """The schedule, if `actor` may see it (another User's is simply not found)."""
        s = self.schedules.get(schedule_id)
        if s is None:
            raise NotFound(f"no schedule {schedule_id}")
        try:
            may_act_for(self.users, actor, s.user)
        except Forbidden:
            raise NotFound(f"no schedule {schedule_id}") from None
        return s

    def of_user(self, user: int) -> list[Schedule]:
        return [s for s in self.schedules.values() if s.user == user]

    def _owners(self) -> dict[int, int]:
        return {
            s.schedule_id: s.user
            for s in self.schedules.values()
            if s.state is ScheduleState.AGREED
        }

    # -- proposing and agreeing ------------------------------------------------------

    def request(
        self,
        actor: int,
        devices: int,
        *,
        user: int | None = None,
        start_day: int | None = None,
        max_per_day: int | None = None,
    ) -> tuple[Schedule, Proposal]:
        """Propose the earliest daily batches for `devices` (the Service Desk may act for
        another User). Nothing is held until the User accepts."""
        owner = actor if user is None else user
        check_user(self.users, actor)
        check_user(self.users, owner)
        may_act_for(self.users, actor, owner)
        if not 1 <= devices <= MAX_SCHEDULE_DEVICES:
            raise BadDocument("devices", f"expected 1 to {MAX_SCHEDULE_DEVICES}, got {devices}")
        if max_per_day is not None and not 1 <= max_per_day <= MAX_SCHEDULE_DEVICES:
            raise BadDocument(
                "max_per_day", f"expected 1 to {MAX_SCHEDULE_DEVICES}, got {max_per_day}"
            )
        today = self.calendar.day_of(self.clock.now())
        last = today + self.limits.horizon_days - 1
        if start_day is not None and start_day > last:
            raise BadDocument(
                "start_date",
                f"expected a date up to {self.calendar.date_of(last)} (the "
                f"{self.limits.horizon_days}-day horizon), got a later one",
            )
        start = today if start_day is None else max(today, start_day)
        proposal = propose(
            self.calendar, self.limits, owner, devices, start, max_per_day, self._owners()
        )
        s = Schedule(
            0,  # the store gives the id
            owner,
            devices,
            self.clock.now(),
            batches=dict(proposal.batches),
            max_per_day=max_per_day,
            start_day=start,
        )
        # Written first: a write that fails leaves nothing behind in memory.
        s.schedule_id = self.store.add_schedule(s)
        self.schedules[s.schedule_id] = s
        return s, proposal

    def accept(self, actor: int, schedule_id: int) -> Schedule:
        """Agree a proposal: its batches hold capacity; schedules it moves are told."""
        s = self.for_actor(actor, schedule_id)
        if s.state is not ScheduleState.PROPOSED:
            raise ScheduleConflict(f"schedule {schedule_id} is {s.state.value}, not proposed")
        today = self.calendar.day_of(self.clock.now())
        proposal = propose(
            self.calendar,
            self.limits,
            s.user,
            s.devices,
            max(today, s.start_day),
            s.max_per_day,
            self._owners(),
        )
        if proposal.batches != s.batches:
            batches = dict(proposal.batches)
            self.store.save_schedule(replace(s, batches=batches))
            s.batches = batches
            raise ScheduleConflict(
                f"capacity changed since schedule {schedule_id} was proposed; it now proposes "
                f"{self._batches_text(s.batches)}: accept again to agree it"
            )
        # Written first: memory (state, calendar) changes only once the write succeeded.
        self.store.save_schedule(replace(s, state=ScheduleState.AGREED))
        for day, n in s.batches.items():
            self.calendar.reserve(day, s.schedule_id, n)
        s.state = ScheduleState.AGREED
        for move in proposal.moves:
            self._apply_move(move.schedule_id, move.day, move.count, s)
        self._attach_held(s)
        self.queue.wake()
        return s

    def _apply_move(self, schedule_id: int, day: int, count: int, by: Schedule) -> None:
        moved = self.schedules[schedule_id]
        before = dict(moved.batches)
        left = count
        # The earliest later days with room, filled up: starting after the schedule's last
        # batch instead would put each moved day's excess on a day of its own, half empty.
        new_day = day + 1
        targets: list[tuple[int, int]] = []
        while left > 0:
            n = min(left, self.calendar.free(new_day))
            if n > 0:
                self._shift_batch(moved, day, new_day, n)
                targets.append((new_day, n))
                left -= n
            new_day += 1
        moved.moves += 1
        # Devices already attached to the moved part of the batch follow it.
        attached = self.queue.attached_to(schedule_id, day)
        fill_moved = max(0, self._batch_fill[(schedule_id, day)] - moved.batches.get(day, 0))
        for target_day, n in targets:
            for _ in range(n):
                if fill_moved <= 0 or not attached:
                    break
                req = attached.pop()
                self.queue.dequeue(req)
                req.planned_day = target_day
                self._batch_fill[(schedule_id, day)] -= 1
                self._batch_fill[(schedule_id, target_day)] += 1
                self.store.save_request(req)
                self.queue.enqueue(req)
                fill_moved -= 1
        self.store.save_schedule(moved)
        self.notifier.post(
            moved.user,
            "schedule_moved",
            {
                "schedule_id": schedule_id,
                "reason": f"User {_eui(by.user)}'s schedule {by.schedule_id} needed a fair "
                f"share of {self.calendar.date_of(day)}",
                "before": self._batches_json(before),
                "after": self._batches_json(moved.batches),
            },
        )

    def _attach_held(self, s: Schedule) -> None:
        held = self.book.held_of(s.user)
        today = self.calendar.day_of(self.clock.now())
        changed = []
        for req in held[: s.devices - s.assigned]:
            self.book.set_state(req, RequestState.WAITING)
            req.held_day = None
            req.schedule_id = s.schedule_id
            req.planned_day = self.batch_day(s, today)
            s.assigned += 1
            self.book.activate()
            self.queue.enqueue(req)
            changed.append(req)
        if changed:
            self.store.save_requests(changed)
            self.store.save_schedule(s)

    # -- requests in batches ---------------------------------------------------------

    def batch_day(self, schedule: Schedule, today: int) -> int:
        """The earliest batch of `schedule` from `today` with room for one more device."""
        for day in sorted(schedule.batches):
            if (
                day >= today
                and self._batch_fill[(schedule.schedule_id, day)] < (schedule.batches[day])
            ):
                self._batch_fill[(schedule.schedule_id, day)] += 1
                return day
        # Only batches in the past went unused: move one device of one of them to the
        # first day from today with free capacity, as a move of the schedule would.
        day = today
        while self.calendar.free(day) <= 0:
            day += 1
        sid = schedule.schedule_id
        unused = next(
            (
                d
                for d in sorted(schedule.batches)
                if self._batch_fill[(sid, d)] < schedule.batches[d]
            ),
            None,
        )
        if unused is not None:
            self._shift_batch(schedule, unused, day, 1)
        else:  # every batch is full: the schedule grows by one device
            schedule.batches[day] = schedule.batches.get(day, 0) + 1
            self.calendar.reserve(day, sid, 1)
        self.store.save_schedule(schedule)
        self._batch_fill[(sid, day)] += 1
        return day

    def assign(self, schedule: Schedule, devices: int) -> None:
        """`devices` newly submitted requests now point at the schedule."""
        schedule.assigned += devices
        self.store.save_schedule(schedule)

    def detach(self, schedule_id: int, day: int) -> None:
        """A waiting request of the batch on `day` was cancelled: its place is free."""
        self._batch_fill[(schedule_id, day)] -= 1
        self.schedules[schedule_id].assigned -= 1
        self.store.save_schedule(self.schedules[schedule_id])

    def move_device(self, schedule_id: int, day: int, new_day: int) -> None:
        """One attached device leaves the batch on `day` for `new_day` (a security fix
        took its place)."""
        s = self.schedules[schedule_id]
        self._shift_batch(s, day, new_day, 1)
        self._batch_fill[(s.schedule_id, day)] -= 1
        self._batch_fill[(s.schedule_id, new_day)] += 1
        s.moves += 1
        self.store.save_schedule(s)

    def _shift_batch(self, s: Schedule, day: int, new_day: int, n: int) -> None:
        s.batches[day] -= n
        if s.batches[day] == 0:
            del s.batches[day]
        s.batches[new_day] = s.batches.get(new_day, 0) + n
        self.calendar.move_reservation(s.schedule_id, day, new_day, n)

    def _batches_text(self, batches: dict[int, int]) -> str:
        return ", ".join(f"{self.calendar.date_of(d)}: {n}" for d, n in sorted(batches.items()))

    def _batches_json(self, batches: dict[int, int]) -> list[dict[str, Any]]:
        return [
            {"date": self.calendar.date_of(d), "devices": n} for d, n in sorted(batches.items())
        ]
