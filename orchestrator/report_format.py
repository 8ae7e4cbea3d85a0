"""How the report writes numbers, sizes, durations and times for a reader."""

from __future__ import annotations

import html
from typing import Any

from smets1.clock import to_datetime

MIB = 2**20


def esc(v: Any) -> str:
    return html.escape(str(v))


def num(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.3f}".rstrip("0").rstrip(".") if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def duration(seconds: float | None) -> str:
    """Simulated seconds as a reader takes them: '12.1 h', '3.0 days', '45 s'."""
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:,.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:,.1f} min"
    if seconds < 2 * 86_400:
        return f"{seconds / 3600:,.1f} h"
    return f"{seconds / 86_400:,.2f} days"


def size(n: int | None) -> str:
    if n is None:
        return "–"
    if n >= 2**30:
        return f"{n / 2**30:,.2f} GiB"
    return f"{n / MIB:,.1f} MiB"


def when(t: float | None) -> str:
    return "–" if t is None else f"{to_datetime(t):%Y-%m-%d %H:%M}"
