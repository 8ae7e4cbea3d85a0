"""Exceptions of the scheduler.

SchedulerError                  root (a smets1.errors.Smets1Error): all it raises on purpose
├── RequestRejected             a request refused at submission, with the reason (HTTP 4xx)
│   ├── BadDocument             malformed, oversized or hostile input; names what is wrong
│   │   ├── UnknownDevice       a device id that is not in the fleet
│   │   └── UnsupportedService  a DUIS ServiceReference this URL does not serve
│   ├── Unauthenticated         no bearer token, or one that names no User
│   ├── NotFound                an id the caller may not see, or that does not exist
│   ├── MethodNotAllowed        a route that does not take that HTTP method
│   ├── Forbidden               a User acting on another User's requests or schedules
│   ├── AdmissionRefused        cannot be met within its TRT; carries the earliest day
│   ├── ScheduleConflict        a proposal no longer fits, or is in the wrong state
│   └── DuisRefused             a DUIS request whose signature or RequestID counter fails
│                               (unsigned, bad signature, unknown certificate, replay)
├── SignatureInvalid            an XML signature that does not verify (scheduler.xmldsig)
├── DuisSchemaInvalid           a document the scheduler was about to send fails the DUIS
│                               schema (a bug here, never sent)
└── DcoFailed                   the DCO raised while storing or reading (converted here)

Each carries `reason` (human text), `code` (the short tag the JSON API puts in its error
body, unchanged since the JSON API began) and `duis_code`: the ResponseCode of the DUIS
`sr:Response` that refuses a DUIS request, always a value of the DUIS schema's
ResponseCode enumeration. README.md has the table of every DUIS code the scheduler sends,
with what DUIS means by it.
"""

from __future__ import annotations

from typing import Any

from smets1.errors import Smets1Error


class SchedulerError(Smets1Error):
    """Root of every error the scheduler raises on purpose."""

    code = "E0"
    #: DUIS ResponseCode; `E40` where DUIS names nothing closer (see README.md).
    duis_code = "E40"
    status = 500

    def __init__(self, reason: str, *, duis_code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if duis_code is not None:
            self.duis_code = duis_code


class RequestRejected(SchedulerError):
    code = "E1"
    status = 400


class BadDocument(RequestRejected):
    """Input that cannot be used: `field` names the element or key at fault."""

    code = "E10"
    status = 400
    #: Set by the DUIS parser when the header was (partly) readable: the RequestID,
    #: ServiceReference and variant a DUIS refusal echoes (each None if unreadable).
    duis_context: tuple[Any, str | None, str | None] | None = None

    def __init__(self, field: str, reason: str, *, duis_code: str | None = None) -> None:
        super().__init__(f"{field}: {reason}", duis_code=duis_code)
        self.field = field


class UnknownDevice(BadDocument):
    """DUIS E19: "Failed Authorisation – Device doesn't exist" (Device ID invalid)."""

    duis_code = "E19"


class UnsupportedService(BadDocument):
    """DUIS E13: "Failed Validation – Invalid Request Type for URL": this URL serves
    11.1, 11.2 and 11.3 only."""

    duis_code = "E13"


class Unauthenticated(RequestRejected):
    """DUIS E1: "Failed Authorisation – Invalid User / User Role"."""

    code = "E2"
    duis_code = "E1"
    status = 401


class NotFound(RequestRejected):
    code = "E40"
    duis_code = "E13"
    status = 404


class MethodNotAllowed(RequestRejected):
    code = "E1"
    duis_code = "E13"
    status = 405


class Forbidden(RequestRejected):
    """DUIS E4: "Failed Authorisation – Invalid User / User Role for Device"."""

    code = "E2"
    duis_code = "E4"
    status = 403


class AdmissionRefused(RequestRejected):
    """Refused at submission; `earliest_day` is the first day on which it would fit."""

    code = "E57"
    duis_code = "E57"
    status = 409

    def __init__(self, reason: str, earliest_day: int | None) -> None:
        super().__init__(reason)
        self.earliest_day = earliest_day


class ScheduleConflict(RequestRejected):
    code = "E58"
    duis_code = "E58"
    status = 409


class DcoFailed(SchedulerError):
    """DUIS E20: "Communications Failure – Unable to Communicate with Device"."""

    code = "E90"
    duis_code = "E20"
    status = 502


class DuisRefused(RequestRejected):
    """A DUIS request refused by its signature or its RequestID counter: `code` is the
    DUIS ResponseCode sent back, `request_id` the refused request's RequestID (if read)."""

    code = "E1"
    duis_code = "E1"
    status = 401

    def __init__(
        self, reason: str, *, code: str = "E1", status: int = 401, request_id: str | None = None
    ) -> None:
        super().__init__(reason, duis_code=code)
        self.code = code
        self.status = status
        self.request_id = request_id


class SignatureInvalid(SchedulerError):
    """An XML signature that is missing a part, malformed, or does not verify."""

    code = "E1"
    duis_code = "E1"
    status = 401


class DuisSchemaInvalid(SchedulerError):
    """A document about to be sent is not valid against the DUIS schema (not sent)."""

    code = "E0"
    status = 500
