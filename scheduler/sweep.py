"""The overdue sweep: open requests still unanswered seven days after submission.

Users' systems fail an 11.3 that takes more than `stale_after_seconds`; the sweep marks
such a request overdue (in the request book and the store) and tells its User. It keeps
its own queue of open requests in submission order (submission times only grow, so it
looks at the front only) and sleeps until the next one falls due.
"""

from __future__ import annotations

from collections import deque

from scheduler.book import RequestBook
from scheduler.calendar import HOUR_SECONDS
from scheduler.notify import Notifier
from scheduler.policy import Limits
from scheduler.requests import ActivationRequest
from scheduler.store import Store
from smets1.clock import Clock

#: The longest the overdue sweep sleeps (it wakes sooner when a request falls due).
SWEEP_SECONDS = HOUR_SECONDS
#: How long after the seven-day mark the sweep looks again: "more than seven days".
OVERDUE_STEP_SECONDS = 1e-3


class OverdueSweep:
    def __init__(
        self,
        *,
        clock: Clock,
        limits: Limits,
        store: Store,
        notifier: Notifier,
        book: RequestBook,
    ) -> None:
        self.clock = clock
        self.limits = limits
        self.store = store
        self.notifier = notifier
        self.book = book
        self._by_submit: deque[ActivationRequest] = deque()

    def track(self, req: ActivationRequest) -> None:
        """Watch an open request (they come in submission order)."""
        self._by_submit.append(req)

    async def run(self) -> None:
        """The sweep, until cancelled."""
        stale = self.limits.stale_after_seconds
        while True:
            now = self.clock.now()
            q = self._by_submit
            while q:
                req = q[0]
                # "More than seven days": open at exactly the mark is not yet overdue.
                if req.is_open and not req.overdue:
                    if req.submitted_at + stale >= now:
                        break
                    self.book.mark_overdue(req)
                    self.store.save_request(req)
                    self.notifier.post(
                        req.user,
                        "overdue",
                        {
                            "request_id": req.request_id,
                            "duis_request_id": req.duis_request_id,
                            "state": req.state.value,
                            "reason": f"still open {stale / 86_400:g} days after submission: "
                            "Users' systems fail it now",
                        },
                    )
                q.popleft()
            wake = now + SWEEP_SECONDS
            if q:  # just after the next open request's mark, if that comes sooner
                wake = min(wake, q[0].submitted_at + stale + OVERDUE_STEP_SECONDS)
            await self.clock.sleep_until(wake)
