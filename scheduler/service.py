"""The DCC side: takes Users' firmware requests, applies MP230, releases work to the DCO.

Build one with a DcoApi, a clock, the scheduler config and a state directory, inside
the event loop of that clock (`clock.run(main())`, or any loop for a Real/ScaledClock)::

    scheduler = Scheduler(
        clock,                      # smets1.clock: VirtualClock, ScaledClock or RealClock
        dco,                        # any smets1.services.DcoApi (in process, or over HTTP)
        config.scheduler,           # smets1.config_dcc.SchedulerConfig (its `users` too)
        state_dir=Path("state"),    # scheduler.sqlite lives here; None keeps it in memory
        devices=known_device_ids,   # a set of EUI-64 ints; None accepts any device
    )
    task = asyncio.create_task(scheduler.run())    # releases, sweeps, delivers callbacks
    app = make_app(scheduler)                      # scheduler.api: the HTTP face
    runner = web.AppRunner(app); await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", 8080).start()
    ...
    task.cancel(); await scheduler.close()         # close() flushes the store

Opened again on the same `state_dir`, it reloads every accepted request, schedule and
result, re-issues the 11.3s that were in flight, and resumes releasing where it stopped.

How work moves: `submit_activations` plans each large 11.3 on a day (policy.py) and
stores it; `run()` releases each day's work across the off-peak part of the day, one
request at a time: security fixes first, then round robin across Users (first come,
first served within a User); small images go at once. Each released request runs as one
coroutine until the DCO answers, then 11.2 reads the version the device runs.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter, deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler.calendar import HOUR_SECONDS, Calendar
from scheduler.errors import (
    AdmissionRefused,
    BadDocument,
    DcoFailed,
    Forbidden,
    NotFound,
    ScheduleConflict,
)
from scheduler.notify import Notifier
from scheduler.policy import (
    Decision,
    Limits,
    Placement,
    Proposal,
    earliest_day,
    place_unscheduled,
    propose,
)
from scheduler.requests import (
    ActivationRequest,
    Priority,
    Refusal,
    RequestState,
    Schedule,
    ScheduleState,
)
from scheduler.store import Store
from smets1.clock import Clock, to_datetime
from smets1.codes import DeviceState, Reason
from smets1.config_dcc import SchedulerConfig, UserConfig
from smets1.eui64 import format_eui64 as _eui
from smets1.services import DcoApi, StoredImage, VersionReading
from smets1.wire import is_cancellation

#: How far behind its pace the release loop may catch up after running late.
PACE_CATCH_UP_SECONDS = 3_600.0
#: The longest the overdue sweep sleeps (it wakes sooner when a request falls due).
SWEEP_SECONDS = HOUR_SECONDS
#: How long after the seven-day mark the sweep looks again: "more than seven days".
OVERDUE_STEP_SECONDS = 1e-3
#: Requests whose planned day counts against capacity and the User's allowance.
COMMITTED_STATES = frozenset(
    {RequestState.WAITING, RequestState.RELEASED, RequestState.DONE, RequestState.FAILED}
)


@dataclass(slots=True)
class Campaign:
    """A named group of one User's requests (a config campaign, or an API submission)."""

    name: str
    user: int
    image: StoredImage
    large: bool
    requests: list[ActivationRequest] = field(default_factory=list)


@dataclass(slots=True)
class Submission:
    """What became of a submission: accepted (planned or held) and refused."""

    accepted: list[ActivationRequest] = field(default_factory=list)
    held: int = 0
    refused: int = 0
    reason: str = ""
    earliest_day: int | None = None
    planned: Counter[int] = field(default_factory=Counter)
    #: Requests withdrawn by this submission (a far-future ExecutionDateTime).
    cancelled: list[ActivationRequest] = field(default_factory=list)
    #: Released requests whose cancellation was sent on to the DCO and device: they end
    #: CANCELLED if the device still had the activation pending.
    cancelling: list[ActivationRequest] = field(default_factory=list)


