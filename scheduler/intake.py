"""Intake: what Users send in. 11.1 stores an image, 11.2 reads a version, 11.3 asks for
activations, which are accepted (planned or held), refused, or cancel earlier ones.

It holds the stored images, the campaigns (named groups of one User's requests) and the
refusals. An 11.3 is placed per device: a small image is released at once; a large one
joins an agreed schedule's batch (schedules.py) or is planned on a day by policy.py, where
a security fix that finds its day full takes routine work's place (moves.py). Accepted
requests are stored first, then entered in the request book, the overdue sweep and the
release queue; the release loop is woken last.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from scheduler.book import RequestBook
from scheduler.calendar import Calendar
from scheduler.errors import (
    AdmissionRefused,
    BadDocument,
    DcoFailed,
    Forbidden,
    ScheduleConflict,
)
from scheduler.moves import SecurityMoves
from scheduler.notify import Notifier
from scheduler.policy import Limits, Placement, place_unscheduled
from scheduler.release import Releaser, response_payload
from scheduler.release_queue import ReleaseQueue
from scheduler.requests import (
    ActivationRequest,
    Priority,
    Refusal,
    RequestState,
    ScheduleState,
)
from scheduler.schedules import Schedules
from scheduler.store import Store
from scheduler.sweep import OverdueSweep
from scheduler.tasks import TaskSet
from scheduler.users import check_user
from smets1.clock import Clock
from smets1.config_dcc import UserConfig
from smets1.eui64 import format_eui64 as _eui
from smets1.services import DcoApi, StoredImage, VersionReading
from smets1.wire import is_cancellation


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


class Intake:
    def __init__(
        self,
        *,
        clock: Clock,
        dco: DcoApi,
        limits: Limits,
        calendar: Calendar,
        store: Store,
        notifier: Notifier,
        users: Mapping[int, UserConfig],
        devices: Collection[int] | None,
        supplier_of: Callable[[int], int | None] | None,
        book: RequestBook,
        queue: ReleaseQueue,
        schedules: Schedules,
        moves: SecurityMoves,
        releaser: Releaser,
        sweep: OverdueSweep,
        tasks: TaskSet,
    ) -> None:
        self.clock = clock
        self.dco = dco
        self.limits = limits
        self.calendar = calendar
        self.store = store
        self.notifier = notifier
        self.users = users
        self.devices = devices
        self.supplier_of = supplier_of
        self.book = book
        self.queue = queue
        self.schedules = schedules
        self.moves = moves
        self.releaser = releaser
        self.sweep = sweep
        self.tasks = tasks
        self.refusals: list[Refusal] = store.load_refusals()
        self.images: dict[bytes, StoredImage] = {i.firmware_hash: i for i in store.load_images()}
        self.campaigns: dict[str, Campaign] = {}
        self._stored_files: dict[bytes, StoredImage] = {}  # by SHA-256 of the whole file
        # Images at the DCO now (by SHA-256 of the whole file): set when it has answered.
        self._storing: dict[bytes, asyncio.Event] = {}
        #: Cancellations the DCO raised on instead of answering.
        self.dco_errors = 0

    def restore_campaign(self, req: ActivationRequest) -> None:
        """On a restart: the request rejoins its campaign."""
        camp = self.campaigns.get(req.campaign)
        if camp is None:
            image = self.images.get(req.firmware_hash)
            if image is None:  # a store written before its image was: nothing to join
                return
            camp = self.campaigns[req.campaign] = Campaign(req.campaign, req.user, image, req.large)
        camp.requests.append(req)

    # -- SRV 11.1 and 11.2 -----------------------------------------------------------

    async def store_image(self, user: int, image: bytes) -> StoredImage:
        """11.1 at the DCO: stores the image's blocks and answers when they are stored (the
        DCO's processing time); not limited by MP230 (no device traffic). The 11.1
        requests themselves are updates.ImageUpdates'; this is their DCO call."""
        check_user(self.users, user)
        key = hashlib.sha256(image).digest()
        storing = self._storing.get(key)
        if storing is not None:  # the same image is at the DCO now: one processing serves
            await storing.wait()
        known = self._stored_files.get(key)
        if known is not None:
            return known
        storing = self._storing[key] = asyncio.Event()
        try:
            stored = await self.dco.update_firmware(image)
        except Exception as exc:  # the DCO is another component: convert at the boundary
            raise DcoFailed(f"the DCO could not store the image: {exc}") from exc
        finally:
            del self._storing[key]
            storing.set()
        self._stored_files[key] = stored
        if stored.firmware_hash not in self.images:
            self.images[stored.firmware_hash] = stored
            self.store.add_image(stored)
        return stored

    async def read_version(self, user: int, device_id: int) -> VersionReading:
        """11.2: read at once, through the DCO."""
        check_user(self.users, user)
        self.check_devices([device_id], user)
        try:
            return await self.dco.read_firmware_version(device_id)
        except Exception as exc:
            raise DcoFailed(f"the DCO could not read device {_eui(device_id)}: {exc}") from exc

    def read_version_later(self, user: int, device_id: int, duis_request_id: str) -> None:
        """11.2 from DUIS: acknowledged now; the response is delivered when the DCO answers."""
        check_user(self.users, user)
        self.check_devices([device_id], user)

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

        self.tasks.spawn(read())

    def check_devices(self, device_ids: Iterable[int], actor: int | None = None) -> None:
        """Every device is known and, when `actor` is given, supplied by it: a User acts
        only on the devices it supplies (a Service Desk User on any)."""
        ids = list(device_ids)
        if self.devices is not None:
            for d in ids:
                if d not in self.devices:
                    raise BadDocument("DeviceID", f"unknown device {_eui(d)}")
        if actor is None or self.supplier_of is None:
            return
        cfg = self.users.get(actor)
        if cfg is not None and cfg.service_desk:
            return
        for d in ids:
            owner = self.supplier_of(d)
            if owner is not None and owner != actor:
                raise Forbidden(
                    f"device {_eui(d)} is supplied by User {_eui(owner)}: User "
                    f"{_eui(actor)} may not send it a request"
                )

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
        check_user(self.users, user)
        self.check_devices(device_ids, user)
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
            schedule = self.schedules.for_actor(user, schedule_id)
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
        next_id = self.book.next_id
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
                req.planned_day = self.schedules.batch_day(schedule, today)
            elif not self.limits.policy.mp230_admission:
                # no_limit, equal_share: nothing held or refused; planned today, and the
                # release loop decides how much of it goes out each day (release.py).
                self.calendar.book(today, user)
                req.planned_day = today
                undo.append(today)
            else:
                if priority is Priority.SECURITY:
                    decision = self.moves.place(user, today)
                else:
                    decision = place_unscheduled(self.calendar, self.limits, user, today)
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
            try:
                self.store.add_requests(reqs)
            except BaseException:
                # Nothing was accepted: the days booked for it are free again.
                for day in undo:
                    self.calendar.unbook(day, user)
                raise
        if schedule is not None and large:
            self.schedules.assign(schedule, len(reqs))
        camp = self.campaigns.get(name)
        if camp is None:
            camp = self.campaigns[name] = Campaign(name, user, image, large)
        for req in reqs:
            self.book.add(req)
            camp.requests.append(req)
            self.sweep.track(req)
            if req.state is RequestState.WAITING:
                self.book.activate()
                out.planned[req.planned_day or 0] += 1
                if req.large:
                    self.queue.enqueue(req)
                else:
                    self.releaser.release(req)
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
        self.queue.wake()
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
        for req in self.book.of_user(user):
            if req.device_id not in wanted or req.firmware_hash != firmware_hash:
                continue
            if req.state is RequestState.RELEASED:
                out.cancelling.append(req)
                self.tasks.spawn(self._cancel_released(req, execution_time))
                continue
            if req.state not in (RequestState.WAITING, RequestState.HELD):
                continue
            if req.state is RequestState.WAITING:
                self.queue.dequeue(req)
                self.book.finish()
                day = req.planned_day or 0
                if req.large and req.schedule_id is None:
                    self.calendar.unbook(day, user)
                elif req.schedule_id is not None:
                    self.schedules.detach(req.schedule_id, day)
            self.book.set_state(req, RequestState.CANCELLED)
            req.completed_at = self.clock.now()
            out.cancelled.append(req)
        self.store.save_requests(out.cancelled)
        for req in out.cancelled:
            self.notifier.post(req.user, "response", response_payload(req))
        self.book.settle()
        return out

    async def _cancel_released(self, req: ActivationRequest, execution_time: float) -> None:
        """Send the cancelling 11.3 to the DCO. If the device still held the activation,
        the DCO ends the released 11.3 as cancelled too (release.py records it); if not
        (already activating, or done), the User is told that nothing was cancelled."""
        try:
            outcome = await self.dco.activate_firmware(
                req.device_id, req.firmware_hash, execution_time, req.user
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
                "earliest_date": self.calendar.date_of(earliest_day),
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
        return len(self.book.held_of(user))

    def _held_reason(self, day: int | None) -> str:
        on = self.calendar.date_of(day) or "its day"
        return (
            f"the User already has {self.limits.user_daily_limit} large-image activations on "
            f"{on} without an agreed delivery schedule (MP230): "
            "ask the DCC Service Desk for a schedule (POST /v1/schedules); this request "
            "waits for it and joins the schedule when it is agreed"
        )

    def _refusal_reason(self, first_day: int, earliest: int | None) -> str:
        days = self.limits.admission_days
        when = (
            f"the earliest date that would work is {self.calendar.date_of(earliest)}"
            if earliest is not None
            else "no date within the horizon has room"
        )
        start = self.calendar.date_of(first_day)
        return (
            f"large-image capacity from {start} for {days} day(s) is already "
            f"committed, so the request could not be answered within its "
            f"{self.limits.trt_seconds / 86_400:g}-day TRT; {when} "
            "(submit then, or ask for an agreed schedule)"
        )
