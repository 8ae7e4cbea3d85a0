"""Exceptions of the scheduler.

SchedulerError                  root (a smets1.errors.Smets1Error): all it raises on purpose
├── RequestRejected             a request refused at submission, with the reason (HTTP 4xx)
│   ├── BadDocument             malformed, oversized or hostile input; names what is wrong
│   ├── Unauthenticated         no bearer token, or one that names no User
│   ├── NotFound                an id the caller may not see, or that does not exist
│   ├── MethodNotAllowed        a route that does not take that HTTP method
│   ├── Forbidden               a User acting on another User's requests or schedules
│   ├── AdmissionRefused        cannot be met within its TRT; carries the earliest day
│   └── ScheduleConflict        a proposal no longer fits, or is in the wrong state
└── DcoFailed                   the DCO raised while storing or reading (converted here)

Each carries `reason` (human text) and `code` (a short machine tag, the DUIS-style
response code the HTTP layers put on the wire).
"""

from __future__ import annotations

from smets1.errors import Smets1Error


class SchedulerError(Smets1Error):
    """Root of every error the scheduler raises on purpose."""

    code = "E0"
    status = 500

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RequestRejected(SchedulerError):
    code = "E1"
    status = 400


class BadDocument(RequestRejected):
    """Input that cannot be used: `field` names the element or key at fault."""

    code = "E10"
    status = 400

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field


class Unauthenticated(RequestRejected):
    code = "E2"
    status = 401


class NotFound(RequestRejected):
    code = "E40"
    status = 404


class MethodNotAllowed(RequestRejected):
    code = "E1"
    status = 405


class Forbidden(RequestRejected):
    code = "E2"
    status = 403


class AdmissionRefused(RequestRejected):
    """Refused at submission; `earliest_day` is the first day on which it would fit."""

    code = "E57"
    status = 409

    def __init__(self, reason: str, earliest_day: int | None) -> None:
        super().__init__(reason)
        self.earliest_day = earliest_day


class ScheduleConflict(RequestRejected):
    code = "E58"
    status = 409


class DcoFailed(SchedulerError):
    code = "E90"
    status = 502