class Scheduler:
    def __init__(
        self,
        clock: Clock,
        dco: DcoApi,
        config: SchedulerConfig,
        state_dir: Path | None = None,
        devices: Collection[int] | None = None,
        users: Iterable[UserConfig] = (),
    ) -> None:
        self.clock = clock
        self.dco = dco
        self.config = config
        self.limits = Limits.from_config(config)
        self.devices = devices
        self.users: dict[int, UserConfig] = {u.id: u for u in (*config.users, *users)}
        self.calendar = Calendar(
            clock.epoch,
            config.large_images_per_day,
            [(w.start_hour, w.end_hour) for w in config.peak_windows],
        )
        self.store = Store(state_dir)
        self.notifier = Notifier(
            clock, self.store, self.users, config.callback_retry_seconds, config.callback_attempts
        )
        self.requests: list[ActivationRequest] = []
        self._by_id: dict[int, ActivationRequest] = {}
        self._by_user: dict[int, list[ActivationRequest]] = {}
        #: Kept up to date on every change, so that reading them costs nothing.
        self.state_counts: Counter[RequestState] = Counter()
        self.trt_counts: Counter[bool] = Counter()
        self.overdue_count = 0
        self.schedules: dict[int, Schedule] = {}
        self.refusals: list[Refusal] = self.store.load_refusals()
        self.images: dict[bytes, StoredImage] = {
            i.firmware_hash: i for i in self.store.load_images()
        }
        self.campaigns: dict[str, Campaign] = {}
        self._stored_files: dict[bytes, StoredImage] = {}  # by SHA-256 of the whole file
        #: (schedule, day) → devices attached to that batch so far.
        self._batch_fill: Counter[tuple[int, int]] = Counter()
        # Large requests planned on a day not yet opened, by day, in submission order.
        self._future: dict[int, list[ActivationRequest]] = {}
        self._opened_through: int | None = None
        # Opened (due) work: security first, then round robin across Users.
        self._due_security: deque[ActivationRequest] = deque()
        self._due: dict[int, deque[ActivationRequest]] = {}
        self._rr: deque[int] = deque()
        self._by_submit: deque[ActivationRequest] = deque()
        self._resume: list[ActivationRequest] = []
        self._active = 0  # WAITING + RELEASED: what wait_idle waits for
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.dco_errors = 0
        self._load()

    # -- restart ---------------------------------------------------------------------

    def _load(self) -> None:
        for s in self.store.load_schedules():
            self.schedules[s.schedule_id] = s
            if s.state is ScheduleState.AGREED:
                for day, n in s.batches.items():
                    self.calendar.reserve(day, s.schedule_id, n)
        for r in self.store.load_requests():
            self._index(r)
            if r.large and r.released_at is not None:
                self.calendar.record_release(self.calendar.day_of(r.released_at))
            # HELD and CANCELLED requests hold no capacity and none of the allowance.
            if r.large and r.planned_day is not None and r.state in COMMITTED_STATES:
                if r.schedule_id is None:
                    self.calendar.book(r.planned_day, r.user)
                else:
                    self._batch_fill[(r.schedule_id, r.planned_day)] += 1
            if r.state is RequestState.WAITING:
                self._active += 1
                self._enqueue(r)
            elif r.state is RequestState.RELEASED:
                self._active += 1
                self._resume.append(r)
            if r.is_open:
                self._by_submit.append(r)
        if self._active == 0:
            self._idle.set()

    def _index(self, r: ActivationRequest) -> None:
        self.requests.append(r)
        self._by_id[r.request_id] = r
        self._by_user.setdefault(r.user, []).append(r)
        self.state_counts[r.state] += 1
        if r.trt_met is not None:
            self.trt_counts[r.trt_met] += 1
        if r.overdue:
            self.overdue_count += 1

    def _set_state(self, r: ActivationRequest, state: RequestState) -> None:
        self.state_counts[r.state] -= 1
        self.state_counts[state] += 1
        r.state = state

    # -- Users -----------------------------------------------------------------------

    def user_for_token(self, token: str) -> UserConfig | None:
        for u in self.users.values():
            if u.token and u.token == token:
                return u
        return None

    def _check_user(self, user: int) -> None:
        if self.users and user not in self.users:
            raise Forbidden(f"User {_eui(user)} is not registered with the scheduler")

    def _may_act_for(self, actor: int, user: int) -> None:
        if actor == user:
            return
        cfg = self.users.get(actor)
        if cfg is None or not cfg.service_desk:
            raise Forbidden(f"User {_eui(actor)} may not act for User {_eui(user)}")

    # -- SRV 11.1 and 11.2 -----------------------------------------------------------

    async def store_image(self, user: int, image: bytes) -> StoredImage:
        """11.1: the DCO stores the image's blocks; not limited by MP230 (no device traffic)."""
        self._check_user(user)
        key = hashlib.sha256(image).digest()
        known = self._stored_files.get(key)
        if known is not None:
            return known
        try:
            stored = await self.dco.update_firmware(image)
        except Exception as exc:  # the DCO is another component: convert at the boundary
            raise DcoFailed(f"the DCO could not store the image: {exc}") from exc
        self._stored_files[key] = stored
        if stored.firmware_hash not in self.images:
            self.images[stored.firmware_hash] = stored
            self.store.add_image(stored)
        return stored

    async def read_version(self, user: int, device_id: int) -> VersionReading:
        """11.2: read at once, through the DCO."""
        self._check_user(user)
        self.check_devices([device_id])
        try:
            return await self.dco.read_firmware_version(device_id)
        except Exception as exc:
            raise DcoFailed(f"the DCO could not read device {_eui(device_id)}: {exc}") from exc

    def read_version_later(self, user: int, device_id: int, duis_request_id: str) -> None:
        """11.2 from DUIS: acknowledged now; the response is delivered when the DCO answers."""
        self._check_user(user)
        self.check_devices([device_id])

        async def read() -> None:
            payload: dict[str, Any] = {
                "duis_request_id": duis_request_id,
                "service_reference": "11.2",
                "device_id": _eui(device_id),
            }
            try:
                reading = await self.dco.read_firmware_version(device_id)
            except Exception as exc:
                payload.update(response_code="E99", failure=f"dco_error: {type(exc).__name__}")
            else:
                payload.update(
                    response_code="I0" if reading.ok else "E99",
                    firmware_version=f"{reading.running_version:08X}",
                    state=reading.state.name.lower(),
                    failure=None if reading.ok else reading.reason.name.lower(),
                )
            self.notifier.post(user, "response", payload)

        task = asyncio.get_running_loop().create_task(read())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def check_devices(self, device_ids: Iterable[int]) -> None:
        if self.devices is None:
            return
        for d in device_ids:
            if d not in self.devices:
                raise BadDocument("DeviceID", f"unknown device {_eui(d)}")

    # -- SRV 11.3 --------------------------------------------------------------------

    def is_large(self, image: StoredImage) -> bool:
        return self.limits.is_large(image.size_bytes)

    def submit_activations(
        self,
        user: int,
        firmware_hash: bytes,
        device_ids: list[int],
        *,
        campaign: str | None = None,
        priority: Priority = Priority.ROUTINE,
        schedule_id: int | None = None,
        execution_time: float = 0.0,
        duis_request_ids: list[str] | None = None,
        all_or_nothing: bool = False,
    ) -> Submission:
        """Accept, hold or refuse an 11.3 per device; everything accepted is stored first.

        `all_or_nothing` refuses the whole submission (AdmissionRefused) if any device
        would be refused, storing nothing: what a single DUIS 11.3 gets.
        """
        self._check_user(user)
        self.check_devices(device_ids)
        image = self.images.get(firmware_hash)
        if image is None:
            raise BadDocument(
                "FirmwareHash",
                f"no image with hash {firmware_hash.hex()} was stored through 11.1",
            )
        if not device_ids:
            raise BadDocument("DeviceIDList", "no devices")
        if len(set(device_ids)) != len(device_ids):
            raise BadDocument("DeviceIDList", "a device is named twice")
        if duis_request_ids is not None:
            for rid in duis_request_ids:
                if self.store.duis_id_taken(rid):
                    raise BadDocument("RequestID", f"{rid} was already used")
        schedule = None
        if schedule_id is not None:
            schedule = self._schedule_for(user, schedule_id)
            if schedule.state is not ScheduleState.AGREED:
                raise ScheduleConflict(f"schedule {schedule_id} is not agreed yet")
            left = schedule.devices - schedule.assigned
            if len(device_ids) > left:
                raise ScheduleConflict(
                    f"schedule {schedule_id} has room for {left} more devices, "
                    f"got {len(device_ids)}"
                )
        now = self.clock.now()
        if is_cancellation(execution_time, now):
            return self._cancel(user, image.firmware_hash, device_ids, execution_time)
        today = self.calendar.day_of(max(now, execution_time))
        large = self.is_large(image)
        name = campaign or f"{_eui(user)}@{now:.0f}"
        out = Submission()
        reqs: list[ActivationRequest] = []
        undo: list[int] = []
        next_id = len(self.requests) + 1
        for n, device_id in enumerate(device_ids):
            req = ActivationRequest(
                next_id + len(reqs),
                user,
                name,
                device_id,
                image.firmware_hash,
                image.file_version,
                large,
                now,
                priority=priority,
                execution_time=execution_time,
                duis_request_id=None if duis_request_ids is None else duis_request_ids[n],
            )
            if not large:
                req.planned_day = today
            elif schedule is not None:
                req.schedule_id = schedule.schedule_id
                req.planned_day = self._batch_day(schedule, today)
            else:
                decision = place_unscheduled(self.calendar, self.limits, user, today)
                if decision.placement is Placement.REFUSED and priority is Priority.SECURITY:
                    decision = self._make_room_for_security(user, today)
                if decision.placement is Placement.PLANNED:
                    req.planned_day = decision.day
                    undo.append(decision.day or 0)
                elif decision.placement is Placement.HELD:
                    req.state = RequestState.HELD
                    req.held_day = decision.day
                    out.held += 1
                else:
                    out.refused = len(device_ids) - n
                    out.earliest_day = decision.day
                    out.reason = self._refusal_reason(today, decision.day)
                    break
            reqs.append(req)
        if out.refused and all_or_nothing:
            for day in undo:
                self.calendar.unbook(day, user)
            raise AdmissionRefused(out.reason, out.earliest_day)
        if reqs:
            self.store.add_requests(reqs)
        if schedule is not None and large:
            schedule.assigned += len(reqs)
            self.store.save_schedule(schedule)
        camp = self.campaigns.get(name)
        if camp is None:
            camp = self.campaigns[name] = Campaign(name, user, image, large)
        for req in reqs:
            self._index(req)
            camp.requests.append(req)
            self._by_submit.append(req)
            if req.state is RequestState.WAITING:
                self._active += 1
                out.planned[req.planned_day or 0] += 1
                if req.large:
                    self._enqueue(req)
                else:
                    self._release(req)
        out.accepted = reqs
        if out.held:
            self.notifier.post(
                user,
                "held",
                {
                    "campaign": name,
                    "devices": out.held,
                    "reason": self._held_reason(
                        next(r.held_day for r in reqs if r.state is RequestState.HELD)
                    ),
                },
            )
        if out.refused:
            self.record_refusal(user, name, out.refused, out.reason, out.earliest_day)
        if self._active:
            self._idle.clear()
        self._wakeup.set()
        return out

    def _cancel(
        self, user: int, firmware_hash: bytes, device_ids: list[int], execution_time: float
    ) -> Submission:
        """DUIS cancels a pending 11.3 with a far-future ExecutionDateTime: withdraw the
        User's waiting or held requests for these devices and this image, and send the
        cancellation on to the DCO for those already released (their device may hold the
        activation for a future ExecutionDateTime)."""
        wanted = set(device_ids)
        out = Submission()
        for req in self._by_user.get(user, ()):
            if req.device_id not in wanted or req.firmware_hash != firmware_hash:
                continue
            if req.state is RequestState.RELEASED:
                out.cancelling.append(req)
                self._spawn_task(self._cancel_released(req, execution_time))
                continue
            if req.state not in (RequestState.WAITING, RequestState.HELD):
                continue
            if req.state is RequestState.WAITING:
                self._dequeue(req)
                self._active -= 1
                day = req.planned_day or 0
                if req.large and req.schedule_id is None:
                    self.calendar.unbook(day, user)
                elif req.schedule_id is not None:
                    self._batch_fill[(req.schedule_id, day)] -= 1
                    self.schedules[req.schedule_id].assigned -= 1
                    self.store.save_schedule(self.schedules[req.schedule_id])
            self._set_state(req, RequestState.CANCELLED)
            req.completed_at = self.clock.now()
            out.cancelled.append(req)
        self.store.save_requests(out.cancelled)
        for req in out.cancelled:
            self.notifier.post(req.user, "response", self.response_payload(req))
        if self._active == 0:
            self._idle.set()
        return out

    async def _cancel_released(self, req: ActivationRequest, execution_time: float) -> None:
        """Send the cancelling 11.3 to the DCO. If the device still held the activation,
        the DCO ends the released 11.3 as cancelled too (`_execute` records it); if not
        (already activating, or done), the User is told that nothing was cancelled."""
        try:
            outcome = await self.dco.activate_firmware(
                req.device_id, req.firmware_hash, execution_time
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.dco_errors += 1
            failure = f"dco_error: {type(exc).__name__}"
        else:
            if outcome.ok:
                return
            failure = outcome.reason.name.lower()
        self.notifier.post(
            req.user,
            "response",
            {
                "request_id": req.request_id,
                "duis_request_id": req.duis_request_id,
                "service_reference": "11.3",
                "device_id": _eui(req.device_id),
                "firmware_hash": req.firmware_hash.hex(),
                "state": "not_cancelled",
                "response_code": "E99",
                "failure": f"cancellation: {failure}",
            },
        )

    def record_refusal(
        self, user: int, campaign: str, devices: int, reason: str, earliest_day: int | None
    ) -> Refusal:
        """Keep, and tell the User, that work was refused at submission and why."""
        refusal = Refusal(user, campaign, devices, reason, earliest_day, self.clock.now())
        self.refusals.append(refusal)
        self.store.add_refusal(refusal)
        self.notifier.post(
            user,
            "refused",
            {
                "campaign": campaign,
                "devices": devices,
                "reason": reason,
                "earliest_date": self.date_of(earliest_day),
            },
        )
        return refusal

    def held_reason(self, req: ActivationRequest) -> str | None:
        """Why a HELD request waits (rendered on demand: a request keeps only the day)."""
        if req.state is not RequestState.HELD:
            return None
        return self._held_reason(req.held_day)

    def held_count(self, user: int) -> int:
        """The User's HELD requests: the next schedule it agrees takes them on first."""
        return sum(1 for r in self._by_user.get(user, ()) if r.state is RequestState.HELD)

    def _held_reason(self, day: int | None) -> str:
        return (
            f"the User already has {self.limits.user_daily_limit} large-image activations on "
            f"{self.date_of(day) or 'its day'} without an agreed delivery schedule (MP230): "
            "ask the DCC Service Desk for a schedule (POST /v1/schedules); this request "
            "waits for it and joins the schedule when it is agreed"
        )

    def _refusal_reason(self, first_day: int, earliest: int | None) -> str:
        days = self.limits.admission_days
        when = (
            f"the earliest date that would work is {self.date_of(earliest)}"
            if earliest is not None
            else "no date within the horizon has room"
        )
        return (
            f"large-image capacity from {self.date_of(first_day)} for {days} day(s) is already "
            f"committed, so the request could not be answered within its "
            f"{self.limits.trt_seconds / 86_400:g}-day TRT; {when} "
            "(submit then, or ask for an agreed schedule)"
        )

    def _batch_day(self, schedule: Schedule, today: int) -> int:
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

    def _make_room_for_security(self, user: int, first_day: int) -> Decision:
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

    def _latest_open(self, day: int, pred: Any) -> ActivationRequest | None:
        pool: list[ActivationRequest] = list(self._future.get(day, []))
        if self._opened_through is not None and day <= self._opened_through:
            for q in self._due.values():
                pool.extend(r for r in q if r.planned_day == day)
        for r in reversed(pool):
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
        self._dequeue(req)
        if req.schedule_id is None:
            self.calendar.move_booking(req.user, day, new_day)
        else:
            s = self.schedules[req.schedule_id]
            self._shift_batch(s, day, new_day, 1)
            self._batch_fill[(s.schedule_id, day)] -= 1
            self._batch_fill[(s.schedule_id, new_day)] += 1
            s.moves += 1
            self.store.save_schedule(s)
        req.planned_day = new_day
        self.store.save_request(req)
        self._enqueue(req)
        self.notifier.post(
            req.user,
            "schedule_moved" if req.schedule_id is not None else "moved",
            {
                "request_id": req.request_id,
                "schedule_id": req.schedule_id,
                "from_date": self.date_of(day),
                "to_date": self.date_of(new_day),
                "reason": reason,
            },
        )

    def _shift_batch(self, s: Schedule, day: int, new_day: int, n: int) -> None:
        s.batches[day] -= n
        if s.batches[day] == 0:
            del s.batches[day]
        s.batches[new_day] = s.batches.get(new_day, 0) + n
        self.calendar.move_reservation(s.schedule_id, day, new_day, n)

    # -- schedules -------------------------------------------------------------------

    def _schedule_for(self, actor: int, schedule_id: int) -> Schedule:
        s = self.schedules.get(schedule_id)
        if s is None:
            raise NotFound(f"no schedule {schedule_id}")
        try:
            self._may_act_for(actor, s.user)
        except Forbidden:
            raise NotFound(f"no schedule {schedule_id}") from None
        return s

    def _owners(self) -> dict[int, int]:
        return {
            s.schedule_id: s.user
            for s in self.schedules.values()
            if s.state is ScheduleState.AGREED
        }

    def request_schedule(
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
        self._check_user(actor)
        self._check_user(owner)
        self._may_act_for(actor, owner)
        if devices <= 0:
            raise BadDocument("devices", "must be at least 1")
        today = self.calendar.day_of(self.clock.now())
        start = today if start_day is None else max(today, start_day)
        proposal = propose(
            self.calendar, self.limits, owner, devices, start, max_per_day, self._owners()
        )
        s = Schedule(
            len(self.schedules) + 1,
            owner,
            devices,
            self.clock.now(),
            batches=dict(proposal.batches),
            max_per_day=max_per_day,
            start_day=start,
        )
        self.schedules[s.schedule_id] = s
        self.store.save_schedule(s)
        return s, proposal

    def accept_schedule(self, actor: int, schedule_id: int) -> Schedule:
        """Agree a proposal: its batches hold capacity; schedules it moves are told."""
        s = self._schedule_for(actor, schedule_id)
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
            s.batches = dict(proposal.batches)
            self.store.save_schedule(s)
            raise ScheduleConflict(
                f"capacity changed since schedule {schedule_id} was proposed; it now proposes "
                f"{self._batches_text(s.batches)}: accept again to agree it"
            )
        for day, n in s.batches.items():
            self.calendar.reserve(day, s.schedule_id, n)
        s.state = ScheduleState.AGREED
        self.store.save_schedule(s)
        for move in proposal.moves:
            self._apply_move(move.schedule_id, move.day, move.count, s)
        self._attach_held(s)
        self._wakeup.set()
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
        attached = [
            r
            for r in [*self._future.get(day, []), *self._due_pool()]
            if r.schedule_id == schedule_id and r.planned_day == day
        ]
        fill_moved = max(0, self._batch_fill[(schedule_id, day)] - moved.batches.get(day, 0))
        for target_day, n in targets:
            for _ in range(n):
                if fill_moved <= 0 or not attached:
                    break
                req = attached.pop()
                self._dequeue(req)
                req.planned_day = target_day
                self._batch_fill[(schedule_id, day)] -= 1
                self._batch_fill[(schedule_id, target_day)] += 1
                self.store.save_request(req)
                self._enqueue(req)
                fill_moved -= 1
        self.store.save_schedule(moved)
        self.notifier.post(
            moved.user,
            "schedule_moved",
            {
                "schedule_id": schedule_id,
                "reason": f"User {_eui(by.user)}'s schedule {by.schedule_id} needed a fair "
                f"share of {self.date_of(day)}",
                "before": self._batches_json(before),
                "after": self._batches_json(moved.batches),
            },
        )

    def _attach_held(self, s: Schedule) -> None:
        held = [r for r in self._by_user.get(s.user, ()) if r.state is RequestState.HELD]
        today = self.calendar.day_of(self.clock.now())
        changed = []
        for req in held[: s.devices - s.assigned]:
            self._set_state(req, RequestState.WAITING)
            req.held_day = None
            req.schedule_id = s.schedule_id
            req.planned_day = self._batch_day(s, today)
            s.assigned += 1
            self._active += 1
            self._enqueue(req)
            changed.append(req)
        if changed:
            self.store.save_requests(changed)
            self.store.save_schedule(s)
            self._idle.clear()

    # -- the release queue -----------------------------------------------------------

    def _enqueue(self, req: ActivationRequest) -> None:
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

    def _dequeue(self, req: ActivationRequest) -> None:
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

    def _due_pool(self) -> list[ActivationRequest]:
        out = list(self._due_security)
        for q in self._due.values():
            out.extend(q)
        return out

    def _open_days(self, today: int) -> None:
        for day in sorted(d for d in self._future if d <= today):
            for req in self._future.pop(day):
                self._push_due(req)
        self._opened_through = today

    def _due_count(self) -> int:
        return len(self._due_security) + sum(len(q) for q in self._due.values())

    def _pick(self) -> ActivationRequest | None:
        if self._due_security:
            return self._due_security.popleft()
        while self._rr:
            user = self._rr[0]
            self._rr.rotate(-1)
            q = self._due.get(user)
            if not q:
                self._rr.pop()
                continue
            req = q.popleft()
            if not q:
                self._rr.pop()
            return req
        return None

    async def run(self, deliver_callbacks: bool = True) -> None:
        """Release, sweep for overdue requests and deliver callbacks, until cancelled.

        `deliver_callbacks=False` keeps notifications in the store (for polling) and POSTs
        none: `smets1 run` uses it, because on a virtual clock's loop an HTTP timeout
        would expire at once while the socket waits in real time.
        """
        for req in self._resume:
            self._spawn(req)
        self._resume.clear()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._release_loop())
            tg.create_task(self._sweep_loop())
            if deliver_callbacks:
                tg.create_task(self.notifier.run())

    async def _wait(self, until: float | None) -> None:
        if until is None:
            await self._wakeup.wait()
            return
        try:
            await self.clock.timeout(until - self.clock.now(), self._wakeup.wait())
        except TimeoutError:
            pass

    async def _release_loop(self) -> None:
        cal = self.calendar
        cap = self.limits.capacity
        # When the next release is due. Paced from the last due time, not from when the
        # loop woke, so a process that runs late on a scaled clock catches up (within
        # PACE_CATCH_UP_SECONDS) instead of spilling the day's releases into the next.
        pace_at: float | None = None
        while True:
            self._wakeup.clear()
            now = self.clock.now()
            today = cal.day_of(now)
            self._open_days(today)
            if not self._due_count():
                pace_at = None
                nxt = min(self._future, default=None)
                await self._wait(None if nxt is None else cal.day_start(nxt))
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
            req = self._pick()
            if req is None:
                continue
            self._release(req)
            left = min(self._due_count(), cap - cal.released_on(today))
            if left > 0:
                # The steady rate that spreads a full day over its off-peak hours; faster
                # only if the rest of today's plan would not fit the off-peak time left.
                now = self.clock.now()
                # (left + 1): the last of today lands before midnight, not on it.
                step = min(cal.offpeak_per_day / cap, cal.offpeak_left(now) / (left + 1))
                base = now if pace_at is None else pace_at
                pace_at = max(base + step, now - PACE_CATCH_UP_SECONDS)
                if pace_at > now:
                    await self.clock.sleep_until(pace_at)
            else:
                pace_at = None

    def _release(self, req: ActivationRequest) -> None:
        self._set_state(req, RequestState.RELEASED)
        req.released_at = self.clock.now()
        if req.large:
            self.calendar.record_release(self.calendar.day_of(req.released_at))
        self.store.save_request(req)
        self._spawn(req)

    def _spawn(self, req: ActivationRequest) -> None:
        self._spawn_task(self._execute(req))

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, req: ActivationRequest) -> None:
        try:
            outcome = await self.dco.activate_firmware(
                req.device_id, req.firmware_hash, req.execution_time
            )
            if outcome.state is DeviceState.CANCELLED and outcome.reason is Reason.CANCELLED:
                # A later 11.3 with a far-future date cancelled the pending activation.
                self._set_state(req, RequestState.CANCELLED)
                return
            if not outcome.ok:
                self._set_state(req, RequestState.FAILED)
                req.failure = outcome.reason.name.lower()
                return
            reading = await self.dco.read_firmware_version(req.device_id)
            req.running_version = reading.running_version
            if not reading.ok:
                self._set_state(req, RequestState.FAILED)
                req.failure = f"version_read_{reading.reason.name.lower()}"
            elif reading.running_version != req.file_version:
                self._set_state(req, RequestState.FAILED)
                req.failure = "version_mismatch"
            else:
                self._set_state(req, RequestState.DONE)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a DCO fault must not take the scheduler down
            self.dco_errors += 1
            self._set_state(req, RequestState.FAILED)
            req.failure = f"dco_error: {type(exc).__name__}"
        finally:
            if req.state is not RequestState.RELEASED:
                self._complete(req)

    def _complete(self, req: ActivationRequest) -> None:
        req.completed_at = self.clock.now()
        assert req.released_at is not None
        if req.state is not RequestState.CANCELLED:
            req.trt_met = req.completed_at - req.released_at <= self.limits.trt_seconds
            self.trt_counts[req.trt_met] += 1
        self.store.save_request(req)
        self.notifier.post(req.user, "response", self.response_payload(req))
        self._active -= 1
        if self._active == 0:
            self._idle.set()

    def response_payload(self, req: ActivationRequest) -> dict[str, Any]:
        return {
            "request_id": req.request_id,
            "duis_request_id": req.duis_request_id,
            "service_reference": "11.3",
            "device_id": _eui(req.device_id),
            "firmware_hash": req.firmware_hash.hex(),
            "firmware_version": (
                None if req.running_version is None else f"{req.running_version:08X}"
            ),
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

    async def _sweep_loop(self) -> None:
        stale = self.limits.stale_after_seconds
        while True:
            now = self.clock.now()
            q = self._by_submit
            while q:
                req = q[0]
                # "More than seven days": open at exactly the mark is not yet overdue.
                if req.is_open and not req.overdue:
                    if req.submitted_at + stale >= now:
                        break
                    req.overdue = True
                    self.overdue_count += 1
                    self.store.save_request(req)
                    self.notifier.post(
                        req.user,
                        "overdue",
                        {
                            "request_id": req.request_id,
                            "duis_request_id": req.duis_request_id,
                            "state": req.state.value,
                            "reason": f"still open {stale / 86_400:g} days after submission: "
                            "Users' systems fail it now",
                        },
                    )
                q.popleft()
            wake = now + SWEEP_SECONDS
            if q:  # just after the next open request's mark, if that comes sooner
                wake = min(wake, q[0].submitted_at + stale + OVERDUE_STEP_SECONDS)
            await self.clock.sleep_until(wake)

    async def wait_idle(self) -> None:
        """Until every accepted request not held for a schedule has its final answer."""
        await self._idle.wait()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.store.close()

    # -- reading ---------------------------------------------------------------------

    def request(self, actor: int, request_id: int) -> ActivationRequest:
        r = self._by_id.get(request_id)
        if r is None or r.user != actor:
            raise NotFound(f"no request {request_id}")
        return r

    def requests_of(self, user: int) -> list[ActivationRequest]:
        """The User's requests in submission order (the scheduler's own list: read only)."""
        return self._by_user.get(user, [])

    def schedules_of(self, user: int) -> list[Schedule]:
        return [s for s in self.schedules.values() if s.user == user]

    def schedule(self, actor: int, schedule_id: int) -> Schedule:
        return self._schedule_for(actor, schedule_id)

    def batch_status(self, s: Schedule) -> list[dict[str, Any]]:
        by_day: dict[int, Counter[str]] = {d: Counter() for d in s.batches}
        for r in self.requests:
            if r.schedule_id == s.schedule_id and r.planned_day is not None:
                c = by_day.setdefault(r.planned_day, Counter())
                c[r.state.value] += 1
                if r.trt_met is not None:
                    c["trt_met" if r.trt_met else "trt_missed"] += 1
        return [
            {
                "date": self.date_of(d),
                "devices": s.batches.get(d, 0),
                "attached": sum(c[st.value] for st in RequestState),
                "released": c["released"] + c["done"] + c["failed"],
                "done": c["done"],
                "failed": c["failed"],
                "trt_met": c["trt_met"],
                "trt_missed": c["trt_missed"],
            }
            for d, c in sorted(by_day.items())
        ]

    def capacity(self, first_day: int, days: int) -> list[dict[str, Any]]:
        cal = self.calendar
        return [
            {
                "date": self.date_of(d),
                "capacity": cal.capacity,
                "scheduled": cal.scheduled_on(d),
                "unscheduled": cal.unscheduled_on(d),
                "released": cal.released_on(d),
                "free": cal.free(d),
            }
            for d in range(first_day, first_day + days)
        ]

    def date_of(self, day: int | None) -> str | None:
        if day is None:
            return None
        return to_datetime(self.calendar.day_start(day)).date().isoformat()

    def _batches_text(self, batches: dict[int, int]) -> str:
        return ", ".join(f"{self.date_of(d)}: {n}" for d, n in sorted(batches.items()))

    def _batches_json(self, batches: dict[int, int]) -> list[dict[str, Any]]:
        return [{"date": self.date_of(d), "devices": n} for d, n in sorted(batches.items())]
