"""Whether two runs of one config came out the same: a distributed run against its
in-process twin (issue 11: "equal results").

The in-process run is the reference: one virtual clock, nothing late. A distributed run
of the same config and seed must activate the same devices with the same outcomes
(`activations.outcomes_sha256`, and the counts beside it), and its 11.3s must take as
long: the median within `MEDIAN_TOLERANCE` (10 %) and the 95th percentile within
`P95_TOLERANCE` (25 %) of the reference's. Its own verdict must be `valid`.

    smets1 compare-runs runs/demo/summary.json runs/demo-distributed/summary.json

prints one line per check and exits 0 when every check holds, 1 when one does not, 2
for a summary it cannot read.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import SummaryUnreadable

MEDIAN_TOLERANCE = 0.10
P95_TOLERANCE = 0.25
#: Counts that must be equal in both runs.
EQUAL_KEYS = (
    "requests",
    "images_activated",
    "failed",
    "unfinished",
    "trt_met",
    "trt_missed",
    "held_for_schedule",
    "refused",
    "overdue",
)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    reference: Any
    candidate: Any
    detail: str


def load_summary(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SummaryUnreadable(f"{path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SummaryUnreadable(f"{path}: not a JSON summary ({exc})") from None
    if not isinstance(doc, dict):
        raise SummaryUnreadable(f"{path}: expected a JSON object, got {type(doc).__name__}")
    missing = [k for k in (*EQUAL_KEYS, "activations", "config", "seed") if k not in doc]
    if missing:
        raise SummaryUnreadable(
            f"{path}: not a run summary (no {', '.join(missing)}); "
            "written by `smets1 run` or `smets1 distributed`"
        )
    return doc


def _within(name: str, ref: float | None, cand: float | None, tolerance: float) -> Check:
    if ref is None or cand is None:
        same = ref is None and cand is None
        return Check(name, same, ref, cand, "no activations" if same else "one run has none")
    diff = (cand - ref) / ref if ref else (0.0 if cand == ref else float("inf"))
    ok = abs(diff) <= tolerance
    return Check(name, ok, ref, cand, f"{diff:+.1%} (within ±{tolerance:.0%}: {ok})")


def compare_summaries(
    reference: dict[str, Any],
    candidate: dict[str, Any],
    *,
    median_tolerance: float = MEDIAN_TOLERANCE,
    p95_tolerance: float = P95_TOLERANCE,
) -> list[Check]:
    """Every check of `candidate` against `reference` (both summary documents)."""
    checks = [
        Check(
            "same config and seed",
            (reference["config"], reference["seed"]) == (candidate["config"], candidate["seed"]),
            f"{reference['config']} seed {reference['seed']}",
            f"{candidate['config']} seed {candidate['seed']}",
            "",
        )
    ]
    for key in EQUAL_KEYS:
        ref, cand = reference[key], candidate[key]
        checks.append(Check(key, ref == cand, ref, cand, "equal" if ref == cand else "differ"))
    ra, ca = reference["activations"], candidate["activations"]
    same = ra["outcomes_sha256"] == ca["outcomes_sha256"]
    checks.append(
        Check(
            "same devices, same outcomes",
            same,
            ra["outcomes_sha256"][:16],
            ca["outcomes_sha256"][:16],
            "every request's device, state and failure alike"
            if same
            else "some device ended differently",
        )
    )
    checks.append(
        _within("11.3 median seconds", ra["p50_seconds"], ca["p50_seconds"], median_tolerance)
    )
    checks.append(_within("11.3 p95 seconds", ra["p95_seconds"], ca["p95_seconds"], p95_tolerance))
    verdict = (candidate.get("verdict") or {}).get("status", "valid")
    checks.append(
        Check(
            "candidate's verdict",
            verdict == "valid",
            (reference.get("verdict") or {}).get("status", "valid"),
            verdict,
            (candidate.get("verdict") or {}).get("reason", ""),
        )
    )
    return checks


def render(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        mark = "ok  " if c.ok else "FAIL"
        lines.append(f"{mark} {c.name}: {c.reference} -> {c.candidate}  {c.detail}".rstrip())
    failed = sum(not c.ok for c in checks)
    lines.append("equal results" if not failed else f"{failed} check(s) failed")
    return "\n".join(lines)


def as_json(checks: list[Check]) -> dict[str, Any]:
    return {"equal": all(c.ok for c in checks), "checks": [asdict(c) for c in checks]}
