"""The DCO's HTTP API as data: routes and the documents of SRV 11.1, 11.3 and 11.2, and
the messages of its call channel.

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
    GET  /v1/calls                       WebSocket: 11.3 and 11.2 as messages (below)
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

The call channel (/v1/calls) carries 11.3s and 11.2s over one WebSocket, so that a
scheduler pays for one connection to a worker instead of one HTTP request a call (24,000
on a demo day, each 11.3 holding its connection for minutes). The token is checked when
it opens (401 before the upgrade, as any route), and so is the bound (503 with
Retry-After while the DCO is full); the channel itself counts for nothing in flight. Each
message is one JSON document (in a text or a binary frame), a `Call`:

    {"id": 7, "op": "activate", "order": ActivationOrder}                       (SRV 11.3)
    {"id": 8, "op": "read_version", "device_id": "00-DB-12-..."}                (SRV 11.2)

and each call gets one `Answer`, when the DCO has it (an 11.3 once the device answered),
so answers come in the order they are ready, not that of the calls:

    {"id": 7, "status": 200, "body": ActivationOutcome | VersionReading}
    {"id": 7, "status": 400 | 404 | 500, "body": ErrorDoc}
    {"id": 7, "status": 503, "body": ErrorDoc, "retry_after": 1}

(the DCO writes them in binary frames, `retry_after` null but with 503). `status` and
`body` are what the REST route would answer, and `retry_after` its Retry-After: a call
is answered 503 beyond the bound on calls served at once (each call of a channel counts
one while it runs) and, for an 11.3, while the DCO has no room for it. A message that is
not a call gets a 400 naming what is wrong (`id` null if even that could not be read)
and the channel stays open. A channel that closes takes the answers of its open calls
with it: the client sends each again (see orchestrator.dco_client); the DCO goes on with
what it was asked, as it does for an HTTP request whose connection closed. A DCO that
stops answers new calls 503 and closes each channel (1001, going away) once the calls it
holds are answered, or when its shutdown grace is over. An id is the client's to choose;
the DCO echoes it and keeps no memory of it.
"""

from __future__ import annotations

import re
import resource
from dataclasses import dataclass
from typing import Annotated, Any, Final, Generic, Literal, TypeVar

from pydantic import Field, TypeAdapter, ValidationError

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
#: The call channel: a WebSocket carrying 11.3s and 11.2s (`Call`, `Answer`).
CALLS_PATH = "/v1/calls"
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


#: What a 401 says, over HTTP or when a call channel is refused before its upgrade.
UNAUTHORIZED_MESSAGE = "a valid bearer token is needed"

T = TypeVar("T")
B = TypeVar("B")


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


#: The operations of the call channel, by the name a `Call` gives them in `op`.
ACTIVATE: Final = "activate"
READ_VERSION: Final = "read_version"


@dataclass(frozen=True, slots=True)
class ActivateCall:
    """An 11.3 on the call channel."""

    id: int
    order: ActivationOrder
    op: Literal["activate"] = ACTIVATE


@dataclass(frozen=True, slots=True)
class ReadVersionCall:
    """An 11.2 on the call channel."""

    id: int
    device_id: DeviceId
    op: Literal["read_version"] = READ_VERSION


#: One message from the client on the call channel; `op` says which.
Call = Annotated[ActivateCall | ReadVersionCall, Field(discriminator="op")]


@dataclass(frozen=True, slots=True)
class CallId:
    """Just the id of a call, read from a message that is not a call otherwise."""

    id: int


@dataclass(frozen=True, slots=True)
class Answer(Generic[B]):
    """The DCO's one answer to a call: what the REST route would answer, as a message."""

    #: The call's id; None when the message answered was not readable as a call at all.
    id: int | None
    #: The HTTP status the REST route would give.
    status: int
    #: ActivationOutcome or VersionReading with 200, ErrorDoc otherwise.
    body: B
    #: With 503: seconds to wait before the call goes again (Retry-After).
    retry_after: float | None = None


class Document(Generic[T]):
    """One document type of the API: JSON bytes in and out, errors naming the field."""

    def __init__(self, kind: Any, root: str = "body") -> None:
        self._adapter: TypeAdapter[T] = TypeAdapter(kind)
        #: What a problem with the document as a whole is said to be in.
        self.root = root

    def to_json(self, value: T) -> bytes:
        return self._adapter.dump_json(value)

    def from_json(self, data: bytes | str) -> T:
        """The document in `data`; ValueError naming the first field that is wrong."""
        try:
            return self._adapter.validate_json(data)
        except ValidationError as exc:
            raise ValueError(describe(exc, self.root)) from None

    def from_python(self, data: Any) -> T:
        """The document in `data` as JSON decodes it (the body of an `Answer`);
        ValueError naming the first field that is wrong."""
        try:
            return self._adapter.validate_python(data)
        except ValidationError as exc:
            raise ValueError(describe(exc, self.root)) from None


#: The tags of `Call`, which pydantic puts first in the location of an error.
_OPS = frozenset({ACTIVATE, READ_VERSION})


def describe(exc: ValidationError, root: str = "body") -> str:
    """The first problem of a validation error as `field: what is wrong`."""
    err: Any = exc.errors()[0]
    if err["type"] == "union_tag_not_found":
        return f"op: missing, expected one of {', '.join(sorted(_OPS))}"
    if err["type"] == "union_tag_invalid":
        return f"op: {err['msg']}"
    loc = list(err["loc"])
    if loc and loc[0] in _OPS:  # the tag chosen by `op`, not a field
        loc = loc[1:]
    where = ".".join(str(p) for p in loc) or root
    return f"{where}: {err['msg']}"


STORED_IMAGE: Document[StoredImage] = Document(StoredImage)
ACTIVATION_ORDER: Document[ActivationOrder] = Document(ActivationOrder)
ACTIVATION_OUTCOME: Document[ActivationOutcome] = Document(ActivationOutcome)
VERSION_READING: Document[VersionReading] = Document(VersionReading)
ERROR: Document[ErrorDoc] = Document(ErrorDoc)
#: A message to the call channel.
CALL: Document[ActivateCall | ReadVersionCall] = Document(Call, root="call")
#: The id of a message that is not a call otherwise.
CALL_ID: Document[CallId] = Document(CallId, root="call")
#: The channel's answers, as the DCO writes them.
ACTIVATION_ANSWER: Document[Answer[ActivationOutcome]] = Document(Answer[ActivationOutcome])
VERSION_ANSWER: Document[Answer[VersionReading]] = Document(Answer[VersionReading])
ERROR_ANSWER: Document[Answer[ErrorDoc]] = Document(Answer[ErrorDoc])
#: Any answer as the client reads it, before it reads the body as the call expects.
ANSWER: Document[Answer[Any]] = Document(Answer[Any], root="answer")
