"""The report of `smets1 compare`: `compare.json`, and `compare.html`, one
self-contained page (no script, no external file) with the policies side by side.

The table (orchestrator.policy_compare.table_rows) has a column a policy; the charts
are the run report's own (orchestrator.report_charts), one a policy in a row: large
images released per day stacked by User, and activated per User over simulated time;
with background traffic, its misses and p95 latency by hour of day, a line a policy.
Each policy's full run report is in its folder beside the page.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator import report_charts as charts
from orchestrator.policy_compare import table_rows
from orchestrator.report import STYLE, _chart, _facts, _section, _table
from orchestrator.report_format import esc as _e

JSON_FILE = "compare.json"
HTML_FILE = "compare.html"

_GRID_STYLE = (
    "body{max-width:110em}"
    ".side{display:grid;gap:1em;grid-template-columns:repeat(var(--n),minmax(0,1fr))}"
    ".side figure{margin:0}"
)


def _side_by_side(title: str, figures: list[str], note: str = "") -> str:
    grid = f'<div class="side" style="--n:{len(figures)}">{"".join(figures)}</div>'
    return _section(title, grid, note=note)


def _background_charts(ps: list[dict[str, Any]]) -> str:
    """Background traffic by hour of day, a line a policy: misses, and p95 latency
    (nothing when no run carried background traffic)."""
    runs = {p["policy"]: p["background"] for p in ps if p.get("background")}
    if not runs:
        return ""
    first = next(iter(runs.values()))["by_hour"]
    zone, peaks = first["timezone"], first["peak_windows"]
    missed = charts.hour_of_day_lines(
        {k: b["by_hour"]["missed"] for k, b in runs.items()},
        "background requests missed",
        zone,
        peaks,
    )
    p95 = charts.hour_of_day_lines(
        {k: b["by_hour"]["p95_seconds"] for k, b in runs.items()},
        "background latency p95 (s)",
        zone,
        peaks,
    )
    released = charts.hour_of_day_lines(
        {p["policy"]: p["released_by_hour"] for p in ps if p.get("background")},
        "large images released",
        zone,
        peaks,
    )
    return _section(
        "Background traffic by hour of day",
        _chart("large images released, by hour of day (all days together)", released),
        _chart("missed, by the hour the request was made", missed),
        _chart("p95 latency, by the hour the request was made", p95),
        note="Ordinary service requests the DCO carried beside firmware, on the same links:"
        " missed when not answered within their kind's target. A line a policy; the peak"
        " windows are the config's (MP230 and spare_capacity release nothing large in them).",
    )


def render(result: dict[str, Any]) -> str:
    ps = result["policies"]
    name = _e(result["config"])
    facts = _facts(
        [
            ("config", result["config_file"]),
            ("seed", str(result["seed"])),
            ("devices", f"{result['devices']:,}"),
            *(
                (f"policy {p['policy']}", f"{json.dumps(p['fields'])}; run: {p['folder']}")
                for p in ps
            ),
        ]
    )
    rows = table_rows(result)
    table = _table(["", *(p["policy"] for p in ps)], rows)
    daily = [
        _chart(
            p["policy"],
            charts.daily_releases(
                p["daily"]["days"],
                p["daily"]["by_user"],
                p["large_images_per_day"],
                p["user_daily_limit"],
            ),
        )
        for p in ps
    ]
    completion = [
        _chart(
            p["policy"],
            charts.state_timeline(
                p["completion"]["times"], p["completion"]["by_user"], charts.COLOURS
            )
            if p["completion"]["by_user"]
            else "<p>no requests</p>",
        )
        for p in ps
    ]
    background = _background_charts(ps)
    sections = [
        f"<h1>smets1-fleet: release policies compared on {name}</h1>",
        facts,
        _section(
            "Side by side",
            table,
            note="Campaign length: first submission to last answer. Per day: over the days"
            " from the first release to the last. Open past 7 days: 11.3s still unanswered"
            " seven days after submission; 11.1 past 7 days: images not stored by then.",
        ),
        _side_by_side(
            "Large images released per day",
            daily,
            note="Stacked by User. The DCC capacity and the 500-a-User line are MP230's;"
            " spare_capacity has both, no_limit neither, equal_share only the capacity.",
        ),
        _side_by_side("Activated per User over simulated time", completion),
        background,
    ]
    return (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>{name}: release policies"
        f" compared</title><style>{STYLE}{_GRID_STYLE}</style><body>{''.join(sections)}"
        "</body></html>\n"
    )


def write_comparison(out: Path, result: dict[str, Any]) -> tuple[Path, Path]:
    """Write compare.json and compare.html into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    js = out / JSON_FILE
    js.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    html = out / HTML_FILE
    html.write_text(render(result), encoding="utf-8")
    return js, html
