"""Exceptions of the scheduler.

SchedulerError
└── RequestRejected     a request refused at submission, with the reason
"""

from __future__ import annotations


class SchedulerError(Exception):
    """Root of every error the scheduler raises on purpose."""


class RequestRejected(SchedulerError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
