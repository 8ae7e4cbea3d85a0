"""The live dashboard: `/dashboard` (one page, no external asset, no build step) and the
figures it polls, `/dashboard/data` (JSON, aggregates only: no device id, no token).

What it shows, from the scheduler's running counts (no pass over the requests but the
short per-day lists): large images released per day against the capacity, per User
today against the 500, requests by state, TRT met and missed and the release-to-answer
distribution against the TRT, transfers in flight (released, not answered), failures
by reason, and the clock's speed and lag.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scheduler.requests import RequestState
from scheduler.service import Scheduler
from smets1.clock import to_datetime
from smets1.eui64 import format_eui64

#: Days of releases shown: the last ones with any, and today.
DAYS_SHOWN = 14


def dashboard_data(s: Scheduler, clock_info: Callable[[], dict[str, Any] | None]) -> dict[str, Any]:
    now = s.clock.now()
    cal = s.calendar
    today = cal.day_of(now)
    per_day = cal.released_per_day()
    days = sorted({*per_day, today})[-DAYS_SHOWN:]
    released_today = cal.released_by_user(today)
    users = [
        {"user": u.name or format_eui64(uid), "released": released_today.get(uid, 0)}
        for uid, u in sorted(s.users.items())
        if not u.service_desk or released_today.get(uid)
    ]
    bounds = s.answer_seconds.bounds
    buckets = [
        {"le": None if i == len(bounds) else bounds[i], "count": n}
        for i, n in enumerate(s.answer_seconds.counts)
    ]
    info = clock_info() or {}
    return {
        "simulated_time": to_datetime(now).isoformat(),
        "speed": info.get("speed", getattr(s.clock, "speed", None)),
        "speed_mode": info.get("speed_mode"),
        "lag_seconds": info.get("lag_seconds", 0.0),
        "capacity_per_day": cal.capacity,
        "user_daily_limit": s.config.user_daily_limit,
        "days": [{"date": s.date_of(d), "released": per_day.get(d, 0)} for d in days],
        "today": {"date": s.date_of(today), "released": cal.released_on(today)},
        "users_today": users,
        "requests": {st.value: s.state_counts[st] for st in RequestState},
        "requests_total": len(s.requests),
        "in_flight": s.state_counts[RequestState.RELEASED],
        "trt_seconds": s.config.trt_seconds,
        "trt_met": s.trt_counts[True],
        "trt_missed": s.trt_counts[False],
        "answer_buckets": buckets,
        "failures": dict(sorted(s.failures.items())),
    }
