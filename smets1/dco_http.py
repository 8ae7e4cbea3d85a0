"""The DCO's HTTP API as data: routes and the pydantic documents of SRV 11.1, 11.3, 11.2.

Both sides use this module: `dco_mock.http_api` serves it, `orchestrator.dco_client`
calls it, so a field renamed on one side fails validation on the other with its name.

    POST /v1/images                      body: the OTA file (application/octet-stream)
                                         → 200 StoredImageDoc                     (SRV 11.1)
    POST /v1/activations                 ActivationRequestDoc
                                         → 200 ActivationOutcomeDoc, once the device
                                           answered                               (SRV 11.3)
    GET  /v1/devices/{device_id}/version → 200 VersionReadingDoc                  (SRV 11.2)
    GET  /health                         → 200 {"ok": true, ...} or 503 when lagging / offline
    GET  /metrics                        → Prometheus text

Errors answer an `ErrorDoc` with 400 (bad request, image rejected) or 404 (unknown
image). Device ids are EUI-64 text (`00-DB-12-...`), hashes are hex, states and reasons
their wire codes (so a code a newer DCO sends still decodes: smets1.codes).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from smets1.codes import DeviceState, Reason
from smets1.eui64 import format_eui64, parse_eui64
from smets1.services import ActivationOutcome, StoredImage, VersionReading

IMAGES_PATH = "/v1/images"
ACTIVATIONS_PATH = "/v1/activations"
VERSION_PATH = "/v1/devices/{device_id}/version"
HEALTH_PATH = "/health"
METRICS_PATH = "/metrics"

#: An EUI-64 as DUIS writes it, `00-DB-12-34-56-78-90-A0`.
EuiText = Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{2}(?:[-:]?[0-9A-Fa-f]{2}){7}$")]
#: A SHA-256 FirmwareHash, 64 hex digits.
HashHex = Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{64}$")]
U8 = Annotated[int, Field(ge=0, le=0xFF)]
U16 = Annotated[int, Field(ge=0, le=0xFFFF)]
U32 = Annotated[int, Field(ge=0, le=0xFFFF_FFFF)]
Count = Annotated[int, Field(ge=0)]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoredImageDoc(_Doc):
    """The 11.1 answer: the DCO holds every block of this image."""

    firmware_hash: HashHex
    size_bytes: Count
    file_version: U32
    manufacturer_code: U16
    image_type: U16
    blocks: Count
    stored_at: float

    @classmethod
    def of(cls, s: StoredImage) -> StoredImageDoc:
        return cls(
            firmware_hash=s.firmware_hash.hex(),
            size_bytes=s.size_bytes,
            file_version=s.file_version,
            manufacturer_code=s.manufacturer_code,
            image_type=s.image_type,
            blocks=s.blocks,
            stored_at=s.stored_at,
        )

    def to_stored_image(self) -> StoredImage:
        return StoredImage(
            firmware_hash=bytes.fromhex(self.firmware_hash),
            size_bytes=self.size_bytes,
            file_version=self.file_version,
            manufacturer_code=self.manufacturer_code,
            image_type=self.image_type,
            blocks=self.blocks,
            stored_at=self.stored_at,
        )


class ActivationRequestDoc(_Doc):
    """An 11.3 for one device: activate the image named by its FirmwareHash."""

    device_id: EuiText
    firmware_hash: HashHex
    #: Simulated Unix seconds; 0 is immediate, a century ahead cancels (smets1.wire).
    execution_time: float = 0.0

    @classmethod
    def of(
        cls, device_id: int, firmware_hash: bytes, execution_time: float
    ) -> ActivationRequestDoc:
        return cls(
            device_id=format_eui64(device_id),
            firmware_hash=firmware_hash.hex(),
            execution_time=execution_time,
        )

    @property
    def device(self) -> int:
        return parse_eui64(self.device_id)

    @property
    def hash_bytes(self) -> bytes:
        return bytes.fromhex(self.firmware_hash)


class ActivationOutcomeDoc(_Doc):
    """The 11.3 answer: the image went to the device and was (or was not) activated."""

    device_id: EuiText
    ok: bool
    state: U8
    reason: U8
    running_version: U32
    blocks_sent: Count
    bytes_sent: Count
    started_at: float
    finished_at: float
    rounds: Count

    @classmethod
    def of(cls, o: ActivationOutcome) -> ActivationOutcomeDoc:
        return cls(
            device_id=format_eui64(o.device_id),
            ok=o.ok,
            state=int(o.state),
            reason=int(o.reason),
            running_version=o.running_version,
            blocks_sent=o.blocks_sent,
            bytes_sent=o.bytes_sent,
            started_at=o.started_at,
            finished_at=o.finished_at,
            rounds=o.rounds,
        )

    def to_outcome(self) -> ActivationOutcome:
        return ActivationOutcome(
            device_id=parse_eui64(self.device_id),
            ok=self.ok,
            state=DeviceState(self.state),
            reason=Reason(self.reason),
            running_version=self.running_version,
            blocks_sent=self.blocks_sent,
            bytes_sent=self.bytes_sent,
            started_at=self.started_at,
            finished_at=self.finished_at,
            rounds=self.rounds,
        )


class VersionReadingDoc(_Doc):
    """The 11.2 answer."""

    device_id: EuiText
    ok: bool
    running_version: U32
    pending_version: U32 | None
    state: U8
    reason: U8
    read_at: float

    @classmethod
    def of(cls, r: VersionReading) -> VersionReadingDoc:
        return cls(
            device_id=format_eui64(r.device_id),
            ok=r.ok,
            running_version=r.running_version,
            pending_version=r.pending_version,
            state=int(r.state),
            reason=int(r.reason),
            read_at=r.read_at,
        )

    def to_reading(self) -> VersionReading:
        return VersionReading(
            device_id=parse_eui64(self.device_id),
            ok=self.ok,
            running_version=self.running_version,
            pending_version=self.pending_version,
            state=DeviceState(self.state),
            reason=Reason(self.reason),
            read_at=self.read_at,
        )


class ErrorDoc(_Doc):
    """What every refusal carries: a short code and a message naming what is wrong."""

    error: str
    message: str
