"""Releasing work to the DCO: the paced release loop, and each released 11.3 until its answer.

The loop opens each day's work in the release queue (release_queue.py) and releases it
one request at a time across the off-peak part of the day, never more large images in a
day than the calendar's capacity (under the release policy (release_policy.py)
`equal_share`, no User more than its share of the day; under `spare_capacity`, no hour
more than its budget, paced across the hour; under `no_limit`, everything due at once).
A released request is recorded (calendar, request book, store) and then runs as one
coroutine in the shared task set: 11.3 through the DCO, then 11.2 reads the version the
device runs. Its answer is stored, counted in the book and posted to its User.

Backpressure: with a DCO that can say it has no room (`ReleaseRoom`: over HTTP, a
worker turned an 11.3 away with 503), the loop holds its releases until it has, and
counts the holds; it does not release into tasks that would only wait. A small image,
released at submission, is not held.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol, runtime_checkable

from scheduler.book import RequestBook
from scheduler.calendar import Calendar
from scheduler.notify import Notifier
from scheduler.policy import Limits
from scheduler.release_policy import HOUR_SECONDS
from scheduler.release_queue import ReleaseQueue
from scheduler.requests import ActivationRequest, RequestState
from scheduler.store import Store
from scheduler.tasks import TaskSet
from smets1.clock import Clock
from smets1.codes import DeviceState, Reason
from smets1.eui64 import format_eui64 as _eui
from smets1.services import DcoApi

#: How far behind its pace the release loop may catch up after running late.
PACE_CATCH_UP_SECONDS = 3_600.0

log = logging.getLogger("scheduler.release")


@runtime_checkable
class ReleaseRoom(Protocol):
    """A DCO that can say it has no room for more 11.3s (orchestrator.dco_client: a
    worker turned one away with 503 and Retry-After). The release loop holds its
    releases while so, instead of piling up released requests that only wait."""

    def room_for_release(self) -> bool: ...

    async def wait_for_release_room(self) -> None: ...


class Releaser:
    def __init__(
        self,
        *,
        clock: Clock,
        dco: DcoApi,
        limits: Limits,
        calendar: Calendar,
        store: Store,
        notifier: Notifier,
        book: RequestBook,
        queue: ReleaseQueue,
        tasks: TaskSet,
    ) -> None:
        self.clock = clock
        self.dco = dco
        self.limits = limits
        self.calendar = calendar
        self.store = store
        self.notifier = notifier
        self.book = book
        self.queue = queue
        self.tasks = tasks
        #: DCO calls that raised instead of answering.
        self.dco_errors = 0
        #: Times the loop held its releases because the DCO had no room, and for how
        #: long in all (simulated seconds).
        self.releases_held = 0
        self.releases_held_seconds = 0.0
        self._room = dco if isinstance(dco, ReleaseRoom) else None
        # spare_capacity: the local hour being released in (its start) and how many large
        # 11.3s went out in it. Not kept across a restart: a scheduler restarted within
        # an hour may release up to that hour's budget again.
        self._hour_start: float | None = None
        self._hour_released = 0
        # Released before a restart: re-issued when the loop starts.
        self._resume: list[ActivationRequest] = []

    def resume_later(self, req: ActivationRequest) -> None:
        self._resume.append(req)

    def resume(self) -> None:
        for req in self._resume:
            self._spawn(req)
        self._resume.clear()

    async def _wait(self, until: float | None) -> None:
        if until is None:
            await self.queue.woken()
            return
        try:
            await self.clock.timeout(until - self.clock.now(), self.queue.woken())
        except TimeoutError:
            pass

    async def run(self) -> None:
        """The release loop, until cancelled."""
        cal = self.calendar
        cap = self.limits.capacity
        policy = self.limits.policy
        queue = self.queue
        # When the next release is due. Paced from the last due time, not from when the
        # loop woke, so a process that runs late on a scaled clock catches up (within
        # PACE_CATCH_UP_SECONDS) instead of spilling the day's releases into the next.
        pace_at: float | None = None
        while True:
            queue.rearm()
            now = self.clock.now()
            today = cal.day_of(now)
            queue.open_days(today)
            if not queue.due_count():
                pace_at = None
                nxt = queue.next_day()
                await self._wait(None if nxt is None else cal.day_start(nxt))
                continue
            if not policy.paced:
                # no_limit: every due request goes now, peak hours and capacity aside.
                await self._release_all()
                continue
            peak_end = cal.peak_end(now)
            if peak_end is not None:
                pace_at = None
                await self.clock.sleep_until(peak_end)
                continue
            if cal.released_on(today) >= cap:
                pace_at = None
                await self.clock.sleep_until(cal.day_start(today + 1))
                continue
            if self._room is not None and not self._room.room_for_release():
                # Paced afresh after a hold: no catch-up burst into a DCO just freed.
                pace_at = None
                await self._hold(self._room)
                continue
            hour_end, hour_budget = 0.0, 0
            if policy.hourly:
                # spare_capacity: an hour at its budget waits for the next hour.
                hour_start, hour_end, hour_budget = policy.hour_slot(now)
                if hour_start != self._hour_start:
                    self._hour_start, self._hour_released = hour_start, 0
                if self._hour_released >= hour_budget:
                    pace_at = None
                    await self.clock.sleep_until(hour_end)
                    continue
            if policy.shared:
                # equal_share: a User at its share of today waits for tomorrow.
                released = cal.released_by_user(today)
                req = queue.pick(policy.below_share(cap, released, queue.due_users()))
                if req is None:
                    pace_at = None
                    await self._wait(cal.day_start(today + 1))
                    continue
            else:
                req = queue.pick()
            if req is None:
                continue
            self.release(req)
            left = min(queue.due_count(), cap - cal.released_on(today))
            if policy.hourly:
                self._hour_released += 1
                left = min(left, hour_budget - self._hour_released)
            if left > 0:
                # The steady rate that spreads a full day over its off-peak hours (the
                # hour's budget over the hour, spare_capacity); faster only if the rest of
                # the plan would not fit the time left.
                now = self.clock.now()
                # (left + 1): the last of today lands before midnight, not on it.
                if policy.hourly:
                    step = min(HOUR_SECONDS / hour_budget, (hour_end - now) / (left + 1))
                else:
                    step = min(cal.offpeak_seconds(today) / cap, cal.offpeak_left(now) / (left + 1))
                base = now if pace_at is None else pace_at
                pace_at = max(base + step, now - PACE_CATCH_UP_SECONDS)
                if pace_at > now:
                    await self.clock.sleep_until(pace_at)
            else:
                pace_at = None

    async def _release_all(self) -> None:
        """no_limit: release every due request at once (holding only while the DCO says
        it has no room)."""
        while True:
            if self._room is not None and not self._room.room_for_release():
                await self._hold(self._room)
            req = self.queue.pick()
            if req is None:
                return
            self.release(req)

    async def _hold(self, room: ReleaseRoom) -> None:
        """Wait, releasing nothing, until the DCO has room for another 11.3."""
        self.releases_held += 1
        started = self.clock.now()
        if self.releases_held == 1 or self.releases_held % 100 == 0:
            log.info(
                "DCO has no room for more 11.3s: releases held (%d time(s))", self.releases_held
            )
        try:
            await room.wait_for_release_room()
        finally:
            self.releases_held_seconds += self.clock.now() - started

    def release(self, req: ActivationRequest) -> None:
        """Send `req` to the DCO now (the loop's pick, or a small image at submission)."""
        self.book.set_state(req, RequestState.RELEASED)
        req.released_at = self.clock.now()
        if req.large:
            self.calendar.record_release(self.calendar.day_of(req.released_at), req.user)
        self.store.save_request(req)
        self._spawn(req)

    def _spawn(self, req: ActivationRequest) -> None:
        self.tasks.spawn(self._execute(req))

    async def _execute(self, req: ActivationRequest) -> None:
        book = self.book
        try:
            outcome = await self.dco.activate_firmware(
                req.device_id, req.firmware_hash, req.execution_time, req.user
            )
            if outcome.state is DeviceState.CANCELLED and outcome.reason is Reason.CANCELLED:
                # A later 11.3 with a far-future date cancelled the pending activation.
                book.set_state(req, RequestState.CANCELLED)
                return
            if not outcome.ok:
                book.set_state(req, RequestState.FAILED)
                req.failure = outcome.reason.name.lower()
                return
            reading = await self.dco.read_firmware_version(req.device_id)
            req.running_version = reading.running_version
            if not reading.ok:
                book.set_state(req, RequestState.FAILED)
                req.failure = f"version_read_{reading.reason.name.lower()}"
            elif reading.running_version != req.file_version:
                book.set_state(req, RequestState.FAILED)
                req.failure = "version_mismatch"
            else:
                book.set_state(req, RequestState.DONE)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a DCO fault must not take the scheduler down
            self.dco_errors += 1
            book.set_state(req, RequestState.FAILED)
            req.failure = f"dco_error: {type(exc).__name__}"
        finally:
            if req.state is not RequestState.RELEASED:
                self._complete(req)

    def _complete(self, req: ActivationRequest) -> None:
        req.completed_at = self.clock.now()
        assert req.released_at is not None
        if req.state is not RequestState.CANCELLED:
            req.trt_met = req.completed_at - req.released_at <= self.limits.trt_seconds
            self.book.count_trt(req)
        self.store.save_request(req)
        self.notifier.post(req.user, "response", response_payload(req))
        self.book.finish()


def response_payload(req: ActivationRequest) -> dict[str, Any]:
    """The final 11.3 answer posted to the User (and read back by polling)."""
    return {
        "request_id": req.request_id,
        "duis_request_id": req.duis_request_id,
        "service_reference": "11.3",
        "device_id": _eui(req.device_id),
        "firmware_hash": req.firmware_hash.hex(),
        "firmware_version": (None if req.running_version is None else f"{req.running_version:08X}"),
        "state": req.state.value,
        "response_code": "I0"
        if req.state in (RequestState.DONE, RequestState.CANCELLED)
        else "E99",
        "failure": req.failure,
        "released_at": req.released_at,
        "completed_at": req.completed_at,
        "trt_met": req.trt_met,
        "schedule_id": req.schedule_id,
    }
