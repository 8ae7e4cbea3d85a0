"""The overdue sweep: open requests still unanswered seven days after submission.

Users' systems fail an 11.3, or an 11.1 (MP230: "if the DCC takes more than seven days to
process SRV 11.1 ... then it will fail"), that takes more than `stale_after_seconds`; the
sweep marks such a request overdue (an 11.3 in the request book, an 11.1 on its own
record; both in the store) and tells its User. It keeps its own queues of open 11.3s and
11.1s in submission order (submission times only grow, so it looks at the fronts only)
and sleeps until the next one falls due.
"""

from __future__ import annotations

from collections import deque

from scheduler.book import RequestBook
from scheduler.calendar import HOUR_SECONDS
from scheduler.notify import Notifier
from scheduler.policy import Limits
from scheduler.requests import ActivationRequest, ImageUpdate
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
        self._updates: deque[ImageUpdate] = deque()

    def track(self, req: ActivationRequest) -> None:
        """Watch an open request (they come in submission order)."""
        self._by_submit.append(req)

    def track_update(self, u: ImageUpdate) -> None:
        """Watch an 11.1 until the DCO has stored its image (in order of acceptance)."""
        self._updates.append(u)

    def _sweep_updates(self, now: float, stale: float) -> None:
        q = self._updates
        while q:
            u = q[0]
            if u.is_open and not u.overdue:
                if u.submitted_at + stale >= now:
                    return
                u.overdue = True
                self.store.save_update(u)
                self.notifier.post(
                    u.user,
                    "overdue",
                    {
                        "duis_request_id": u.duis_request_id,
                        "service_reference": "11.1",
                        "firmware_hash": u.firmware_hash.hex(),
                        "state": u.state.value,
                        "reason": f"11.1 still not processed {stale / 86_400:g} days after "
                        "it was accepted: Users' systems fail it now",
                    },
                )
            q.popleft()

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
            self._sweep_updates(now, stale)
            wake = now + SWEEP_SECONDS
            for front in (q, self._updates):
                if front:  # just after the next open request's mark, if that comes sooner
                    wake = min(wake, front[0].submitted_at + stale + OVERDUE_STEP_SECONDS)
            await self.clock.sleep_until(wake)
