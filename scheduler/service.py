"""The DCC side: takes Users' firmware requests, applies MP230, releases work to the DCO.

Build one with a DcoApi, a clock, the scheduler config and a state directory, inside
the event loop of that clock (`clock.run(main())`, or any loop for a Real/ScaledClock)::

    scheduler = Scheduler(
        clock,                      # smets1.clock: VirtualClock, ScaledClock or RealClock
        dco,                        # any smets1.services.DcoApi (in process, or over HTTP)
        config.scheduler,           # smets1.config_dcc.SchedulerConfig (its `users` too)
        state_dir=Path("state"),    # scheduler.sqlite lives here; None keeps it in memory
        devices=known_device_ids,   # a set of EUI-64 ints; None accepts any device
        suppliers=supplier_of,      # device id -> the User supplying it (None: anyone)
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

`Scheduler` is the facade: it builds the parts, rebuilds their state on a restart, and
hands each call to the part that holds it. The parts, and what each holds:

* `book.RequestBook`: every request, by id and User, counts by state and TRT, idleness;
* `intake.Intake`: 11.1 images, 11.2 reads, 11.3 submissions and cancellations,
  campaigns, refusals;
* `updates.ImageUpdates`: each 11.1 from acceptance until the DCO has stored its image
  (answered then, not at once; overdue past seven days);
* `schedules.Schedules`: agreed schedules and the requests attached to their batches;
* `moves.SecurityMoves`: a security fix taking the place of routine work;
* `release_queue.ReleaseQueue`: waiting work in release order;
* `release.Releaser`: the paced release loop and each released 11.3 until its answer;
* `sweep.OverdueSweep`: open requests past seven days;
* `views.Views`: read-only views; `calendar.Calendar`: capacity and bookings per day.

Which rules those parts apply is the release policy (`release_policy.ReleasePolicy`,
carried in `policy.Limits.policy`): MP230's by default; intake and the release loop ask
it where another kind (no_limit, equal_share) decides otherwise.

Each part is handed the parts it calls when it is built, and changes another part's
state only through these methods (requests and schedules themselves are shared records):

    Intake         → Schedules.for_actor/batch_day/assign/detach, SecurityMoves.place,
                     RequestBook.add/activate/finish/set_state/settle,
                     ReleaseQueue.enqueue/dequeue/wake, Releaser.release, OverdueSweep.track
    Schedules      → RequestBook.held_of/set_state/activate,
                     ReleaseQueue.attached_to/enqueue/dequeue/wake
    SecurityMoves  → ReleaseQueue.routine_on/dequeue/enqueue, Schedules.move_device
    Releaser       → ReleaseQueue.open_days/due_count/next_day/pick/rearm/woken,
                     RequestBook.set_state/count_trt/finish
    ImageUpdates   → Intake.store_image (the DCO call), OverdueSweep.track_update
    OverdueSweep   → RequestBook.mark_overdue
    Views          → RequestBook, Calendar (reading only)

and all of them book, reserve and record releases on the Calendar through its methods.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

from scheduler.book import RequestBook
from scheduler.calendar import Calendar
from scheduler.duis_security import DuisSecurity
from scheduler.intake import Campaign, Intake, Submission
from scheduler.models import BatchOut, CapacityDay
from scheduler.moves import SecurityMoves
from scheduler.notify import Notifier
from scheduler.policy import Limits, Proposal
from scheduler.release import Releaser, response_payload
from scheduler.release_queue import ReleaseQueue
from scheduler.requests import (
    ActivationRequest,
    ImageUpdate,
    Priority,
    Refusal,
    RequestState,
    Schedule,
)
from scheduler.schedules import Schedules
from scheduler.store import Store
from scheduler.sweep import OverdueSweep
from scheduler.tasks import TaskSet
from scheduler.updates import ImageUpdates
from scheduler.users import user_for_token
from scheduler.views import Views
from smets1.clock import Clock
from smets1.config_dcc import SchedulerConfig, UserConfig
from smets1.histogram import Buckets
from smets1.services import DcoApi, StoredImage, VersionReading

__all__ = ["Campaign", "Scheduler", "Submission"]

#: Requests whose planned day counts against capacity and the User's allowance.
COMMITTED_STATES = frozenset(
    {RequestState.WAITING, RequestState.RELEASED, RequestState.DONE, RequestState.FAILED}
)


class Scheduler:
    def __init__(
        self,
        clock: Clock,
        dco: DcoApi,
        config: SchedulerConfig,
        state_dir: Path | None = None,
        devices: Collection[int] | None = None,
        users: Iterable[UserConfig] = (),
        suppliers: Callable[[int], int | None] | None = None,
        background_weights: Sequence[float] | None = None,
    ) -> None:
        self.clock = clock
        self.dco = dco
        self.config = config
        # background_weights: the fleet's background profile, which the spare_capacity
        # policy releases around (release_policy.py).
        self.limits = Limits.from_config(config, background_weights)
        self.devices = devices
        self.users: dict[int, UserConfig] = {u.id: u for u in (*config.users, *users)}
        self.calendar = Calendar(
            clock.epoch,
            config.large_images_per_day,
            [(w.start_hour, w.end_hour) for w in config.peak_windows],
            config.peak_timezone,
        )
        self.store = Store(state_dir)
        self.duis_security = DuisSecurity(config, self.users, self.store)
        self.notifier = Notifier(
            clock, self.store, self.users, config.callback_retry_seconds, config.callback_attempts
        )
        cal, limits, store, notifier = self.calendar, self.limits, self.store, self.notifier
        # Built in dependency order; each part gets only the parts it calls.
        self._tasks = tasks = TaskSet()
        self._book = book = RequestBook(limits.trt_seconds)
        self._queue = queue = ReleaseQueue()
        self._schedules = schedules = Schedules(
            clock=clock,
            limits=limits,
            calendar=cal,
            store=store,
            notifier=notifier,
            users=self.users,
            book=book,
            queue=queue,
        )
        self._releaser = releaser = Releaser(
            clock=clock,
            dco=dco,
            limits=limits,
            calendar=cal,
            store=store,
            notifier=notifier,
            book=book,
            queue=queue,
            tasks=tasks,
        )
        self._sweep = sweep = OverdueSweep(
            clock=clock, limits=limits, store=store, notifier=notifier, book=book
        )
        self._moves = moves = SecurityMoves(
            limits=limits,
            calendar=cal,
            store=store,
            notifier=notifier,
            queue=queue,
            schedules=schedules,
        )
        self._intake = Intake(
            clock=clock,
            dco=dco,
            limits=limits,
            calendar=cal,
            store=store,
            notifier=notifier,
            users=self.users,
            devices=devices,
            supplier_of=suppliers,
            book=book,
            queue=queue,
            schedules=schedules,
            moves=moves,
            releaser=releaser,
            sweep=sweep,
            tasks=tasks,
        )
        self._updates = ImageUpdates(
            clock=clock,
            store=store,
            notifier=notifier,
            users=self.users,
            sweep=sweep,
            tasks=tasks,
            store_image=self._intake.store_image,
            images=self._intake.images,
        )
        self._views = Views(calendar=cal, book=book)
        # The parts' own collections, under the names the API, runner and tests read.
        self.requests: list[ActivationRequest] = book.requests
        self.state_counts: Counter[RequestState] = book.state_counts
        self.trt_counts: Counter[bool] = book.trt_counts
        #: Release to answer (simulated seconds, the TRT a bucket edge), and failures by
        #: reason, of the requests answered: for /metrics and the dashboard.
        self.answer_seconds: Buckets = book.answer_seconds
        self.failures: Counter[str] = book.failures
        self.schedules: dict[int, Schedule] = self._schedules.schedules
        self.refusals: list[Refusal] = self._intake.refusals
        self.images: dict[bytes, StoredImage] = self._intake.images
        self.campaigns: dict[str, Campaign] = self._intake.campaigns
        #: SRV 11.1 requests, in order of acceptance.
        self.image_updates: list[ImageUpdate] = self._updates.updates
        self._load()

    @property
    def overdue_count(self) -> int:
        return self._book.overdue_count

    @property
    def overdue_11_1_count(self) -> int:
        """11.1s the DCO had still not stored seven days after they were accepted."""
        return self._updates.overdue_count

    @property
    def dco_errors(self) -> int:
        """DCO calls that raised instead of answering (released 11.3s and cancellations)."""
        return self._releaser.dco_errors + self._intake.dco_errors

    @property
    def releases_held(self) -> tuple[int, float]:
        """Times the release loop held its releases for want of room at the DCO, and
        how long in all (simulated seconds)."""
        return self._releaser.releases_held, self._releaser.releases_held_seconds

    # -- restart ---------------------------------------------------------------------

    def _load(self) -> None:
        for s in self.store.load_schedules():
            self._schedules.restore(s)
        for r in self.store.load_requests():
            self._book.add(r)
            self._intake.restore_campaign(r)
            if r.large and r.released_at is not None:
                self.calendar.record_release(self.calendar.day_of(r.released_at), r.user)
            # HELD and CANCELLED requests hold no capacity and none of the allowance.
            if r.large and r.planned_day is not None and r.state in COMMITTED_STATES:
                if r.schedule_id is None:
                    self.calendar.book(r.planned_day, r.user)
                else:
                    self._schedules.restore_attached(r.schedule_id, r.planned_day)
            if r.state is RequestState.WAITING:
                self._book.activate()
                self._queue.enqueue(r)
            elif r.state is RequestState.RELEASED:
                self._book.activate()
                self._releaser.resume_later(r)
            if r.is_open:
                self._sweep.track(r)
        for u in self.store.load_updates():
            self._updates.restore(u)
        self._book.settle()

    # -- running ---------------------------------------------------------------------

    async def run(self, deliver_callbacks: bool = True) -> None:
        """Release, sweep for overdue requests and deliver callbacks, until cancelled.

        `deliver_callbacks=False` keeps notifications in the store (for polling) and POSTs
        none: `smets1 run` uses it, because on a virtual clock's loop an HTTP timeout
        would expire at once while the socket waits in real time.
        """
        self._releaser.resume()
        self._updates.resume()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._releaser.run())
            tg.create_task(self._sweep.run())
            if deliver_callbacks:
                tg.create_task(self.notifier.run())

    async def wait_idle(self) -> None:
        """Until every accepted request not held for a schedule has its final answer."""
        await self._book.wait_idle()

    async def close(self) -> None:
        await self._tasks.cancel_all()
        self.store.close()

    # -- Users -----------------------------------------------------------------------

    def user_for_token(self, token: str) -> UserConfig | None:
        return user_for_token(self.users, token)

    # -- SRV 11.1 and 11.2 -----------------------------------------------------------

    async def store_image(self, user: int, image: bytes) -> StoredImage:
        """11.1 (the JSON API, config campaigns): accepted, then answered when the DCO has
        stored the image's blocks, after its processing time; not limited by MP230 (no
        device traffic). Raises DcoFailed if the DCO could not store it."""
        update = self._updates.submit(user, image)
        return await self._updates.result(update)

    def update_firmware_later(
        self, user: int, image: bytes, duis_request_id: str, device_ids: Iterable[int] = ()
    ) -> ImageUpdate:
        """11.1 from DUIS: acknowledged now; the response (a `response` notification) is
        posted when the DCO reports the image stored (updates.py); a failure names the
        request's `device_ids` (DUIS reports it as a FirmwareDistributionFailure alert)."""
        return self._updates.submit(user, image, duis_request_id, device_ids)

    async def read_version(self, user: int, device_id: int) -> VersionReading:
        """11.2: read at once, through the DCO."""
        return await self._intake.read_version(user, device_id)

    def read_version_later(self, user: int, device_id: int, duis_request_id: str) -> None:
        """11.2 from DUIS: acknowledged now; the response is delivered when the DCO answers."""
        self._intake.read_version_later(user, device_id, duis_request_id)

    def check_devices(self, device_ids: Iterable[int], actor: int | None = None) -> None:
        self._intake.check_devices(device_ids, actor)

    # -- SRV 11.3 --------------------------------------------------------------------

    def is_large(self, image: StoredImage) -> bool:
        return self._intake.is_large(image)

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
        return self._intake.submit_activations(
            user,
            firmware_hash,
            device_ids,
            campaign=campaign,
            priority=priority,
            schedule_id=schedule_id,
            execution_time=execution_time,
            duis_request_ids=duis_request_ids,
            all_or_nothing=all_or_nothing,
        )

    def record_refusal(
        self, user: int, campaign: str, devices: int, reason: str, earliest_day: int | None
    ) -> Refusal:
        """Keep, and tell the User, that work was refused at submission and why."""
        return self._intake.record_refusal(user, campaign, devices, reason, earliest_day)

    def held_reason(self, req: ActivationRequest) -> str | None:
        """Why a HELD request waits (rendered on demand: a request keeps only the day)."""
        return self._intake.held_reason(req)

    def held_count(self, user: int) -> int:
        """The User's HELD requests: the next schedule it agrees takes them on first."""
        return self._intake.held_count(user)

    # -- config campaigns, submitted once ---------------------------------------------

    def campaign_progress(self, name: str) -> tuple[int | None, bool]:
        """(schedule agreed for it, submitted) for a named campaign, from the store. A
        campaign whose requests or refusal are stored counts as submitted even if the
        process died before it could say so."""
        mark = self.store.campaign_mark(name)
        schedule_id, submitted = mark if mark is not None else (None, False)
        if not submitted:
            submitted = name in self.campaigns or any(r.campaign == name for r in self.refusals)
        return schedule_id, submitted

    def mark_campaign(
        self, name: str, user: int, schedule_id: int | None = None, submitted: bool = False
    ) -> None:
        self.store.mark_campaign(name, user, schedule_id, submitted)

    @staticmethod
    def response_payload(req: ActivationRequest) -> dict[str, Any]:
        return response_payload(req)

    # -- schedules -------------------------------------------------------------------

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
        return self._schedules.request(
            actor, devices, user=user, start_day=start_day, max_per_day=max_per_day
        )

    def accept_schedule(self, actor: int, schedule_id: int) -> Schedule:
        """Agree a proposal: its batches hold capacity; schedules it moves are told."""
        return self._schedules.accept(actor, schedule_id)

    def schedule(self, actor: int, schedule_id: int) -> Schedule:
        return self._schedules.for_actor(actor, schedule_id)

    # -- reading ---------------------------------------------------------------------

    def request(self, actor: int, request_id: int) -> ActivationRequest:
        return self._views.request(actor, request_id)

    def requests_of(self, user: int) -> list[ActivationRequest]:
        """The User's requests in submission order (the scheduler's own list: read only)."""
        return self._book.of_user(user)

    def schedules_of(self, user: int) -> list[Schedule]:
        return self._schedules.of_user(user)

    def batch_status(self, s: Schedule) -> list[BatchOut]:
        return self._views.batch_status(s)

    def capacity(self, first_day: int, days: int) -> list[CapacityDay]:
        return self._views.capacity(first_day, days)

    def date_of(self, day: int | None) -> str | None:
        return self.calendar.date_of(day)
