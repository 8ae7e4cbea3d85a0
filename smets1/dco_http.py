"""The DCO's HTTP API as data: routes and the documents of SRV 11.1, 11.3 and 11.2.

Both sides use this module: `dco_mock.http_api` serves it, `orchestrator.dco_client`
calls it. The documents are the `smets1.services` dataclasses themselves, validated and
written by pydantic (`TypeAdapter`), so a field renamed on one side fails validation on
the other with its name, and nothing converts by hand.

    POST /v1/images                      body: the OTA file (application/octet-stream)
                                         → 200 StoredImage                        (SRV 11.1)
    POST /v1/activations                 ActivationOrder
                                         → 200 ActivationOutcome, once the device
                                           answered                               (SRV 11.3)
    GET  /v1/devices/{device_id}/version → 200 VersionReading                     (SRV 11.2)
    GET  /health                         → 200 {"ok": true, ...} or 503 when lagging / offline
    GET  /metrics                        → Prometheus text

Errors answer an `ErrorDoc` with 400 (bad request, image rejected) or 404 (unknown
image). Device ids are EUI-64 text (`00-DB-12-...`), hashes are hex, states and reasons
their wire codes (so a code a newer DCO sends still decodes: smets1.codes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import TypeAdapter, ValidationError

from smets1.services import (
    ActivationOutcome,
    DeviceId,
    FirmwareHash,
    StoredImage,
    VersionReading,
)

IMAGES_PATH = "/v1/images"
ACTIVATIONS_PATH = "/v1/activations"
VERSION_PATH = "/v1/devices/{device_id}/version"
HEALTH_PATH = "/health"
METRICS_PATH = "/metrics"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ActivationOrder:
    """An 11.3 for one device: activate the image named by its FirmwareHash."""

    device_id: DeviceId
    firmware_hash: FirmwareHash
    #: Simulated Unix seconds; 0 is immediate, a century ahead cancels (smets1.wire).
    execution_time: float = 0.0
    #: The User whose 11.3 this is (EUI-64); none: the request is nobody's in particular.
    originator: DeviceId | None = None


@dataclass(frozen=True, slots=True)
class ErrorDoc:
    """What every refusal carries: a short code and a message naming what is wrong."""

    error: str
    message: str


class Document(Generic[T]):
    """One document type of the API: JSON bytes in and out, errors naming the field."""

    def __init__(self, kind: type[T]) -> None:
        self._adapter = TypeAdapter(kind)

    def to_json(self, value: T) -> bytes:
        return self._adapter.dump_json(value)

    def from_json(self, data: bytes | str) -> T:
        """The document in `data`; ValueError naming the first field that is wrong."""
        try:
            return self._adapter.validate_json(data)
        except ValidationError as exc:
            raise ValueError(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """The first problem of a validation error as `field: what is wrong`."""
    err: Any = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    return f"{where}: {err['msg']}"


STORED_IMAGE = Document(StoredImage)
ACTIVATION_ORDER = Document(ActivationOrder)
ACTIVATION_OUTCOME = Document(ActivationOutcome)
VERSION_READING = Document(VersionReading)
ERROR = Document(ErrorDoc)
