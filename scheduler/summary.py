"""What the DCC side knows of a run, as the JSON summary: every request's outcome, per
day, per User, per campaign. `smets1 run` and the scheduler role both write it, and the
scheduler role's status document carries it across to the distributed launcher, so it is
a typed document (`SchedulerSummary`), its fields in the order the JSON shows them."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Mapping

from pydantic import BaseModel

from scheduler.models import BatchOut
from scheduler.requests import ActivationRequest, Priority, RequestState, UpdateState
from scheduler.service import Scheduler
from smets1.eui64 import format_eui64
from smets1.image import parse_image


class ImageSummary(BaseModel):
    name: str
    size_bytes: int
    firmware_hash: str


class CampaignSummary(BaseModel):
    name: str
    user: str
    devices: int
    large: bool
    activated: int
    held: int
    refused: int
    released_per_day: dict[str, int]
    trt_met: int
    trt_missed: int


class RefusalSummary(BaseModel):
    campaign: str
    devices: int
    reason: str
    earliest_date: str | None


class ScheduleSummary(BaseModel):
    schedule_id: int
    state: str
    devices: int
    moves: int
    batches: list[BatchOut]


class UserSummary(BaseModel):
    requests: int
    large_released_per_day: dict[str, int]
    activated: int
    failed: int
    trt_met: int
    trt_missed: int
    held_for_schedule: int
    held_reason: str | None
    security: int
    refused: list[RefusalSummary]
    schedules: list[ScheduleSummary]


class UpdateSummary(BaseModel):
    """SRV 11.1 requests: answered when the DCO has stored the image."""

    requests: int
    stored: int
    failed: int
    #: Not yet stored when the summary was taken.
    processing: int
    #: Still not stored seven days (`stale_after_seconds`) after acceptance.
    overdue: int
    #: The longest from acceptance to the DCO's answer, of those answered.
    longest_seconds: float


class ActivationTimes(BaseModel):
    """How long the 11.3s that activated took, release to answer (simulated seconds), and
    a digest of every request's outcome: two runs of one config (in process, distributed)
    compare on these (orchestrator.compare)."""

    count: int
    p50_seconds: float | None
    p95_seconds: float | None
    max_seconds: float | None
    #: SHA-256 of every request's "device state failure" line, sorted: equal digests,
    #: the same devices with the same outcomes.
    outcomes_sha256: str


def activation_times(requests: Iterable[ActivationRequest]) -> ActivationTimes:
    reqs = list(requests)
    took = sorted(
        r.completed_at - r.released_at
        for r in reqs
        if r.state is RequestState.DONE and r.completed_at is not None and r.released_at
    )
    lines = sorted(f"{format_eui64(r.device_id)} {r.state.value} {r.failure or '-'}" for r in reqs)
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()

    def q(fraction: float) -> float | None:
        # Nearest rank: the value below which `fraction` of the durations lie.
        if not took:
            return None
        return round(took[min(len(took) - 1, max(0, math.ceil(fraction * len(took)) - 1))], 3)

    return ActivationTimes(
        count=len(took),
        p50_seconds=q(0.5),
        p95_seconds=q(0.95),
        max_seconds=round(took[-1], 3) if took else None,
        outcomes_sha256=digest,
    )


class SchedulerSummary(BaseModel):
    """The DCC side's summary of a run (the keys `smets1 run`'s summary.json starts with)."""

    config: str
    seed: int
    devices: int
    requests: int
    images_activated: int
    #: Failed requests by reason.
    failed: dict[str, int]
    #: Released or waiting for their day: not answered when the summary was taken.
    unfinished: int
    simulated_seconds: float
    simulated_days: float
    large_images_released_per_day: dict[str, int]
    max_large_images_released_in_a_day: int
    large_images_per_day: int
    trt_met: int
    trt_missed: int
    images: list[ImageSummary]
    held_for_schedule: int
    refused: int
    #: 11.3s still open seven days after submission.
    overdue: int
    #: 11.1s the DCO had still not stored seven days after acceptance (MP230: a
    #: Supplier's process fails then).
    overdue_11_1: int
    image_updates: UpdateSummary
    #: The 11.3s that activated: how long they took; every request's outcome (digest).
    activations: ActivationTimes
    campaigns: list[CampaignSummary]
    #: By User (EUI-64 text).
    users: dict[str, UserSummary]


def summarize(
    scheduler: Scheduler,
    *,
    name: str,
    seed: int,
    devices: int,
    simulated_seconds: float,
    images: Mapping[str, bytes],
) -> SchedulerSummary:
    """The run summary of `scheduler`'s requests; `images` are the run's OTA files by name."""
    reqs = scheduler.requests
    failed = Counter(r.failure or "unknown" for r in reqs if r.state is RequestState.FAILED)
    per_day = _dated(scheduler, scheduler.calendar.released_per_day().items())
    trt = Counter(r.trt_met for r in reqs)
    states = Counter(r.state for r in reqs)
    return SchedulerSummary(
        config=name,
        seed=seed,
        devices=devices,
        requests=len(reqs),
        images_activated=states[RequestState.DONE],
        failed=dict(sorted(failed.items())),
        unfinished=states[RequestState.WAITING] + states[RequestState.RELEASED],
        simulated_seconds=round(simulated_seconds, 3),
        simulated_days=round(simulated_seconds / 86_400, 4),
        large_images_released_per_day=per_day,
        max_large_images_released_in_a_day=max(per_day.values(), default=0),
        large_images_per_day=scheduler.config.large_images_per_day,
        trt_met=trt[True],
        trt_missed=trt[False],
        images=[
            ImageSummary(
                name=image_name,
                size_bytes=len(data),
                firmware_hash=parse_image(data).firmware_hash.hex(),
            )
            for image_name, data in images.items()
        ],
        held_for_schedule=states[RequestState.HELD],
        refused=sum(r.devices for r in scheduler.refusals),
        overdue=sum(1 for r in reqs if r.overdue),
        overdue_11_1=scheduler.overdue_11_1_count,
        image_updates=_updates(scheduler),
        activations=activation_times(reqs),
        campaigns=[
            CampaignSummary(
                name=c.name,
                user=format_eui64(c.user),
                devices=len(c.requests),
                large=c.large,
                activated=sum(1 for r in c.requests if r.state is RequestState.DONE),
                held=sum(1 for r in c.requests if r.state is RequestState.HELD),
                refused=sum(f.devices for f in scheduler.refusals if f.campaign == c.name),
                released_per_day=_released_per_day(scheduler, c.requests),
                trt_met=sum(1 for r in c.requests if r.trt_met is True),
                trt_missed=sum(1 for r in c.requests if r.trt_met is False),
            )
            for c in scheduler.campaigns.values()
        ],
        users=_per_user(scheduler),
    )


def _updates(scheduler: Scheduler) -> UpdateSummary:
    updates = scheduler.image_updates
    states = Counter(u.state for u in updates)
    return UpdateSummary(
        requests=len(updates),
        stored=states[UpdateState.STORED],
        failed=states[UpdateState.FAILED],
        processing=states[UpdateState.PROCESSING],
        overdue=sum(1 for u in updates if u.overdue),
        longest_seconds=round(max((u.processing_seconds or 0.0 for u in updates), default=0.0), 3),
    )


def _dated(scheduler: Scheduler, per_day: Iterable[tuple[int, int]]) -> dict[str, int]:
    """Day index → count, as ISO date → count in day order, without empty days."""
    return {scheduler.date_of(d) or "": n for d, n in sorted(per_day) if n}


def _released_per_day(
    scheduler: Scheduler, reqs: Iterable[ActivationRequest], large_only: bool = False
) -> dict[str, int]:
    released: Counter[int] = Counter(
        scheduler.calendar.day_of(r.released_at)
        for r in reqs
        if r.released_at is not None and (r.large or not large_only)
    )
    return _dated(scheduler, released.items())


def _per_user(scheduler: Scheduler) -> dict[str, UserSummary]:
    """Per User: released per day, TRT met and missed, held, refused with reason, and
    each agreed schedule's batches."""
    out: dict[str, UserSummary] = {}
    users = sorted({r.user for r in scheduler.requests} | {f.user for f in scheduler.refusals})
    for user in users:
        reqs = scheduler.requests_of(user)
        states = Counter(r.state for r in reqs)
        out[format_eui64(user)] = UserSummary(
            requests=len(reqs),
            large_released_per_day=_released_per_day(scheduler, reqs, large_only=True),
            activated=states[RequestState.DONE],
            failed=states[RequestState.FAILED],
            trt_met=sum(1 for r in reqs if r.trt_met is True),
            trt_missed=sum(1 for r in reqs if r.trt_met is False),
            held_for_schedule=states[RequestState.HELD],
            held_reason=next(
                (scheduler.held_reason(r) for r in reqs if r.state is RequestState.HELD), None
            ),
            security=sum(1 for r in reqs if r.priority is Priority.SECURITY),
            refused=[
                RefusalSummary(
                    campaign=f.campaign,
                    devices=f.devices,
                    reason=f.reason,
                    earliest_date=scheduler.date_of(f.earliest_day),
                )
                for f in scheduler.refusals
                if f.user == user
            ],
            schedules=[
                ScheduleSummary(
                    schedule_id=s.schedule_id,
                    state=s.state.value,
                    devices=s.devices,
                    moves=s.moves,
                    batches=scheduler.batch_status(s),
                )
                for s in scheduler.schedules_of(user)
            ],
        )
    return out
