"""`smets1 compare CONFIG --policy A --policy B ...`: one scenario under several release
policies, side by side.

Each policy is a `--policy` spec: `KIND` or `KIND:KEY=VALUE[,KEY=VALUE...]`, the kind
and the parameters of `scheduler.policy` (smets1.config_policy), e.g. `mp230`,
`no_limit`, `equal_share:users=5`. Each runs as `smets1 run` would, with the config's own
seed and the policy put in place of the config's, in an OS process of its own (at most
os.cpu_count() at once), into `OUT/<policy>/` (its summary, report and store). The
comparison is read back from those folders (orchestrator.report_data) and written as
`OUT/compare.json` and `OUT/compare.html` (orchestrator.policy_compare_report).

What is compared, per policy (`PolicyOutcome`): campaign length (first submission to
last answer, simulated days), large images released per day (mean over the days from
the first release to the last, and the most in a day), TRT met and missed, requests
refused at submission, held for a schedule, open past seven days (11.3) and 11.1s not
stored within seven days, and per User: requests, activated, and the day its last
answer came; with the series of the charts (released per day by User, activated per User
over simulated time, released by hour of day). When the config carries background
traffic: its requests, met, missed, latency p50 and p95, and its misses and p95 by hour
of day.
"""

from __future__ import annotations

import multiprocessing
import os
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from smets1.config import FleetConfig, load_config, spare_capacity_problem
from smets1.config_policy import COMPARED_BY_DEFAULT, parse_policy, without_policy_tag
from smets1.config_types import FieldError
from smets1.errors import ConfigError

DAY_SECONDS = 86_400.0
#: Points of the per-User completion series.
COMPLETION_POINTS = 240
#: The policies compared when no --policy is given.
DEFAULT_SPECS = tuple(k.value for k in COMPARED_BY_DEFAULT)

_SPEC = re.compile(r"^([a-z_0-9]+)(?::(.*))?$")


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """One `--policy`: its text (the label in the report) and the policy's fields."""

    text: str
    fields: dict[str, Any]

    @property
    def folder(self) -> str:
        """The policy's folder name under the comparison's folder."""
        return re.sub(r"[^A-Za-z0-9_=.-]", "-", self.text.replace(":", "-"))


