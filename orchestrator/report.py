"""A self-contained HTML report of a run: the summary's figures and charts as inline SVG.

No script, no external file: the page can be mailed or attached to a ticket as it is.
`smets1 run` and `smets1 distributed` write the same page; a distributed run's summary
also has `roles`, shown as one row per process (CPU, peak memory, lag, lateness).
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

BAR_CHART_WIDTH_PX = 720
BAR_CHART_HEIGHT_PX = 220
HOUR_SECONDS = 3600.0


def hourly_counts(times: Iterable[float], start: float) -> list[int]:
    """How many events fall in each simulated hour after `start`."""
    counts: list[int] = []
    for t in times:
        h = max(0, math.floor((t - start) / HOUR_SECONDS))
        if h >= len(counts):
            counts.extend([0] * (h + 1 - len(counts)))
        counts[h] += 1
    return counts


def bar_chart(
    title: str,
    labels: Sequence[str],
    values: Sequence[float],
    limit: float | None = None,
    limit_label: str = "",
) -> str:
    """An SVG bar chart; `limit` draws a horizontal line (a capacity, say)."""
    w, h, pad = BAR_CHART_WIDTH_PX, BAR_CHART_HEIGHT_PX, 36
    if not values:
        return f"<h3>{html.escape(title)}</h3><p>nothing to show</p>"
    top = max([*values, limit or 0, 1])
    n = len(values)
    bw = (w - 2 * pad) / n
    parts = [
        f'<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        f'aria-label="{html.escape(title)}">',
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#888"/>',
        f'<text x="4" y="{pad - 8}" font-size="11">{top:,.0f}</text>',
    ]
    for i, v in enumerate(values):
        bh = (h - 2 * pad) * v / top
        x = pad + i * bw
        parts.append(
            f'<rect x="{x + bw * 0.1:.1f}" y="{h - pad - bh:.1f}" width="{bw * 0.8:.1f}" '
            f'height="{bh:.1f}" fill="#3b6ea5"><title>{html.escape(labels[i])}: {v:,.0f}'
            "</title></rect>"
        )
    step = max(1, n // 12)
    for i in range(0, n, step):
        x = pad + i * bw + bw / 2
        parts.append(
            f'<text x="{x:.1f}" y="{h - pad + 14}" font-size="10" text-anchor="middle">'
            f"{html.escape(labels[i])}</text>"
        )
    if limit is not None:
        y = h - pad - (h - 2 * pad) * limit / top
        parts.append(
            f'<line x1="{pad}" y1="{y:.1f}" x2="{w - pad}" y2="{y:.1f}" stroke="#c0392b" '
            f'stroke-dasharray="4 3"/><text x="{w - pad}" y="{y - 4:.1f}" font-size="10" '
            f'text-anchor="end" fill="#c0392b">{html.escape(limit_label)}</text>'
        )
    parts.append("</svg>")
    return f"<h3>{html.escape(title)}</h3>" + "".join(parts)


def _table(rows: Mapping[str, Any]) -> str:
    body = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in rows.items()
    )
    return f"<table>{body}</table>"


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.3f}"
    return str(v)


#: A distributed summary's `roles` (orchestrator.status.RoleUsage) as table columns:
#: (key, heading).
ROLE_COLUMNS = (
    ("role", "role"),
    ("cpu_seconds", "CPU s"),
    ("peak_rss_bytes", "peak RSS MiB"),
    ("worst_lag_seconds", "worst lag s"),
    ("lateness_worst_seconds", "lateness worst s"),
    ("lateness_p99_seconds", "lateness p99 s"),
    ("lateness_samples", "lateness samples"),
)
MIB = 2**20
#: A summary's `lateness` (orchestrator.verdict) under the verdict: (key, label).
LATENESS_ROWS = (
    ("worst_seconds", "worst lateness, simulated s"),
    ("p99_seconds", "99th percentile lateness, simulated s"),
    ("samples", "lateness samples"),
    ("threshold_seconds", "threshold of a valid run, simulated s"),
)


def _verdict(summary: Mapping[str, Any]) -> str:
    """The verdict (orchestrator.verdict) and the lateness it rests on."""
    v: Mapping[str, Any] | None = summary.get("verdict")
    if not v:
        return ""
    status = str(v.get("status", "unknown"))
    colour = "#1e7b34" if status == "valid" else "#c0392b"
    parts = [
        f'<h2>Verdict: <span style="color:{colour}">{html.escape(status)}</span></h2>',
        f"<p>{html.escape(str(v.get('reason', '')))}</p>",
    ]
    lateness: Mapping[str, Any] = summary.get("lateness", {})
    if lateness:
        parts.append(_table({label: lateness[k] for k, label in LATENESS_ROWS if k in lateness}))
    return "".join(parts)


def _roles_table(roles: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per process of a distributed run, and their totals."""
    if not roles:
        return ""

    def cell(key: str, v: Any) -> str:
        if v is None:
            return "–"
        if key == "peak_rss_bytes":
            return f"{v / MIB:,.1f}"
        return _fmt(v)

    head = "".join(f"<th>{html.escape(h)}</th>" for _, h in ROLE_COLUMNS)
    rows = [f"<tr><th>process</th>{head}</tr>"]
    for name, usage in roles.items():
        cells = "".join(f"<td>{html.escape(cell(k, usage.get(k)))}</td>" for k, _ in ROLE_COLUMNS)
        rows.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    cpu = [u["cpu_seconds"] for u in roles.values() if u.get("cpu_seconds") is not None]
    rss = [u["peak_rss_bytes"] for u in roles.values() if u.get("peak_rss_bytes") is not None]
    rows.append(
        f"<tr><th>all</th><td></td><td>{sum(cpu):,.3f}</td>"
        f"<td>{sum(rss) / MIB:,.1f}</td>" + "<td></td>" * (len(ROLE_COLUMNS) - 3) + "</tr>"
    )
    return (
        "<h2>Processes</h2><p>CPU: user + system seconds of each process; peak RSS: the "
        "most memory it held resident; lag and lateness: how far behind the shared clock "
        "it ran, and how late what it handled arrived, in simulated seconds.</p>"
        f'<table id="roles">{"".join(rows)}</table>'
    )


