"""What the DCC side knows of a run, as the JSON summary: every request's outcome, per
day, per User, per campaign. `smets1 run` and the scheduler role both write it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from scheduler.requests import ActivationRequest, Priority, RequestState
from scheduler.service import Scheduler
from smets1.eui64 import format_eui64
from smets1.image import parse_image


def summarize(
    scheduler: Scheduler,
    *,
    name: str,
    seed: int,
    devices: int,
    simulated_seconds: float,
    images: Mapping[str, bytes],
) -> dict[str, Any]:
    """The run summary of `scheduler`'s requests; `images` are the run's OTA files by name."""
    reqs = scheduler.requests
    failed = Counter(r.failure or "unknown" for r in reqs if r.state is RequestState.FAILED)
    per_day = _dated(scheduler, scheduler.calendar.released_per_day().items())
    trt = Counter(r.trt_met for r in reqs)
    states = Counter(r.state for r in reqs)
    return {
        "config": name,
        "seed": seed,
        "devices": devices,
        "requests": len(reqs),
        "images_activated": states[RequestState.DONE],
        "failed": dict(sorted(failed.items())),
        # Released or waiting for their day: not answered when the summary was taken.
        "unfinished": states[RequestState.WAITING] + states[RequestState.RELEASED],
        "simulated_seconds": round(simulated_seconds, 3),
        "simulated_days": round(simulated_seconds / 86_400, 4),
        "large_images_released_per_day": per_day,
        "max_large_images_released_in_a_day": max(per_day.values(), default=0),
        "large_images_per_day": scheduler.config.large_images_per_day,
        "trt_met": trt[True],
        "trt_missed": trt[False],
        "images": [
            {
                "name": image_name,
                "size_bytes": len(data),
                "firmware_hash": parse_image(data).firmware_hash.hex(),
            }
            for image_name, data in images.items()
        ],
        "held_for_schedule": states[RequestState.HELD],
        "refused": sum(r.devices for r in scheduler.refusals),
        "overdue": sum(1 for r in reqs if r.overdue),
        "campaigns": [
            {
                "name": c.name,
                "user": format_eui64(c.user),
                "devices": len(c.requests),
                "large": c.large,
                "activated": sum(1 for r in c.requests if r.state is RequestState.DONE),
                "held": sum(1 for r in c.requests if r.state is RequestState.HELD),
                "refused": sum(f.devices for f in scheduler.refusals if f.campaign == c.name),
                "released_per_day": _released_per_day(scheduler, c.requests),
                "trt_met": sum(1 for r in c.requests if r.trt_met is True),
                "trt_missed": sum(1 for r in c.requests if r.trt_met is False),
            }
            for c in scheduler.campaigns.values()
        ],
        "users": _per_user(scheduler),
    }


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


def _per_user(scheduler: Scheduler) -> dict[str, Any]:
    """Per User: released per day, TRT met and missed, held, refused with reason, and
    each agreed schedule's batches."""
    out: dict[str, Any] = {}
    users = sorted({r.user for r in scheduler.requests} | {f.user for f in scheduler.refusals})
    for user in users:
        reqs = scheduler.requests_of(user)
        states = Counter(r.state for r in reqs)
        out[format_eui64(user)] = {
            "requests": len(reqs),
            "large_released_per_day": _released_per_day(scheduler, reqs, large_only=True),
            "activated": states[RequestState.DONE],
            "failed": states[RequestState.FAILED],
            "trt_met": sum(1 for r in reqs if r.trt_met is True),
            "trt_missed": sum(1 for r in reqs if r.trt_met is False),
            "held_for_schedule": states[RequestState.HELD],
            "held_reason": next(
                (scheduler.held_reason(r) for r in reqs if r.state is RequestState.HELD), None
            ),
            "security": sum(1 for r in reqs if r.priority is Priority.SECURITY),
            "refused": [
                {
                    "campaign": f.campaign,
                    "devices": f.devices,
                    "reason": f.reason,
                    "earliest_date": scheduler.date_of(f.earliest_day),
                }
                for f in scheduler.refusals
                if f.user == user
            ],
            "schedules": [
                {
                    "schedule_id": s.schedule_id,
                    "state": s.state.value,
                    "devices": s.devices,
                    "moves": s.moves,
                    "batches": scheduler.batch_status(s),
                }
                for s in scheduler.schedules_of(user)
            ],
        }
    return out
