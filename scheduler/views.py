"""Read-only views for the API and the run summary: one request as its User may see it,
a schedule's batches with their progress, and the capacity calendar day by day.

They read the request book and the calendar, change nothing, and answer in the API's
own models (scheduler.models).
"""

from __future__ import annotations

from collections import Counter

from scheduler.book import RequestBook
from scheduler.calendar import Calendar
from scheduler.errors import NotFound
from scheduler.models import BatchOut, CapacityDay
from scheduler.requests import ActivationRequest, RequestState, Schedule


class Views:
    def __init__(self, *, calendar: Calendar, book: RequestBook) -> None:
        self.calendar = calendar
        self.book = book

    def request(self, actor: int, request_id: int) -> ActivationRequest:
        r = self.book.get(request_id)
        if r is None or r.user != actor:
            raise NotFound(f"no request {request_id}")
        return r

    def batch_status(self, s: Schedule) -> list[BatchOut]:
        by_day: dict[int, Counter[str]] = {d: Counter() for d in s.batches}
        for r in self.book.requests:
            if r.schedule_id == s.schedule_id and r.planned_day is not None:
                c = by_day.setdefault(r.planned_day, Counter())
                c[r.state.value] += 1
                if r.trt_met is not None:
                    c["trt_met" if r.trt_met else "trt_missed"] += 1
        return [
            BatchOut(
                date=self.calendar.date_of(d) or "",
                devices=s.batches.get(d, 0),
                attached=sum(c[st.value] for st in RequestState),
                released=c["released"] + c["done"] + c["failed"],
                done=c["done"],
                failed=c["failed"],
                trt_met=c["trt_met"],
                trt_missed=c["trt_missed"],
            )
            for d, c in sorted(by_day.items())
        ]

    def capacity(self, first_day: int, days: int) -> list[CapacityDay]:
        cal = self.calendar
        return [
            CapacityDay(
                date=cal.date_of(d) or "",
                capacity=cal.capacity,
                scheduled=cal.scheduled_on(d),
                unscheduled=cal.unscheduled_on(d),
                released=cal.released_on(d),
                free=cal.free(d),
            )
            for d in range(first_day, first_day + days)
        ]