def render(summary: Mapping[str, Any], activations_per_hour: Sequence[int] = ()) -> str:
    name = html.escape(str(summary.get("config", "run")))
    facts = {
        k: summary[k]
        for k in (
            "devices",
            "requests",
            "images_activated",
            "blocks_delivered",
            "bytes_delivered",
            "simulated_days",
            "wall_seconds",
            "peak_rss_bytes",
            "transfer_rounds",
            "dco_retries",
            "dco_resumes",
            "dco_stray_frames",
            "trt_met",
            "trt_missed",
            "max_large_images_released_in_a_day",
            "overdue",
            "overdue_11_1",
        )
        if k in summary
    }
    # 11.1s: answered when the DCO has stored the image; past seven days, Users' systems
    # fail them (MP230).
    updates: Mapping[str, Any] = summary.get("image_updates") or {}
    if "longest_seconds" in updates:
        facts["longest_11_1_seconds"] = updates["longest_seconds"]
    per_day: Mapping[str, int] = summary.get("large_images_released_per_day", {})
    failed: Mapping[str, int] = summary.get("failed", {})
    states: Mapping[str, int] = summary.get("device_states", {})
    capacity = summary.get("large_images_per_day")
    transitions: Mapping[str, int] = summary.get("device_transitions", {})
    mode = "distributed run" if summary.get("mode") == "distributed" else "run"
    sections = [
        f"<h1>smets1-fleet {mode}: {name}</h1>",
        _verdict(summary),
        _table(facts),
        _roles_table(summary.get("roles", {})),
        bar_chart(
            "Large images released per day",
            list(per_day),
            list(per_day.values()),
            limit=capacity,
            limit_label=f"capacity {capacity:,}" if capacity else "",
        ),
        bar_chart(
            "Activations per simulated hour",
            [f"h{i}" for i in range(len(activations_per_hour))],
            list(activations_per_hour),
        ),
        bar_chart("Failures by reason", list(failed), list(failed.values())),
        bar_chart("Device states at the end", list(states), list(states.values())),
    ]
    if transitions:
        sections += ["<h3>Device state entries</h3>", _table(transitions)]
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:60em}"
        "table{border-collapse:collapse}th,td{padding:2px 10px;text-align:left;"
        "border-bottom:1px solid #ddd}td{font-variant-numeric:tabular-nums}"
    )
    return (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>{name}</title>"
        f"<style>{style}</style><body>{''.join(sections)}</body></html>\n"
    )


def write_report(
    path: Path, summary: Mapping[str, Any], activations_per_hour: Sequence[int] = ()
) -> None:
    path.write_text(render(summary, activations_per_hour), encoding="utf-8")
