"""The scheduler's Prometheus metrics (`smets1_scheduler_*`), read at scrape time.

`api.make_app` registers one `SchedulerCollector` per app; it reads the scheduler's
running counts (request book, calendar, schedules, refusals), so a scrape costs no pass
over the requests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from scheduler.requests import RequestState
from scheduler.service import Scheduler
from smets1.eui64 import format_eui64


class SchedulerCollector:
    """Read at scrape time from the scheduler; no device id in any label."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.s = scheduler

    def collect(self) -> Iterator[Metric]:
        s = self.s
        g = GaugeMetricFamily("smets1_scheduler_requests", "Requests by state", labels=["state"])
        for st in RequestState:
            g.add_metric([st.value], s.state_counts[st])
        yield g
        today = s.calendar.day_of(s.clock.now())
        yield GaugeMetricFamily(
            "smets1_scheduler_large_images_released_today",
            "Large-image 11.3s released on the current day",
            value=s.calendar.released_on(today),
        )
        yield GaugeMetricFamily(
            "smets1_scheduler_large_image_capacity_per_day",
            "Large-image 11.3s the DCC releases a day",
            value=s.calendar.capacity,
        )
        yield GaugeMetricFamily(
            "smets1_scheduler_large_image_capacity_left_today",
            "Large-image 11.3s the DCC may still release on the current day",
            value=max(0, s.calendar.capacity - s.calendar.released_on(today)),
        )
        yield GaugeMetricFamily(
            "smets1_scheduler_user_daily_limit",
            "Large-image 11.3s a User may have released a day without an agreed schedule",
            value=s.config.user_daily_limit,
        )
        per_user = GaugeMetricFamily(
            "smets1_scheduler_user_large_images_released_today",
            "Large-image 11.3s released on the current day, by User (name, else EUI-64)",
            labels=["user"],
        )
        released = s.calendar.released_by_user(today)
        for uid, u in sorted(s.users.items()):
            if not u.service_desk or released.get(uid):
                per_user.add_metric([u.name or format_eui64(uid)], released.get(uid, 0))
        yield per_user
        hist = HistogramMetricFamily(
            "smets1_scheduler_release_to_answer_simulated_seconds",
            "Release to answer of each 11.3 answered, simulated seconds; the TRT is a bucket edge",
        )
        hist.add_metric([], s.answer_seconds.cumulative(), s.answer_seconds.total)
        yield hist
        yield GaugeMetricFamily(
            "smets1_scheduler_trt_simulated_seconds",
            "The target response time from release to answer, simulated seconds",
            value=s.config.trt_seconds,
        )
        failed = CounterMetricFamily(
            "smets1_scheduler_failed_requests", "Failed 11.3s by reason", labels=["reason"]
        )
        for reason, n in sorted(s.failures.items()):
            failed.add_metric([reason], n)
        yield failed
        trt = CounterMetricFamily(
            "smets1_scheduler_trt", "Answered requests by TRT outcome", labels=["outcome"]
        )
        trt.add_metric(["met"], s.trt_counts[True])
        trt.add_metric(["missed"], s.trt_counts[False])
        yield trt
        yield CounterMetricFamily(
            "smets1_scheduler_refused_devices",
            "Devices refused at submission",
            value=sum(f.devices for f in s.refusals),
        )
        yield GaugeMetricFamily(
            "smets1_scheduler_overdue_requests",
            "Requests flagged still open seven days after submission",
            value=s.overdue_count,
        )
        yield GaugeMetricFamily(
            "smets1_scheduler_overdue_image_updates",
            "SRV 11.1s the DCO had still not stored seven days after acceptance",
            value=s.overdue_11_1_count,
        )
        sched = GaugeMetricFamily(
            "smets1_scheduler_schedules", "Delivery schedules by state", labels=["state"]
        )
        for state, n in Counter(x.state.value for x in s.schedules.values()).items():
            sched.add_metric([state], n)
        yield sched
