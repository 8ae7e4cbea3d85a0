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

Every route but /health and /metrics wants `Authorization: Bearer <token>`, the token the
scheduler and the DCO share (`dco.token` in the config, or SMETS1_DCO_TOKEN); a missing or
wrong one gets 401. /health and /metrics stay open: Kubernetes probes and Prometheus
scrape them without credentials, and they carry counters only, never an order.

The DCO serves a bounded number of requests at once (`dco.http_max_in_flight`, and fewer
if its file descriptors would not stretch that far: `in_flight_limit`); a request beyond
it gets 503 with `Retry-After` (seconds) and its connection closed, and the client sends
it again after that long.
"""

from __future__ import annotations

import re
import resource
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import TypeAdapter, ValidationError

from smets1.errors import ConfigError
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
#: Served without the token: probes and scrapers hold no credential.
PUBLIC_PATHS = frozenset({HEALTH_PATH, METRICS_PATH})

#: Overrides `dco.token` of the config, so that Kubernetes can take it from a Secret.
TOKEN_ENV = "SMETS1_DCO_TOKEN"
#: What a token may hold: visible ASCII, as an HTTP header carries it unchanged.
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")

#: What a busy DCO asks the client to wait before sending again, seconds.
RETRY_AFTER_SECONDS = 1
#: File descriptors a process keeps for what is not an HTTP connection (its listening
#: socket, the broker, SQLite, logs, the interpreter's own).
RESERVED_FDS = 64


def check_token(token: str, where: str) -> str:
    """`token` if it can travel in an Authorization header; ConfigError naming `where`."""
    if not token:
        raise ConfigError(
            f"the DCO's HTTP API needs a token shared by the scheduler and the DCO: "
            f"set dco.token in the config or {TOKEN_ENV} in the environment"
        )
    if not _TOKEN_CHARS.fullmatch(token):
        raise ConfigError(f"{where}: a token is visible ASCII without spaces")
    return token


def bearer(token: str) -> dict[str, str]:
    """The header that carries `token`."""
    return {"Authorization": f"Bearer {token}"}


def in_flight_limit(configured: int, share: int = 1) -> int:
    """Connections this process may hold open to (or for) one peer: `configured`, or
    fewer when its file descriptor limit would not hold them, with half of what is left
    after RESERVED_FDS spread over `share` peers (the other half is headroom for
    connections accepted only to be refused, and for the client's own sockets)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, (soft - RESERVED_FDS) // (2 * share)))


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
