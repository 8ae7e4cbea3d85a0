"""What a run's report is drawn from, read from the run's folder, and the series derived.

`summary.json` (the counts), `run.json` (orchestrator.run_info: config, seed, version,
device models) and every request from the scheduler's SQLite (`state/scheduler.sqlite`
for `smets1 run`, `scheduler-state/scheduler.sqlite` for `smets1 distributed`): when each
was submitted, released and answered, and how it ended.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import ReportError
from orchestrator.run_info import RunInfo, read_run_info
from scheduler.calendar import Calendar
from scheduler.requests import ActivationRequest, RequestState
from scheduler.store import Store
from smets1.clock import to_datetime
from smets1.eui64 import format_eui64

DAY_SECONDS = 86_400.0
HOUR_SECONDS = 3_600.0
#: Where a run's scheduler keeps its SQLite, relative to the run's folder.
STORE_DIRS = ("state", "scheduler-state")
STORE_FILE = "scheduler.sqlite"
FAILED_CSV = "failed_devices.csv"
#: At most this many points on a chart over time.
TIMELINE_POINTS = 240


@dataclass
class RunRecord:
    summary: dict[str, Any]
    info: RunInfo | None = None
    requests: list[ActivationRequest] = field(default_factory=list)
    #: Whether the scheduler's store was found (False: the charts from it are left out).
    has_requests: bool = False


def load_run(run_dir: Path, store_dir: Path | None = None) -> RunRecord:
    """The record of the run in `run_dir`; ReportError naming what is missing. The
    scheduler's store is looked for in `store_dir` if given, else in `run_dir`'s
    STORE_DIRS."""
    path = run_dir / "summary.json"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: no summary.json: not the folder of a run") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: not a run summary ({exc})") from None
    if not isinstance(summary, dict) or "requests" not in summary:
        raise ReportError(f"{path}: not a run summary (no 'requests')")
    try:
        info = read_run_info(run_dir)
    except ValueError as exc:
        raise ReportError(f"{run_dir / 'run.json'}: unreadable ({exc})") from None
    record = RunRecord(summary, info)
    places = [store_dir] if store_dir is not None else [run_dir / sub for sub in STORE_DIRS]
    for place in places:
        if (place / STORE_FILE).is_file():
            store = Store(place)
            try:
                record.requests = store.load_requests()
            finally:
                store.close()
            record.has_requests = True
            break
    return record


# -- series -------------------------------------------------------------------------


def hourly_counts(times: Iterable[float], start: float) -> list[int]:
    """How many events fall in each simulated hour after `start`."""
    counts: list[int] = []
    for t in times:
        h = max(0, math.floor((t - start) / HOUR_SECONDS))
        if h >= len(counts):
            counts.extend([0] * (h + 1 - len(counts)))
        counts[h] += 1
    return counts


def answer_seconds(requests: Iterable[ActivationRequest]) -> list[float]:
    """Release to answer, simulated seconds, of every request answered (done or failed)."""
    return sorted(
        r.completed_at - r.released_at
        for r in requests
        if r.released_at is not None
        and r.completed_at is not None
        and r.state in (RequestState.DONE, RequestState.FAILED)
    )


def quantile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Nearest rank, as scheduler.summary.activation_times."""
    if not sorted_values:
        return None
    n = len(sorted_values)
    return sorted_values[min(n - 1, max(0, math.ceil(fraction * n) - 1))]


def user_label(info: RunInfo | None, user: int | str) -> str:
    eui = user if isinstance(user, str) else format_eui64(user)
    name = info.users.get(eui) if info else None
    return f"{name} ({eui})" if name else eui


@dataclass(frozen=True, slots=True)
class DailyReleases:
    """Large images released per UTC day from the epoch, by User."""

    days: list[str]
    by_user: dict[str, list[int]]


def large_released_per_day(record: RunRecord, epoch: float) -> DailyReleases:
    counts: Counter[tuple[int, str]] = Counter()
    for r in record.requests:
        if r.large and r.released_at is not None:
            day = math.floor((r.released_at - epoch) / DAY_SECONDS)
            counts[day, user_label(record.info, r.user)] += 1
    if not counts:
        return DailyReleases([], {})
    first = min(d for d, _ in counts)
    last = max(d for d, _ in counts)
    users = sorted({u for _, u in counts})
    days = [f"{to_datetime(epoch + d * DAY_SECONDS):%Y-%m-%d}" for d in range(first, last + 1)]
    return DailyReleases(days, {u: [counts[d, u] for d in range(first, last + 1)] for u in users})


