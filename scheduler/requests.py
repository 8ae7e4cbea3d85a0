"""Service requests as the scheduler tracks them, one per device per 11.3."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from smets1.services import ActivationOutcome, VersionReading

#: Target response time: five days from the release of a batch to the device's answer.
TRT_SECONDS = 5 * 86_400.0


class RequestState(enum.Enum):
    WAITING = "waiting"  # accepted, not yet released onto the DCC system
    RELEASED = "released"  # sent to the DCO; transfer and activation under way
    DONE = "done"  # the device answered: activated, and 11.2 read the new version
    FAILED = "failed"  # the device or the DCO answered with a failure


@dataclass(slots=True)
class ActivationRequest:
    request_id: int
    user: int
    campaign: str
    device_id: int
    firmware_hash: bytes
    file_version: int
    large: bool
    submitted_at: float
    state: RequestState = RequestState.WAITING
    released_at: float | None = None
    completed_at: float | None = None
    outcome: ActivationOutcome | None = None
    reading: VersionReading | None = None
    failure: str | None = None

    @property
    def trt_met(self) -> bool | None:
        if self.released_at is None or self.completed_at is None:
            return None
        return self.completed_at - self.released_at <= TRT_SECONDS
