"""The report of a run a test lead can forward: one self-contained HTML page.

No script and no external file: charts are inline SVG (orchestrator.report_charts),
so the page can be mailed, attached to a ticket, printed or turned into a PNG. It is
built from the run's folder (orchestrator.report_data: `summary.json`, `run.json` and the
scheduler's SQLite), by `smets1 run` and `smets1 distributed` at the end of a run and by
`smets1 report DIR` afterwards; beside it, `failed_devices.csv` lists every failed device
(the page shows the first hundred).

Sections: the run (config, seed, version), the verdict and the CI gate, the outcome in
figures, per campaign and per User (released per day, held, refused with reason,
schedules and their batches, TRT met and missed), large images released per day against
capacity (stacked per User, the 500-a-User line), releases per hour with the peak windows
shaded, the release-to-answer distribution against the TRT, requests by state over
simulated time, failures by reason and by model, the failed devices, device states at
the end, background traffic (when the run carried it), the processes of a distributed run,
and the config itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator import report_charts as charts
from orchestrator.report_data import (
    FAILED_CSV,
    FailedDevice,
    RunRecord,
    answer_seconds,
    failed_devices,
    failures_by_model,
    hourly_releases,
    large_released_per_day,
    load_run,
    peak_intervals,
    quantile,
    state_timeline,
    user_label,
    write_failed_csv,
)
from orchestrator.report_format import duration, size
from orchestrator.report_format import esc as _e
from orchestrator.report_format import num as _n
from orchestrator.report_format import when as _when

REPORT_FILE = "report.html"
#: Failed devices listed on the page; all of them are in the CSV.
FAILED_SHOWN = 100
#: Days of a campaign's releases listed in its row; the rest are counted.
DAYS_SHOWN = 7
#: The DCC's default TRT, when the run left no run.json.
DEFAULT_TRT_SECONDS = 5 * 86_400.0
DEFAULT_USER_LIMIT = 500


# -- formatting ---------------------------------------------------------------------


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> str:
    h = "".join(f"<th>{_e(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _facts(rows: Iterable[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="facts">{body}</table>'


def _section(title: str, *parts: str, note: str = "") -> str:
    n = f'<p class="note">{_e(note)}</p>' if note else ""
    return f"<section><h2>{_e(title)}</h2>{n}{''.join(parts)}</section>"


def _chart(title: str, svg: str, caption: str = "") -> str:
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f"<figure><h3>{_e(title)}</h3>{svg}{cap}</figure>"


# -- sections -----------------------------------------------------------------------


def _run_facts(record: RunRecord) -> str:
    s, info = record.summary, record.info
    rows = [("config", str(s.get("config", "?")))]
    if info is not None:
        rows += [
            ("config file", info.config_file or "–"),
            ("config SHA-256", info.config_sha256 or "–"),
            ("seed", str(info.seed)),
            ("smets1-fleet version", info.version),
            ("epoch", f"{_when(info.epoch_seconds)} UTC"),
        ]
        if info.policy.get("kind", "mp230") != "mp230":
            params = ", ".join(
                f"{k}={v}" for k, v in info.policy.items() if k != "kind" and v is not None
            )
            rows.append(("release policy", f"{info.policy['kind']} {params}".strip()))
    else:
        rows.append(("seed", _n(s.get("seed"))))
    mode = (
        "distributed (MQTT, one process per role)"
        if s.get("mode") == "distributed"
        else ("in process (virtual clock)")
    )
    rows.append(("mode", mode))
    if s.get("mode") == "distributed":
        rows.append(("shards, DCO workers", f"{s.get('shards')}, {s.get('dco_workers')}"))
    return _facts(rows)


def _verdict(summary: Mapping[str, Any]) -> str:
    parts = []
    v = summary.get("verdict")
    if v:
        ok = v.get("status") == "valid"
        parts.append(
            f'<p class="{"ok" if ok else "bad"}"><b>Run {_e(v.get("status"))}</b>: '
            f"{_e(v.get('reason', ''))}</p>"
        )
        lat = summary.get("lateness") or {}
        if lat.get("samples"):
            parts.append(
                _facts(
                    [
                        ("worst lateness", duration(lat.get("worst_seconds"))),
                        ("99th percentile lateness", duration(lat.get("p99_seconds"))),
                        (
                            "lateness threshold of a valid run",
                            duration(lat.get("threshold_seconds")),
                        ),
                    ]
                )
            )
    g = summary.get("gate")
    if g:
        status = g.get("status")
        cls = {"passed": "ok", "failed": "bad"}.get(status, "note")
        parts.append(f'<p class="{cls}"><b>CI gate {_e(status)}</b>: {_e(g.get("reason", ""))}</p>')
    return _section("Verdict", *parts) if parts else ""


def _outcome(record: RunRecord) -> str:
    s = record.summary
    acts = s.get("activations") or {}
    failed = sum((s.get("failed") or {}).values())
    updates = s.get("image_updates") or {}
    rows = [
        ("devices", _n(s.get("devices"))),
        ("11.3 requests", _n(s.get("requests"))),
        ("activated", _n(s.get("images_activated"))),
        ("failed", _n(failed)),
        ("unfinished at the end (released or waiting)", _n(s.get("unfinished"))),
        ("held for a schedule (over 500 a User a day)", _n(s.get("held_for_schedule"))),
        ("refused at submission (devices)", _n(s.get("refused"))),
        ("TRT met", _n(s.get("trt_met"))),
        ("TRT missed", _n(s.get("trt_missed"))),
        ("11.3s open past seven days", _n(s.get("overdue"))),
        ("11.1s not stored within seven days", _n(s.get("overdue_11_1"))),
        ("longest 11.1, acceptance to stored", duration(updates.get("longest_seconds"))),
        ("release to answer, median (activated)", duration(acts.get("p50_seconds"))),
        ("release to answer, 95th percentile", duration(acts.get("p95_seconds"))),
        ("release to answer, longest", duration(acts.get("max_seconds"))),
        ("most large images released in a day", _n(s.get("max_large_images_released_in_a_day"))),
        ("DCC capacity a day", _n(s.get("large_images_per_day"))),
        (
            "image data delivered",
            f"{size(s.get('bytes_delivered'))} in {_n(s.get('blocks_delivered'))} blocks",
        ),
        (
            "DCO transfer rounds, retries, resumes",
            f"{_n(s.get('transfer_rounds'))}, "
            f"{_n(s.get('dco_retries'))}, {_n(s.get('dco_resumes'))}",
        ),
    ]
    pipe = s.get("dco_pipe")
    if pipe:
        rows.append(
            (
                "DCO outbound capacity (dco.throughput_bytes_per_second)",
                f"{size(pipe['bytes_per_second'])}/s; {size(pipe['bytes'])} sent in"
                f" {_n(pipe['frames'])} frames, each waiting {duration(pipe['mean_wait_seconds'])}"
                " on average",
            )
        )
    rows += [
        ("simulated time", duration(s.get("simulated_seconds"))),
        ("wall time", f"{_n(s.get('wall_seconds'))} s"),
        ("peak memory (RSS) of a process", size(s.get("peak_rss_bytes"))),
    ]
    return _section("Outcome", _facts(rows))


def _per_day(per_day: Mapping[str, int]) -> str:
    items = list(per_day.items())
    text = ", ".join(f"{d}: {n:,}" for d, n in items[:DAYS_SHOWN])
    if len(items) > DAYS_SHOWN:
        text += f", … ({len(items)} days, {sum(per_day.values()):,} in all)"
    return text or "–"


def _campaigns(record: RunRecord) -> str:
    camps = record.summary.get("campaigns") or []
    if not camps:
        return ""
    rows = [
        (
            c["name"],
            user_label(record.info, c["user"]),
            _n(c["devices"]),
            "large" if c.get("large") else "small",
            _n(c["activated"]),
            _n(c["held"]),
            _n(c["refused"]),
            _n(c["trt_met"]),
            _n(c["trt_missed"]),
            _per_day(c.get("released_per_day") or {}),
        )
        for c in camps
    ]
    head = (
        "campaign",
        "User",
        "devices",
        "image",
        "activated",
        "held",
        "refused",
        "TRT met",
        "TRT missed",
        "released per day",
    )
    return _section("Per campaign", _table(head, rows))


def _users(record: RunRecord) -> str:
    users: Mapping[str, Any] = record.summary.get("users") or {}
    if not users:
        return ""
    rows = []
    details = []
    for eui, u in users.items():
        label = user_label(record.info, eui)
        per_day = u.get("large_released_per_day") or {}
        rows.append(
            (
                label,
                _n(u["requests"]),
                _n(u["activated"]),
                _n(u["failed"]),
                _n(u["held_for_schedule"]),
                _n(u.get("security")),
                _n(u["trt_met"]),
                _n(u["trt_missed"]),
                _n(max(per_day.values(), default=0)),
                _per_day(per_day),
            )
        )
        if u.get("held_reason"):
            details.append(f"<p><b>{_e(label)}</b> held: {_e(u['held_reason'])}</p>")
        for f in u.get("refused") or []:
            earliest = (
                f" (earliest date that would work: {f['earliest_date']})"
                if f.get("earliest_date")
                else ""
            )
            details.append(
                f"<p><b>{_e(label)}</b> refused {f['devices']:,} device(s) of campaign "
                f"{_e(f['campaign'])}: {_e(f['reason'])}{_e(earliest)}</p>"
            )
        for sch in u.get("schedules") or []:
            batches = _table(
                ("date", "devices", "released", "done", "failed", "TRT met", "TRT missed"),
                (
                    (
                        b["date"],
                        _n(b["devices"]),
                        _n(b["released"]),
                        _n(b["done"]),
                        _n(b["failed"]),
                        _n(b["trt_met"]),
                        _n(b["trt_missed"]),
                    )
                    for b in sch.get("batches") or []
                ),
                "batches",
            )
            details.append(
                f"<h3>{_e(label)}: schedule {sch['schedule_id']} ({_e(sch['state'])}, "
                f"{sch['devices']:,} devices, moved {sch['moves']} time(s))</h3>{batches}"
            )
    head = (
        "User",
        "requests",
        "activated",
        "failed",
        "held",
        "security",
        "TRT met",
        "TRT missed",
        "most large a day",
        "large released per day",
    )
    return _section("Per User", _table(head, rows), *details)


def _timing_charts(record: RunRecord, trt: float, capacity: int, user_limit: int) -> str:
    out = []
    info = record.info
    epoch = info.epoch_seconds if info else 0.0
    daily = large_released_per_day(record, epoch)
    if daily.days:
        out.append(
            _chart(
                "Large images released per day, by User",
                charts.daily_releases(daily.days, daily.by_user, capacity, user_limit),
                f"Days are UTC days. The DCC releases at most {capacity:,} large images a "
                f"day; a User without an agreed schedule at most {user_limit:,}.",
            )
        )
        start, counts = hourly_releases(record.requests)
        peaks = peak_intervals(info, start, start + len(counts) * 3600) if info else []
        out.append(
            _chart(
                "Large images released per simulated hour",
                charts.hourly_releases(start, counts, peaks),
                "Shaded: the DCC's peak windows, when no large image is released.",
            )
        )
    took = answer_seconds(record.requests)
    if took:
        within = sum(1 for t in took if t <= trt)
        p50, p95 = quantile(took, 0.5), quantile(took, 0.95)
        out.append(
            _chart(
                "Release to answer, against the TRT",
                charts.answer_distribution(took, trt, p50, p95),
                f"{len(took):,} requests answered (activated or failed): {within:,} "
                f"({100 * within / len(took):.1f} %) within the TRT of {duration(trt)}; "
                f"median {duration(p50)}, 95th percentile {duration(p95)}, longest "
                f"{duration(took[-1])}.",
            )
        )
    times, series = state_timeline(record.requests)
    if times:
        out.append(
            _chart(
                "Devices by request state over simulated time",
                charts.state_timeline(times, series),
                "Each device's 11.3: waiting for its day, held for a schedule, in flight "
                "(released to the DCO), then activated, failed or cancelled.",
            )
        )
    if not out:
        note = (
            "The scheduler's store was not found in the run's folder: the charts over time "
            "are left out."
            if not record.has_requests
            else "No request was released."
        )
        return _section("Over time", note=note)
    return _section("Over time", *out)


def _failures(record: RunRecord, devices: Sequence[FailedDevice]) -> str:
    failed: Mapping[str, int] = record.summary.get("failed") or {}
    if not failed:
        return _section("Failures", "<p>No request failed.</p>")
    parts = [_chart("Failures by reason", charts.counts_bars(failed, "failed requests"))]
    by_model = failures_by_model(devices)
    if by_model and set(by_model) != {"?"}:
        parts.append(_chart("Failures by model", charts.counts_bars(by_model, "failed requests")))
    if devices:
        rows = (
            (
                d.device,
                d.model,
                d.campaign,
                d.user,
                d.reason.replace("_", " "),
                _when(d.released_at),
                _when(d.answered_at),
            )
            for d in devices[:FAILED_SHOWN]
        )
        head = ("device", "model", "campaign", "User", "reason", "released", "answered")
        shown = min(len(devices), FAILED_SHOWN)
        parts.append(
            f"<h3>Failed devices ({shown:,} of {len(devices):,} shown)</h3>"
            f'<p>All of them: <a href="{FAILED_CSV}">{FAILED_CSV}</a>, beside this page.</p>'
            + _table(head, rows, "devices")
        )
    return _section("Failures", *parts)


def _device_states(summary: Mapping[str, Any]) -> str:
    states: Mapping[str, int] = summary.get("device_states") or {}
    if not states:
        return ""
    parts = [
        _chart(
            "Device states at the end",
            charts.counts_bars(states, "devices", colour="#3b6ea5"),
            "As each emulated meter's flash records it.",
        )
    ]
    transitions: Mapping[str, int] = summary.get("device_transitions") or {}
    if transitions:
        parts.append(
            "<h3>Entries into each state</h3>"
            + _table(
                ("state", "entries"), ((k.replace("_", " "), _n(v)) for k, v in transitions.items())
            )
        )
    return _section("Devices", *parts)


def _sampled(share: float) -> str:
    """How much of the fleet's traffic the counts are of, when not all of it."""
    if share >= 1:
        return ""
    return f" (a sample: {share:.2%} of the fleet's requests; shares and latencies estimate all)"