def peak_intervals(info: RunInfo, start: float, end: float) -> list[tuple[float, float]]:
    """The peak windows (absolute simulated times) that fall between start and end."""
    cal = Calendar(info.epoch_seconds, info.large_images_per_day, info.peak_windows,
                   info.peak_timezone)  # fmt: skip
    out: list[tuple[float, float]] = []
    for day in range(cal.day_of(start), cal.day_of(end) + 1):
        out.extend((a, b) for a, b in cal.peak_times(day) if b > start and a < end)
    return out


def hourly_releases(requests: Iterable[ActivationRequest]) -> tuple[float, list[int]]:
    """Large-image releases per simulated hour: (start of the first hour, counts)."""
    times = sorted(r.released_at for r in requests if r.large and r.released_at is not None)
    if not times:
        return 0.0, []
    start = math.floor(times[0] / HOUR_SECONDS) * HOUR_SECONDS
    counts = [0] * (math.floor((times[-1] - start) / HOUR_SECONDS) + 1)
    for t in times:
        counts[math.floor((t - start) / HOUR_SECONDS)] += 1
    return start, counts


#: The states of the timeline, in the order they are stacked.
TIMELINE_STATES = ("activated", "failed", "cancelled", "in flight", "waiting", "held")


def state_timeline(
    requests: Sequence[ActivationRequest], points: int = TIMELINE_POINTS
) -> tuple[list[float], dict[str, list[int]]]:
    """How many requests were in each state (TIMELINE_STATES) at `points` moments from
    the first submission to the last answer: (times, counts by state)."""
    import numpy as np

    if not requests:
        return [], {}
    inf = math.inf
    sub = np.array([r.submitted_at for r in requests])
    rel = np.array([inf if r.released_at is None else r.released_at for r in requests])
    comp = np.array([inf if r.completed_at is None else r.completed_at for r in requests])
    held = np.array([r.state is RequestState.HELD for r in requests])
    start = float(sub.min())
    ends = np.concatenate([sub, rel[np.isfinite(rel)], comp[np.isfinite(comp)]])
    end = max(float(ends.max()), start + 1.0)
    times = np.linspace(start, end, points)

    def reached(values: Any) -> list[int]:
        """How many of `values` are at or before each moment."""
        counts = np.searchsorted(np.sort(values), times, side="right")
        return [int(c) for c in counts]

    series: dict[str, list[int]] = {"held": reached(sub[held])}
    live = ~held
    submitted = reached(sub[live])
    moved = reached(np.minimum(rel, comp)[live])
    ended = [0] * points
    for state, name in (
        (RequestState.DONE, "activated"),
        (RequestState.FAILED, "failed"),
        (RequestState.CANCELLED, "cancelled"),
    ):
        mask = np.array([r.state is state for r in requests])
        series[name] = reached(comp[mask & live])
        ended = [a + b for a, b in zip(ended, series[name], strict=True)]
    series["waiting"] = [a - b for a, b in zip(submitted, moved, strict=True)]
    series["in flight"] = [a - b for a, b in zip(moved, ended, strict=True)]
    return [float(t) for t in times], {k: series[k] for k in TIMELINE_STATES}


@dataclass(frozen=True, slots=True)
class FailedDevice:
    device: str
    model: str
    campaign: str
    user: str
    reason: str
    released_at: float | None
    answered_at: float | None


def failed_devices(record: RunRecord) -> list[FailedDevice]:
    info = record.info
    return [
        FailedDevice(
            device=format_eui64(r.device_id),
            model=(info.model_of(r.device_id) if info else None) or "?",
            campaign=r.campaign,
            user=user_label(record.info, r.user),
            reason=r.failure or "unknown",
            released_at=r.released_at,
            answered_at=r.completed_at,
        )
        for r in record.requests
        if r.state is RequestState.FAILED
    ]


def failures_by_model(devices: Iterable[FailedDevice]) -> dict[str, int]:
    return dict(sorted(Counter(d.model for d in devices).items()))


def write_failed_csv(path: Path, devices: Iterable[FailedDevice]) -> None:
    def when(t: float | None) -> str:
        return "" if t is None else to_datetime(t).isoformat()

    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["device_id", "model", "campaign", "user", "reason", "released", "answered"])
        for d in devices:
            w.writerow(
                [d.device, d.model, d.campaign, d.user, d.reason, when(d.released_at),
                 when(d.answered_at)]
            )  # fmt: skip
