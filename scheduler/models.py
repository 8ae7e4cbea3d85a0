"""The JSON API's messages (pydantic): what a User sends and what it gets back."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: An EUI-64 as DUIS writes it.
EuiText = Annotated[
    str,
    Field(
        pattern=r"^[0-9A-Fa-f]{2}([-:]?[0-9A-Fa-f]{2}){7}$",
        examples=["00-DB-12-00-00-00-00-01"],
    ),
]
#: Limits of the API's numbers, declared in /openapi.json and enforced by api.py.
#: The largest request, schedule or notification id (SQLite's are 64-bit).
MAX_ID = 2**62
#: GET /v1/requests: `offset` and `limit`.
MAX_OFFSET = 10**9
MAX_PAGE = 1_000
#: GET /v1/capacity: `days`, and how far from today (either way) `from` may be.
MAX_CAPACITY_DAYS = 366
CAPACITY_REACH_DAYS = 3_660
HexHash = Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{64}$", description="SHA-256, 64 hex")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Health(BaseModel):
    status: Literal["ok", "unhealthy"]
    #: Why not ok (a DCO that cannot be reached); absent when ok.
    reason: str | None = None
    #: The distributed scheduler's clock: the speed in force and how it is chosen.
    clock: dict[str, Any] | None = None


class ErrorOut(BaseModel):
    error: str
    code: str
    field: str | None = None
    earliest_date: str | None = None


class ImageIn(_In):
    """SRV 11.1: store an image at the DCO."""

    image_base64: str = Field(description="the whole OTA upgrade file, base64")
    firmware_version: str | None = Field(None, pattern=r"^[0-9A-Fa-f]{8}$")
    device_ids: list[EuiText] = Field(default_factory=list, max_length=100_000)


class ImageOut(BaseModel):
    firmware_hash: str
    size_bytes: int
    large: bool
    file_version: str
    blocks: int


class ActivationIn(_In):
    """SRV 11.3 for each listed device."""

    firmware_hash: HexHash
    device_ids: list[EuiText] = Field(min_length=1, max_length=100_000)
    priority: Literal["routine", "security"] = "routine"
    schedule_id: int | None = Field(None, ge=1, le=MAX_ID)
    execution_time: datetime | None = None
    campaign: str | None = Field(None, max_length=100)


class ActivationOut(BaseModel):
    accepted: int
    held: int
    refused: int
    request_ids: list[int]
    planned: dict[str, int] = Field(description="date → devices planned for release")
    held_reason: str | None = None
    reason: str | None = None
    earliest_date: str | None = None
    #: Pending requests withdrawn (an execution_time 100 years ahead, as DUIS's
    #: 3000-01-01, cancels).
    cancelled: int = 0
    #: Released requests whose cancellation was sent on to the DCO and the device.
    cancelling: int = 0


class ReadIn(_In):
    """SRV 11.2."""

    device_id: EuiText


class ReadOut(BaseModel):
    device_id: str
    ok: bool
    running_version: str
    pending_version: str | None
    state: str
    reason: str


class ScheduleIn(_In):
    devices: int = Field(gt=0, le=1_000_000)
    #: The Service Desk may ask on behalf of a User.
    user: EuiText | None = None
    start_date: date | None = None
    max_per_day: int | None = Field(None, gt=0, le=1_000_000)


class BatchOut(BaseModel):
    date: str
    devices: int
    attached: int
    released: int
    done: int
    failed: int
    trt_met: int
    trt_missed: int


class MoveOut(BaseModel):
    schedule_id: int
    date: str
    devices: int


class ScheduleOut(BaseModel):
    schedule_id: int
    user: str
    state: str
    devices: int
    assigned: int
    moves: int
    batches: list[BatchOut]
    #: For a proposal: other Users' batches that accepting it would move.
    would_move: list[MoveOut] = []


class RequestOut(BaseModel):
    request_id: int
    campaign: str
    device_id: str
    state: str
    priority: str
    large: bool
    planned_date: str | None
    schedule_id: int | None
    submitted_at: float
    released_at: float | None
    completed_at: float | None
    trt_met: bool | None
    overdue: bool
    failure: str | None
    held_reason: str | None
    duis_request_id: str | None


class RequestList(BaseModel):
    requests: list[RequestOut]
    total: int


class CapacityDay(BaseModel):
    date: str
    capacity: int
    scheduled: int
    unscheduled: int
    released: int
    free: int


class NotificationOut(BaseModel):
    id: int
    at: float
    kind: str
    payload: dict[str, Any]


class DuisAck(BaseModel):
    """Shape of the DUIS acknowledgement, for the OpenAPI document (the wire is XML)."""

    request_id: str
    response_code: str
