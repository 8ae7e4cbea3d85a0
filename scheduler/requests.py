"""What the scheduler tracks: one activation request per device per 11.3, and schedules.

A request lives through these states::

    WAITING ──release──▶ RELEASED ──answer──▶ DONE | FAILED
    HELD ──schedule accepted──▶ WAITING
    WAITING | HELD ──11.3 with a far-future ExecutionDateTime──▶ CANCELLED
    RELEASED ──that 11.3, and the device cancels its pending activation──▶ CANCELLED

A refused request is never a request: it is a `Refusal`, kept for the User to read.

An 11.1 is an `ImageUpdate` (updates.py): PROCESSING until the DCO reports the image
STORED (or FAILED).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class RequestState(enum.Enum):
    WAITING = "waiting"  # accepted and planned on a day; not yet released
    HELD = "held"  # over the User's daily allowance: waits for an agreed schedule
    RELEASED = "released"  # sent to the DCO; transfer and activation under way
    DONE = "done"  # the device answered: activated, and 11.2 read the new version
    FAILED = "failed"  # the device or the DCO answered with a failure
    CANCELLED = "cancelled"  # withdrawn by an 11.3 with a far-future ExecutionDateTime


OPEN_STATES = frozenset({RequestState.WAITING, RequestState.HELD, RequestState.RELEASED})


class Priority(enum.Enum):
    ROUTINE = "routine"
    SECURITY = "security"  # released first; may move routine work, never a schedule silently


@dataclass(slots=True, eq=False)
class ActivationRequest:
    request_id: int
    user: int
    campaign: str
    device_id: int
    firmware_hash: bytes
    file_version: int
    large: bool
    submitted_at: float
    priority: Priority = Priority.ROUTINE
    #: 11.3 ExecutionDateTime; 0 is immediate.
    execution_time: float = 0.0
    schedule_id: int | None = None
    #: Day index (from the clock's epoch) on which it is to be released.
    planned_day: int | None = None
    state: RequestState = RequestState.WAITING
    #: HELD: the day the User's unscheduled allowance ran out (the reason is rendered
    #: from it on demand: `Scheduler.held_reason`).
    held_day: int | None = None
    released_at: float | None = None
    completed_at: float | None = None
    failure: str | None = None
    #: Still open `stale_after_seconds` after submission: the User's system fails it.
    overdue: bool = False
    trt_met: bool | None = None
    #: The DUIS RequestID, when the request came as a DUIS document.
    duis_request_id: str | None = None
    #: What 11.2 read after the activation (None: not read).
    running_version: int | None = None

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES


class ScheduleState(enum.Enum):
    PROPOSED = "proposed"  # batches offered; capacity not yet held
    AGREED = "agreed"  # accepted: its batches hold capacity and are released day by day


@dataclass(slots=True, eq=False)
class Schedule:
    schedule_id: int
    user: int
    devices: int
    created_at: float
    state: ScheduleState = ScheduleState.PROPOSED
    #: Day index → devices released that day.
    batches: dict[int, int] = field(default_factory=dict)
    max_per_day: int | None = None
    start_day: int = 0
    #: Devices attached so far (requests that point at this schedule).
    assigned: int = 0
    #: How often another User's schedule or a security fix moved this one.
    moves: int = 0


@dataclass(frozen=True, slots=True)
class Refusal:
    """Work refused at submission, with why and the first day it would fit."""

    user: int
    campaign: str
    devices: int
    reason: str
    earliest_day: int | None
    at: float


class UpdateState(enum.Enum):
    PROCESSING = "processing"  # accepted; the DCO has not yet reported it stored
    STORED = "stored"  # the DCO holds every block: answered I0
    FAILED = "failed"  # the DCO could not store it: answered E99


@dataclass(slots=True, eq=False)
class ImageUpdate:
    """One SRV 11.1."""

    update_id: int
    user: int
    size_bytes: int
    #: The FirmwareHash and file version of the image (read from it on acceptance).
    firmware_hash: bytes
    file_version: int
    submitted_at: float
    duis_request_id: str | None = None
    state: UpdateState = UpdateState.PROCESSING
    stored_at: float | None = None
    failure: str | None = None
    #: Still processing `stale_after_seconds` after acceptance: Users' systems fail it.
    overdue: bool = False

    @property
    def is_open(self) -> bool:
        return self.state is UpdateState.PROCESSING

    @property
    def processing_seconds(self) -> float | None:
        """From acceptance to the DCO's answer (None while processing)."""
        return None if self.stored_at is None else self.stored_at - self.submitted_at
