"""Exceptions of the composition root.

OrchestratorError (a smets1.errors.Smets1Error)
├── DistributedError    a process of a distributed run failed or did not finish in time
├── DcoHttpError        the DCO's HTTP API answered with an error, or could not be reached
├── DcoGaveUp           the scheduler stopped waiting for a DCO it could not reach
├── SummaryUnreadable   a run summary to compare is missing, not JSON or not a summary
├── UnknownModel        `smets1 image validate|plan|trial --model` names no model it knows
├── ImageUnusable       a file given as a firmware image that is not one, or is cut short
└── ReportError         a run folder `smets1 report` cannot build a report from
"""

from __future__ import annotations

from smets1.errors import Smets1Error


class OrchestratorError(Smets1Error):
    """Root of every error the composition root raises on purpose."""


class DistributedError(OrchestratorError):
    """A process of a distributed run failed or did not finish in time."""


class DcoHttpError(OrchestratorError):
    """The DCO answered an HTTP call (or a call on its call channel) with an error, or
    could not be reached, or its answer could not be read (`bad_response`)."""

    def __init__(self, url: str, status: int | None, code: str, message: str) -> None:
        if status is not None:
            where = f"HTTP {status}"
        else:  # no HTTP status: not reached, or an answer on the call channel unread
            where = "unreachable" if code == "unreachable" else "call channel"
        super().__init__(f"DCO {url}: {where} {code}: {message}")
        self.url = url
        self.status = status
        self.code = code


class DcoGaveUp(OrchestratorError):
    """The scheduler (`--exit-when-done`) stopped waiting for a DCO it could not reach."""


class SummaryUnreadable(OrchestratorError):
    """A summary.json to compare is missing, not JSON, or without the keys compared."""


class UnknownModel(OrchestratorError):
    """A device model that neither the built-in examples nor the given config hold."""


class ImageUnusable(OrchestratorError):
    """Bytes that are not an OTA image at all, or one cut short: not a check that fails
    but input a command cannot use (exit status 2)."""


class ReportError(OrchestratorError):
    """A run's folder a report cannot be built from: no summary, or one unreadable."""
