"""A self-contained HTML report of a run: the summary's figures and charts as inline SVG.

No script, no external file: the page can be mailed or attached to a ticket as it is.
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
    sections = [
        f"<h1>smets1-fleet run: {name}</h1>",
        _table(facts),
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
