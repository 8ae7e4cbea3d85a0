"""The report's charts: matplotlib figures as inline SVG (text kept as text).

matplotlib does what a chart needs to be read on paper or in a PNG: axes with round
ticks and titles, stacked bars with a legend, shaded windows, values written on the bars.
Each function returns one `<svg>` element; the page (orchestrator.report) stays one file.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from smets1.clock import to_datetime

WIDTH_IN = 9.0
HEIGHT_IN = 3.8
#: A line's value stays on the scale while it is within this factor of the data's top.
LINE_IN_SCALE = 3.0
#: Bars get their value written on them up to this many bars.
LABELLED_BARS = 40
COLOURS = ("#3b6ea5", "#e08a2c", "#4e9a52", "#b5443b", "#7d5ba6", "#8c6d31", "#c06aa6", "#666")
STATE_COLOURS = {
    "activated": "#4e9a52",
    "failed": "#b5443b",
    "cancelled": "#999999",
    "in flight": "#3b6ea5",
    "waiting": "#e0b44c",
    "held": "#7d5ba6",
}
#: Any: matplotlib types rcParams keys as literals.
_RC: Any = {
    "svg.fonttype": "none",
    "svg.hashsalt": "smets1-report",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.color": "#dddddd",
    "legend.fontsize": 9,
}
_THOUSANDS = FuncFormatter(lambda v, _: f"{v:,.0f}")


def _figure(height: float = HEIGHT_IN) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(WIDTH_IN, height), layout="constrained")
    return fig, fig.add_subplot()


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    with rc_context(_RC):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    # Scales with the page (print, narrow windows) while keeping its proportions.
    return re.sub(
        r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r'<svg\1 class="chart"', text, count=1
    )


def _label_bars(ax: Axes, xs: Sequence[float], tops: Sequence[float], fmt: str = "{:,.0f}") -> None:
    if len(xs) > LABELLED_BARS:
        return
    for x, v in zip(xs, tops, strict=True):
        if v:
            ax.annotate(fmt.format(v), (x, v), xytext=(0, 2), textcoords="offset points",
                        ha="center", va="bottom", fontsize=8)  # fmt: skip


def _limit_line(ax: Axes, value: float, label: str, colour: str, top: float) -> bool:
    """A horizontal line at `value` if it is on the scale; else False."""
    if value > top:
        return False
    ax.axhline(value, color=colour, linestyle="--", linewidth=1.3, label=label)
    return True


def daily_releases(
    days: Sequence[str],
    by_user: Mapping[str, Sequence[int]],
    capacity: int,
    user_limit: int,
) -> str:
    """Large images released per day, stacked by User, against the daily capacity and
    the 500-a-User limit (each drawn while it is near enough the data to keep it legible;
    otherwise said in the legend)."""
    with rc_context(_RC):
        fig, ax = _figure()
        xs = list(range(len(days)))
        totals = [sum(v[i] for v in by_user.values()) for i in xs]
        peak = max(totals, default=0) or 1
        lines = [v for v in (capacity, user_limit) if v <= peak * LINE_IN_SCALE]
        top = max([peak, *lines]) * 1.18
        bottom = [0] * len(xs)
        for i, (user, counts) in enumerate(by_user.items()):
            ax.bar(xs, counts, bottom=bottom, color=COLOURS[i % len(COLOURS)], label=user)
            bottom = [a + b for a, b in zip(bottom, counts, strict=True)]
        _label_bars(ax, xs, totals)
        if not _limit_line(ax, capacity, f"DCC capacity {capacity:,} a day", "#b5443b", top):
            ax.plot([], [], " ", label=f"DCC capacity {capacity:,} a day (above this scale)")
        if not _limit_line(ax, user_limit, f"{user_limit:,} a User a day without a schedule",
                           "#7d5ba6", top):  # fmt: skip
            ax.plot([], [], " ", label=f"{user_limit:,} a User a day (above this scale)")
        ax.set_ylim(0, top)
        every = max(1, len(days) // 20)
        rotate = len(days) > 8
        ax.set_xticks(
            xs[::every],
            days[::every],
            rotation=45 if rotate else 0,
            ha="right" if rotate else "center",
        )
        ax.grid(axis="x", visible=False)
        ax.yaxis.set_major_formatter(_THOUSANDS)
        ax.set_xlabel("day (UTC)")
        ax.set_ylabel("large images released")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        return _svg(fig)


def answer_distribution(
    seconds: Sequence[float], trt_seconds: float, p50: float | None, p95: float | None
) -> str:
    """How long requests took from release to answer, in hours, against the TRT (drawn
    while it is near enough the data; otherwise said in the legend)."""
    from orchestrator.report_format import duration

    with rc_context(_RC):
        fig, ax = _figure()
        # Hours, or minutes when every answer came within two hours.
        unit, unit_name = (60.0, "minutes") if max(seconds, default=0) < 7200 else (3600.0, "hours")
        hours = [s / unit for s in seconds]
        trt_h = trt_seconds / unit
        longest = max(hours, default=0.0) or 1.0
        trt_on_scale = trt_h <= longest * LINE_IN_SCALE
        top = (max(longest, trt_h) if trt_on_scale else longest) * 1.05
        bins = 40
        width = top / bins
        counts = [0] * bins
        for h in hours:
            counts[min(bins - 1, int(h / width))] += 1
        centres = [(i + 0.5) * width for i in range(bins)]
        ax.bar(centres, counts, width=width * 0.9, color="#3b6ea5", label="requests answered")
        _label_bars(ax, centres, counts)
        trt_label = f"TRT {trt_seconds / 86400:g} days ({trt_seconds / 3600:,.0f} h)"
        if trt_on_scale:
            ax.axvline(trt_h, color="#b5443b", linestyle="--", linewidth=1.5, label=trt_label)
        else:
            ax.plot([], [], " ", label=f"{trt_label}: beyond this scale")
        for value, name, colour in (
            (p50, "median", "#4e9a52"),
            (p95, "95th percentile", "#e08a2c"),
        ):
            if value is not None:
                ax.axvline(
                    value / unit, color=colour, linewidth=1.3, label=f"{name} {duration(value)}"
                )
        ax.set_xlim(0, top)
        ax.set_ylim(0, max(counts, default=1) * 1.18 or 1)
        ax.yaxis.set_major_formatter(_THOUSANDS)
        ax.set_xlabel(f"release to answer, simulated {unit_name}")
        ax.set_ylabel("requests")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        return _svg(fig)


def _x(t: float) -> float:
    """A simulated time as matplotlib's date number (the axis then shows dates)."""
    return float(date2num(to_datetime(t)))