def _background(summary: Mapping[str, Any]) -> str:
    """Background traffic (issue 16): met and missed by kind, and by hour of day."""
    bg: Mapping[str, Any] | None = summary.get("background")
    if not bg:
        return ""
    facts = _facts(
        [
            ("requests", _n(bg["requests"]) + _sampled(bg.get("sample_share", 1.0))),
            ("met", _n(bg["met"])),
            ("missed (of them unanswered)", f"{_n(bg['missed'])} ({_n(bg['unanswered'])})"),
            ("still open at the end", _n(bg["open_at_end"])),
            ("latency p50, p95", f"{duration(bg['p50_seconds'])}, {duration(bg['p95_seconds'])}"),
            ("waited for the DCO (max_open_requests)", _n(bg["waited_for_dco"])),
        ]
    )
    kinds = _table(
        ("kind", "target", "requests", "met", "missed", "unanswered", "p50", "p95"),
        (
            (
                name.replace("_", " "),
                duration(k["target_seconds"]),
                _n(k["requests"]),
                _n(k["met"]),
                _n(k["missed"]),
                _n(k["unanswered"]),
                duration(k["p50_seconds"]),
                duration(k["p95_seconds"]),
            )
            for name, k in bg["kinds"].items()
        ),
    )
    by_hour = bg["by_hour"]
    hours = _table(
        (f"hour ({by_hour['timezone']})", "requests", "missed", "p95"),
        (
            (f"{h:02d}:00", _n(n), _n(m), duration(p95))
            for h, (n, m, p95) in enumerate(
                zip(by_hour["requests"], by_hour["missed"], by_hour["p95_seconds"], strict=True)
            )
        ),
    )
    return _section(
        "Background traffic",
        facts,
        "<h3>By kind</h3>" + kinds,
        "<h3>By hour of day the request was made</h3>" + hours,
        note="Ordinary service requests the DCO carried for the fleet beside firmware, on the "
        "same links: met when answered within the kind's target.",
    )