def parse_spec(text: str) -> PolicySpec:
    """`KIND` or `KIND:KEY=VALUE[,KEY=VALUE...]`, checked as a config's `scheduler.policy`
    is; ConfigError naming the spec and the field otherwise."""
    m = _SPEC.match(text.strip())
    if not m:
        raise ConfigError(
            f"--policy {text!r}: expected KIND or KIND:KEY=VALUE[,KEY=VALUE...],"
            f" KIND one of {', '.join(DEFAULT_SPECS)}"
        )
    fields: dict[str, Any] = {"kind": m[1]}
    for part in (m[2] or "").split(","):
        if not part.strip():
            continue
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--policy {text!r}: expected KEY=VALUE, got {part!r}")
        fields[key.strip()] = value.strip()
    try:
        policy = parse_policy(fields)
    except FieldError as exc:
        raise ConfigError(f"--policy {text!r}: {exc}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in without_policy_tag(("policy", *err["loc"]))[1:])
        msg = "unknown key (check its spelling)" if err["type"] == "extra_forbidden" else err["msg"]
        raise ConfigError(f"--policy {text!r}: {where}: {msg}") from None
    # The fields as the config model has them (numbers as numbers, defaults left out).
    return PolicySpec(text.strip(), policy.model_dump(exclude_none=True))


def parse_specs(texts: Sequence[str]) -> list[PolicySpec]:
    specs = [parse_spec(t) for t in (texts or DEFAULT_SPECS)]
    seen: set[str] = set()
    for s in specs:
        if s.folder in seen:
            raise ConfigError(f"--policy {s.text!r}: given twice")
        seen.add(s.folder)
    return specs


def with_policy(config: FleetConfig, spec: PolicySpec) -> FleetConfig:
    """The config with the spec's policy in place of its own; ConfigError if the config
    cannot run it (spare_capacity without a `background:` section)."""
    policy = parse_policy(spec.fields)
    out = config.model_copy(
        update={"scheduler": config.scheduler.model_copy(update={"policy": policy})}
    )
    try:
        spare_capacity_problem(out)
    except FieldError as exc:
        raise ConfigError(f"--policy {spec.text!r}: {exc}") from None
    return out


# -- one policy, in a process of its own -------------------------------------------


def run_policy(config_file: str, spec: PolicySpec, out_dir: str) -> dict[str, Any]:
    """Run the config under the spec's policy into `out_dir` and return its outcome (a
    JSON-able dict). The worker of `compare`: it reads the config itself."""
    from orchestrator.runner import run_config

    config = with_policy(load_config(config_file), spec)
    out = Path(out_dir)
    summary = run_config(config, out, progress=None, config_file=Path(config_file))
    return outcome(spec, config, summary, out)


def outcome(
    spec: PolicySpec, config: FleetConfig, summary: dict[str, Any], out: Path
) -> dict[str, Any]:
    """What is compared of one policy's run, from its folder."""
    import numpy as np

    from orchestrator.report_data import large_released_per_day, load_run
    from scheduler.requests import RequestState
    from smets1.eui64 import format_eui64

    record = load_run(out)
    reqs = record.requests
    names = record.info.users if record.info else {}

    def user_label(user: int) -> str:
        # The User's name in the config, else its EUI-64 (the table stays narrow).
        eui = format_eui64(user)
        return names.get(eui) or eui

    epoch = config.epoch_seconds
    daily = large_released_per_day(record, epoch)
    totals = [sum(v[i] for v in daily.by_user.values()) for i in range(len(daily.days))]
    start = min((r.submitted_at for r in reqs), default=epoch)
    answered = [r.completed_at for r in reqs if r.completed_at is not None]
    end = max(answered, default=start)
    users: dict[str, dict[str, Any]] = {}
    for user in sorted({r.user for r in reqs}):
        mine = [r for r in reqs if r.user == user]
        done = [r.completed_at for r in mine if r.completed_at is not None]
        users[user_label(user)] = {
            "requests": len(mine),
            "activated": sum(1 for r in mine if r.state is RequestState.DONE),
            "answered": len(done),
            # The day its last answer came, if every request of the User was answered.
            "finished_days": (
                round((max(done) - start) / DAY_SECONDS, 3) if len(done) == len(mine) else None
            ),
        }
    times = np.linspace(start, max(end, start + 1.0), COMPLETION_POINTS)
    completion: dict[str, list[int]] = {}
    for user in sorted({r.user for r in reqs}):
        done_at = np.sort(
            np.array(
                [
                    r.completed_at
                    for r in reqs
                    if r.user == user and r.state is RequestState.DONE and r.completed_at
                ]
            )
        )
        counts = np.searchsorted(done_at, times, side="right")
        completion[user_label(user)] = [int(c) for c in counts]
    return {
        "policy": spec.text,
        "fields": spec.fields,
        "folder": str(out),
        "requests": summary["requests"],
        "activated": summary["images_activated"],
        "failed": sum(summary["failed"].values()),
        "unfinished": summary["unfinished"],
        "campaign_days": round((end - start) / DAY_SECONDS, 3),
        "large_per_day_mean": round(sum(totals) / len(totals), 1) if totals else 0.0,
        "large_per_day_max": max(totals, default=0),
        "trt_met": summary["trt_met"],
        "trt_missed": summary["trt_missed"],
        "refused": summary["refused"],
        "held_for_schedule": summary["held_for_schedule"],
        "stale_11_3": summary["overdue"],
        "stale_11_1": summary["overdue_11_1"],
        "large_images_per_day": summary["large_images_per_day"],
        "user_daily_limit": config.scheduler.user_daily_limit,
        "outcomes_sha256": summary["activations"]["outcomes_sha256"],
        "wall_seconds": summary["wall_seconds"],
        "users": users,
        "daily": {"days": daily.days, "by_user": daily.by_user},
        "completion": {"times": [float(t) for t in times], "by_user": completion},
        "background": background_outcome(summary, config),
        "released_by_hour": released_by_hour(reqs, config.scheduler.peak_timezone),
    }


def released_by_hour(reqs: Sequence[Any], zone: str) -> list[int]:
    """Large 11.3s released in each hour of the day (local time, 00:00 first), all days
    together: where in the day a policy puts its releases."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(zone)
    out = [0] * 24
    for r in reqs:
        if r.large and r.released_at is not None:
            out[datetime.fromtimestamp(r.released_at, tz).hour] += 1
    return out


def background_outcome(summary: dict[str, Any], config: FleetConfig) -> dict[str, Any] | None:
    """The background traffic's figures compared (None: the run carried none)."""
    bg = summary.get("background")
    if not bg:
        return None
    by_hour = bg["by_hour"]
    return {
        "requests": bg["requests"],
        "met": bg["met"],
        "missed": bg["missed"],
        "sample_share": bg.get("sample_share", 1.0),
        "p50_seconds": bg["p50_seconds"],
        "p95_seconds": bg["p95_seconds"],
        "by_hour": {
            "timezone": by_hour["timezone"],
            "missed": by_hour["missed"],
            "p95_seconds": by_hour["p95_seconds"],
            # The peak windows (local hours), shaded on the charts.
            "peak_windows": [[w.start_hour, w.end_hour] for w in config.scheduler.peak_windows],
        },
    }


# -- all of them -------------------------------------------------------------------


def compare(
    config_file: Path, specs: Sequence[PolicySpec], out: Path, workers: int | None = None
) -> dict[str, Any]:
    """Run every policy (one process each, at most `workers`, default os.cpu_count(), at
    once) and return the comparison; each run's folder is `out/<policy>/`."""
    config = load_config(config_file)
    for spec in specs:
        with_policy(config, spec)  # every policy can run this config, or nothing runs
    out.mkdir(parents=True, exist_ok=True)
    n = max(1, min(len(specs), workers or os.cpu_count() or 1))
    # spawn: a fresh interpreter a policy, nothing inherited from this one's state;
    # max_tasks_per_child=1: one OS process per policy, even when they outnumber cores.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx, max_tasks_per_child=1) as pool:
        futures = [pool.submit(run_policy, str(config_file), s, str(out / s.folder)) for s in specs]
        results = [f.result() for f in futures]
    align(results)
    return {
        "config": config.name,
        "config_file": str(config_file),
        "seed": config.seed,
        "devices": config.device_count,
        "policies": results,
    }


def align(results: list[dict[str, Any]]) -> None:
    """Put every policy's series on the same axes, so the charts side by side compare:
    released per day over the same days (zero where a policy released nothing), and
    activated per User at the same moments (each policy's own samples, carried forward)."""
    import numpy as np

    days = sorted({d for p in results for d in p["daily"]["days"]})
    if days:
        first, last = date.fromisoformat(days[0]), date.fromisoformat(days[-1])
        every = [str(first + timedelta(days=i)) for i in range((last - first).days + 1)]
        for p in results:
            daily = p["daily"]
            at = {d: i for i, d in enumerate(daily["days"])}
            daily["by_user"] = {
                u: [counts[at[d]] if d in at else 0 for d in every]
                for u, counts in daily["by_user"].items()
            }
            daily["days"] = every
    spans = [p["completion"]["times"] for p in results if p["completion"]["times"]]
    if not spans:
        return
    grid = np.linspace(min(t[0] for t in spans), max(t[-1] for t in spans), COMPLETION_POINTS)
    for p in results:
        times = np.array(p["completion"]["times"])
        idx = np.searchsorted(times, grid, side="right") - 1
        p["completion"] = {
            "times": [float(t) for t in grid],
            "by_user": {
                u: [int(counts[i]) if i >= 0 else 0 for i in idx]
                for u, counts in p["completion"]["by_user"].items()
            },
        }


# -- the table ---------------------------------------------------------------------


def _days(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.2f}" if v >= 0.1 or v == 0 else f"{v:.3f}"


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    """The side-by-side table: a row per figure, a column per policy (after the name)."""
    ps = result["policies"]

    def row(name: str, fmt: Any) -> list[str]:
        return [name, *(fmt(p) for p in ps)]

    rows = [
        row("campaign length (days)", lambda p: _days(p["campaign_days"])),
        row("large images per day, mean", lambda p: f"{p['large_per_day_mean']:,.1f}"),
        row("large images per day, max", lambda p: f"{p['large_per_day_max']:,}"),
        row("activated / requests", lambda p: f"{p['activated']:,} / {p['requests']:,}"),
        row("TRT met", lambda p: f"{p['trt_met']:,}"),
        row("TRT missed", lambda p: f"{p['trt_missed']:,}"),
        row("refused at submission", lambda p: f"{p['refused']:,}"),
        row("held for a schedule", lambda p: f"{p['held_for_schedule']:,}"),
        row("11.3 open past 7 days", lambda p: f"{p['stale_11_3']:,}"),
        row("11.1 past 7 days", lambda p: f"{p['stale_11_1']:,}"),
    ]
    if any(p.get("background") for p in ps):
        rows += background_rows(ps)
    users = sorted({u for p in ps for u in p["users"]})
    for u in users:

        def done(p: dict[str, Any], u: str = u) -> str:
            x = p["users"].get(u)
            if x is None:
                return "-"
            pct = 100 * x["activated"] / x["requests"] if x["requests"] else 0.0
            when = x["finished_days"]
            at = f"day {_days(when)}" if when is not None else "unfinished"
            return f"{x['activated']:,}/{x['requests']:,} {pct:.0f}% {at}"

        rows.append([f"User {u}", *(done(p) for p in ps)])
    return rows


def _missed_share(b: dict[str, Any]) -> str:
    """Missed of the requests settled (met or missed): comparable across samples."""
    settled = b["met"] + b["missed"]
    return f"{100 * b['missed'] / settled:.3f}%" if settled else "-"


def background_rows(ps: Sequence[dict[str, Any]]) -> list[list[str]]:
    """The background traffic's rows ("-" for a policy whose run carried none)."""

    def row(name: str, fmt: Any) -> list[str]:
        return [name, *(fmt(p["background"]) if p.get("background") else "-" for p in ps)]

    shares = {p["background"].get("sample_share", 1.0) for p in ps if p.get("background")}
    sampled = f" (a {min(shares):.2%} sample)" if min(shares, default=1.0) < 1 else ""
    return [
        row(f"background requests{sampled}", lambda b: f"{b['requests']:,}"),
        row("background met", lambda b: f"{b['met']:,}"),
        row("background missed", lambda b: f"{b['missed']:,}"),
        row("background missed, share", _missed_share),
        row("background latency p50 (s)", lambda b: f"{b['p50_seconds']:,.2f}"),
        row("background latency p95 (s)", lambda b: f"{b['p95_seconds']:,.2f}"),
    ]


def render_table(result: dict[str, Any]) -> str:
    head = ["", *(p["policy"] for p in result["policies"])]
    rows = [head, *table_rows(result)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