def _dates(ax: Axes) -> None:
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))


def hourly_releases(
    start: float, counts: Sequence[int], peaks: Sequence[tuple[float, float]]
) -> str:
    """Large-image releases per simulated hour, with the peak windows shaded."""
    with rc_context(_RC):
        fig, ax = _figure()
        xs = [_x(start + i * 3600 + 1800) for i in range(len(counts))]
        ax.bar(xs, counts, width=1 / 24 * 0.9, color="#3b6ea5", label="large images released")
        for i, (a, b) in enumerate(peaks):
            ax.axvspan(_x(a), _x(b), color="#b5443b", alpha=0.15, lw=0,
                       label="peak window: no large releases" if i == 0 else None)  # fmt: skip
        _dates(ax)
        ax.set_ylim(0, max(counts, default=1) * 1.18 or 1)
        ax.yaxis.set_major_formatter(_THOUSANDS)
        ax.set_xlabel("simulated time (UTC)")
        ax.set_ylabel("released in the hour")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        return _svg(fig)


def hour_of_day_lines(
    series: Mapping[str, Sequence[float]],
    ylabel: str,
    timezone: str,
    peaks: Sequence[Sequence[float]] = (),
) -> str:
    """One line a series over the 24 hours of the day (a value an hour, 00:00 first),
    the peak windows (hours of the day) shaded."""
    with rc_context(_RC):
        fig, ax = _figure()
        hours = [h + 0.5 for h in range(24)]
        for i, (a, b) in enumerate(peaks):
            ax.axvspan(a, b, color="#b5443b", alpha=0.12, lw=0,
                       label="peak window" if i == 0 else None)  # fmt: skip
        for i, (name, values) in enumerate(series.items()):
            ax.plot(hours, values, marker="o", ms=3, lw=1.6, color=COLOURS[i % len(COLOURS)],
                    label=name)  # fmt: skip
        ax.set_xlim(0, 24)
        ax.set_xticks(range(0, 25, 3), [f"{h:02d}:00" for h in range(0, 25, 3)])
        top = max((max(v, default=0) for v in series.values()), default=0)
        ax.set_ylim(0, top * 1.15 or 1)
        if all(float(x).is_integer() for v in series.values() for x in v):
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: whole ticks
        ax.yaxis.set_major_formatter(_THOUSANDS if top >= 10 else FuncFormatter(_short))
        ax.set_xlabel(f"hour of day ({timezone})")
        ax.set_ylabel(ylabel)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        return _svg(fig)


def _short(v: float, _: Any) -> str:
    return f"{v:g}"


def state_timeline(
    times: Sequence[float],
    series: Mapping[str, Sequence[int]],
    colours: Sequence[str] | None = None,
) -> str:
    """Requests by state over simulated time, stacked; the legend gives each final count.
    `colours`: one a series, in order (default: the colours of the states)."""
    with rc_context(_RC):
        fig, ax = _figure(4.2)
        xs = [_x(t) for t in times]
        shown = {k: v for k, v in series.items() if any(v)}
        ax.stackplot(
            xs,
            *shown.values(),
            labels=[f"{k} ({v[-1]:,} at the end)" for k, v in shown.items()],
            colors=[
                STATE_COLOURS.get(k, "#888") if colours is None else colours[i % len(colours)]
                for i, k in enumerate(shown)
            ],
        )
        _dates(ax)
        ax.yaxis.set_major_formatter(_THOUSANDS)
        ax.set_xlabel("simulated time (UTC)")
        ax.set_ylabel("devices (requests)")
        ax.set_xlim(xs[0], xs[-1])
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        return _svg(fig)


def counts_bars(counts: Mapping[str, int], xlabel: str, colour: str = "#b5443b") -> str:
    """Horizontal bars, one a key, each with its count written beside it."""
    with rc_context(_RC):
        items = sorted(counts.items(), key=lambda kv: kv[1])
        fig, ax = _figure(max(1.6, 0.42 * len(items) + 0.9))
        ys = list(range(len(items)))
        values = [v for _, v in items]
        ax.barh(ys, values, color=colour)
        ax.set_yticks(ys, [k.replace("_", " ") for k, _ in items])
        for y, v in zip(ys, values, strict=True):
            ax.annotate(f"{v:,}", (v, y), xytext=(3, 0), textcoords="offset points",
                        va="center", fontsize=9)  # fmt: skip
        ax.set_xlim(0, max(values, default=1) * 1.15 or 1)
        ax.xaxis.set_major_formatter(_THOUSANDS)
        ax.xaxis.set_major_locator(MaxNLocator(8, integer=True))
        ax.grid(axis="y", visible=False)
        ax.set_xlabel(xlabel)
        return _svg(fig)