#: A distributed summary's `roles` (orchestrator.status.RoleUsage): (key, heading, format).
ROLE_COLUMNS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("role", "role", str),
    ("cpu_seconds", "CPU s", _n),
    ("peak_rss_bytes", "peak RSS", size),
    ("worst_lag_seconds", "worst lag", duration),
    ("lateness_worst_seconds", "lateness worst", duration),
    ("lateness_p99_seconds", "lateness p99", duration),
    ("lateness_samples", "lateness samples", _n),
)


def _roles(summary: Mapping[str, Any]) -> str:
    roles: Mapping[str, Mapping[str, Any]] = summary.get("roles") or {}
    if not roles:
        return ""
    rows = [
        [name] + ["–" if u.get(k) is None else f(u.get(k)) for k, _, f in ROLE_COLUMNS]
        for name, u in roles.items()
    ]
    cpu = sum(u["cpu_seconds"] for u in roles.values() if u.get("cpu_seconds") is not None)
    rows.append(["all", "", _n(cpu)] + [""] * (len(ROLE_COLUMNS) - 2))
    head = ["process", *(h for _, h, _ in ROLE_COLUMNS)]
    return _section(
        "Processes",
        _table(head, rows, "roles"),
        note="CPU: user + system seconds of each process; peak RSS: the most memory it "
        "held resident; lag and lateness: how far behind the shared clock it ran, and how "
        "late what it handled arrived, in simulated time.",
    )


