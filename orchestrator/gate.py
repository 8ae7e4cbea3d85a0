"""The CI gate: a run's failed and TRT-missed counts against thresholds.

`smets1 run` and `smets1 distributed` take `--max-failed` and `--max-trt-missed` (a count,
or a percentage such as `2.5%`), or `max_failed` and `max_trt_missed` in the config (a flag
wins). The summary carries `gate`: every check, and `status` `passed` or `failed` (or
`unchecked`, with no threshold set). A failed gate ends the command with one line naming
the threshold passed and exit status EXIT_THRESHOLD (5), distinct from the run-validity
verdict (orchestrator.verdict, 4): a run may be valid and still fail its gate.

Percentages are of the run's requests for `max_failed`, and of the requests with a TRT
outcome (met + missed) for `max_trt_missed`.
"""

from __future__ import annotations

import argparse
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smets1.config import FleetConfig
from smets1.thresholds import Threshold, parse_threshold

#: Exit status of a run that finished, valid, but passed one of its thresholds.
EXIT_THRESHOLD = 5


class GateStatus(enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    UNCHECKED = "unchecked"


@dataclass(frozen=True, slots=True)
class Limit:
    """One threshold and where it was set (a flag or the config key)."""

    threshold: Threshold
    source: str


@dataclass(frozen=True, slots=True)
class Thresholds:
    max_failed: Limit | None = None
    max_trt_missed: Limit | None = None


def thresholds_of(
    config: FleetConfig,
    max_failed: Threshold | None = None,
    max_trt_missed: Threshold | None = None,
) -> Thresholds:
    """The thresholds in force: each flag given, else the config's key."""

    return Thresholds(
        max_failed=_pick(max_failed, "--max-failed", config.max_failed, "max_failed"),
        max_trt_missed=_pick(
            max_trt_missed, "--max-trt-missed", config.max_trt_missed, "max_trt_missed"
        ),
    )


def _pick(
    flag: Threshold | None, flag_name: str, key: Threshold | None, key_name: str
) -> Limit | None:
    if flag is not None:
        return Limit(flag, flag_name)
    if key is not None:
        return Limit(key, f"{key_name} in the config")
    return None


def _check(name: str, what: str, count: int, total: int, limit: Limit | None) -> dict[str, Any]:
    share = 100.0 * count / total if total else 0.0
    check: dict[str, Any] = {
        "name": name,
        "count": count,
        "of": total,
        "percent": round(share, 3),
        "threshold": None if limit is None else str(limit.threshold),
        "source": None if limit is None else limit.source,
        "passed": None,
    }
    if limit is not None:
        allowed = limit.threshold.limit(total)
        check["passed"] = count <= allowed
        check["line"] = (
            f"{what} {count:,} of {total:,} ({share:.1f}%), "
            f"{'within' if check['passed'] else 'over'} {limit.source} {limit.threshold}"
        )
    return check


def gate(summary: Mapping[str, Any], thresholds: Thresholds) -> dict[str, Any]:
    """`gate` of a summary: each check, and whether the run passed them all."""
    failed = sum(summary.get("failed", {}).values())
    requests = int(summary.get("requests", 0))
    met, missed = int(summary.get("trt_met", 0)), int(summary.get("trt_missed", 0))
    checks = [
        _check("failed", "failed requests", failed, requests, thresholds.max_failed),
        _check("trt_missed", "TRT missed", missed, met + missed, thresholds.max_trt_missed),
    ]
    judged = [c for c in checks if c["passed"] is not None]
    broken = [c for c in judged if not c["passed"]]
    if not judged:
        status = GateStatus.UNCHECKED
    else:
        status = GateStatus.FAILED if broken else GateStatus.PASSED
    return {
        "status": status.value,
        "reason": "; ".join(c["line"] for c in broken)
        if broken
        else "; ".join(c["line"] for c in judged) or "no threshold set",
        "checks": checks,
    }


def gate_line(summary: Mapping[str, Any]) -> str | None:
    """The one line a failed gate ends the command with (None: it did not fail)."""
    g = summary.get("gate") or {}
    if g.get("status") != GateStatus.FAILED.value:
        return None
    return f"smets1: threshold passed: {g['reason']}"


def threshold_flag(text: str) -> Threshold:
    """A `--max-failed` / `--max-trt-missed` value: 10 or 2.5%."""
    try:
        return parse_threshold(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_threshold_flags(parser: argparse.ArgumentParser) -> None:
    """`--max-failed` and `--max-trt-missed` (orchestrator.gate), for run and distributed."""
    parser.add_argument(
        "--max-failed",
        type=threshold_flag,
        metavar="N|P%",
        help="exit 5 when more requests than this failed: a count, or a percentage of "
        "the requests (default: max_failed in the config, else not checked)",
    )
    parser.add_argument(
        "--max-trt-missed",
        type=threshold_flag,
        metavar="N|P%",
        help="exit 5 when more requests than this missed their TRT: a count, or a "
        "percentage of those answered (default: max_trt_missed in the config)",
    )
