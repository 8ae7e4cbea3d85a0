"""The request book: every accepted activation request, its indexes and running counts.

It holds the requests in submission order, by id and by User; the counts by state and by
TRT outcome and the overdue count, kept up to date on every change so that reading them
(metrics, summaries) costs nothing; and the number of active requests (WAITING and
RELEASED) with the event `wait_idle` waits on.

The other parts change a request's state only through `set_state`, and report work that
becomes active or ends through `activate` and `finish`, so the counts never drift from
the requests.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from scheduler.requests import ActivationRequest, RequestState
from smets1.histogram import SIMULATED_DURATION_BOUNDS, Buckets, with_bound


class RequestBook:
    def __init__(self, trt_seconds: float = 5 * 86_400.0) -> None:
        self.requests: list[ActivationRequest] = []
        self._by_id: dict[int, ActivationRequest] = {}
        self._by_user: dict[int, list[ActivationRequest]] = {}
        self.state_counts: Counter[RequestState] = Counter()
        self.trt_counts: Counter[bool] = Counter()
        self.overdue_count = 0
        #: Release to answer of every request answered (simulated seconds), with the TRT
        #: a bucket edge; and the failed ones by reason.
        self.answer_seconds = Buckets(with_bound(SIMULATED_DURATION_BOUNDS, trt_seconds))
        self.failures: Counter[str] = Counter()
        self._active = 0  # WAITING + RELEASED: what wait_idle waits for
        self._idle = asyncio.Event()

    # -- requests --------------------------------------------------------------------

    @property
    def next_id(self) -> int:
        return len(self.requests) + 1

    def add(self, r: ActivationRequest) -> None:
        self.requests.append(r)
        self._by_id[r.request_id] = r
        self._by_user.setdefault(r.user, []).append(r)
        self.state_counts[r.state] += 1
        if r.trt_met is not None:
            self._count_answer(r)
        if r.overdue:
            self.overdue_count += 1

    def get(self, request_id: int) -> ActivationRequest | None:
        return self._by_id.get(request_id)

    def of_user(self, user: int) -> list[ActivationRequest]:
        """The User's requests in submission order (the book's own list: read only)."""
        return self._by_user.get(user, [])

    def held_of(self, user: int) -> list[ActivationRequest]:
        """The User's HELD requests, in submission order."""
        return [r for r in self._by_user.get(user, ()) if r.state is RequestState.HELD]

    # -- changes ---------------------------------------------------------------------

    def set_state(self, r: ActivationRequest, state: RequestState) -> None:
        self.state_counts[r.state] -= 1
        self.state_counts[state] += 1
        r.state = state

    def count_trt(self, r: ActivationRequest) -> None:
        """Count the TRT outcome just decided for `r`."""
        assert r.trt_met is not None
        self._count_answer(r)

    def _count_answer(self, r: ActivationRequest) -> None:
        assert r.trt_met is not None
        self.trt_counts[r.trt_met] += 1
        if r.released_at is not None and r.completed_at is not None:
            self.answer_seconds.observe(r.completed_at - r.released_at)
        if r.state is RequestState.FAILED:
            self.failures[r.failure or "unknown"] += 1

    def mark_overdue(self, r: ActivationRequest) -> None:
        r.overdue = True
        self.overdue_count += 1

    # -- active work -----------------------------------------------------------------

    def activate(self) -> None:
        """One more request is WAITING or RELEASED."""
        self._active += 1
        self._idle.clear()

    def finish(self) -> None:
        """An active request has its final answer, or was withdrawn."""
        self._active -= 1
        if self._active == 0:
            self._idle.set()

    def settle(self) -> None:
        """Idle if nothing is active (after a restart or a cancellation)."""
        if self._active == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()