def _config(record: RunRecord) -> str:
    info = record.info
    if info is None or not info.config_text:
        return ""
    cut = " (cut: the file is longer)" if info.config_truncated else ""
    return _section(f"Config{cut}", f"<pre>{_e(info.config_text)}</pre>")


STYLE = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:15px;"
    "margin:2em auto;max-width:62em;padding:0 1em;color:#222}"
    "h1{font-size:1.6em}h2{font-size:1.3em;border-bottom:2px solid #3b6ea5;margin-top:1.6em}"
    "h3{font-size:1.05em;margin:1em 0 .3em}"
    "table{border-collapse:collapse;margin:.4em 0}th,td{padding:3px 10px;text-align:left;"
    "border-bottom:1px solid #ddd;vertical-align:top}td{font-variant-numeric:tabular-nums}"
    "table.facts th{font-weight:normal;color:#444}"
    "figure{margin:1em 0}figcaption,.note{color:#444;font-size:.92em}"
    "svg.chart{width:100%;height:auto}"
    ".ok{color:#1e7b34}.bad{color:#b5443b}"
    "pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.85em}"
    "@media print{body{margin:0;max-width:none;font-size:11pt}"
    "figure,table.facts{break-inside:avoid}h2{break-after:avoid}}"
)


def render(record: RunRecord) -> str:
    s = record.summary
    info = record.info
    name = _e(s.get("config", "run"))
    trt = info.trt_seconds if info else DEFAULT_TRT_SECONDS
    capacity = int(s.get("large_images_per_day") or (info.large_images_per_day if info else 12_000))
    user_limit = info.user_daily_limit if info else DEFAULT_USER_LIMIT
    devices = failed_devices(record)
    mode = "distributed run" if s.get("mode") == "distributed" else "run"
    sections = [
        f"<h1>smets1-fleet {mode}: {name}</h1>",
        _run_facts(record),
        _verdict(s),
        _outcome(record),
        _campaigns(record),
        _users(record),
        _timing_charts(record, trt, capacity, user_limit),
        _failures(record, devices),
        _device_states(s),
        _background(s),
        _roles(s),
        _config(record),
    ]
    return (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>{name}: smets1-fleet "
        f"report</title><style>{STYLE}</style><body>{''.join(sections)}</body></html>\n"
    )


def write_report(
    run_dir: Path, record: RunRecord | None = None, store_dir: Path | None = None
) -> Path:
    """Write `report.html` and `failed_devices.csv` into `run_dir`; the record is read
    from the folder unless given (the scheduler's store from `store_dir`, if given)."""
    record = record if record is not None else load_run(run_dir, store_dir)
    write_failed_csv(run_dir / FAILED_CSV, failed_devices(record))
    path = run_dir / REPORT_FILE
    path.write_text(render(record), encoding="utf-8")
    return path
