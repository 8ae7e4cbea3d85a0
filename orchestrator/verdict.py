"""Whether a run's results can be trusted: its lateness against the run's threshold.

A distributed run shares one scaled clock, and a process that falls behind it (a loaded
CPU, a broker queue) delivers frames late; every simulated second of lateness moves the
transfers, retries and timeouts the run reports. The summary therefore carries
`lateness` (the worst and the 99th percentile over every process, and each process's
own) and `verdict`: `valid` while the worst stayed at or under the threshold
(smets1.lateness), else `invalid` with the reason, which says that the failure, offline
and TRT counts are not to be trusted. `smets1 distributed` then ends with that reason on
one line and exit status 4. The in-process run (virtual clock) is never late and carries
the same keys.
"""

from __future__ import annotations

from typing import Any

from orchestrator.status import LatenessStatus
from smets1.lateness import BUCKET_BOUNDS_SECONDS, percentile

VALID = "valid"
INVALID = "invalid"


def lateness_document(roles: dict[str, LatenessStatus], threshold_seconds: float) -> dict[str, Any]:
    """`lateness` of a summary: over every process (histograms added), and per process."""
    buckets = [0] * (len(BUCKET_BOUNDS_SECONDS) + 1)
    for status in roles.values():
        for i, n in status.buckets.items():
            if 0 <= i < len(buckets):
                buckets[i] += n
    worst = max((max(s.worst_seconds, s.timers_worst_seconds) for s in roles.values()), default=0.0)
    return {
        "worst_seconds": worst,
        "p99_seconds": round(percentile(buckets, 0.99, worst), 6),
        "samples": sum(buckets),
        "threshold_seconds": threshold_seconds,
        "roles": {
            name: s.model_dump(
                include={"of", "samples", "worst_seconds", "p99_seconds", "timers_worst_seconds"}
            )
            for name, s in roles.items()
        },
    }


def verdict(lateness: dict[str, Any], failed: dict[str, int], trt_missed: int) -> dict[str, Any]:
    """`verdict` of a summary from its `lateness` (lateness_document)."""
    threshold = lateness["threshold_seconds"]
    worst = lateness["worst_seconds"]
    if worst <= threshold:
        return {
            "status": VALID,
            "reason": f"worst lateness {worst:g} simulated s, within the threshold of "
            f"{threshold:g} s",
            "threshold_seconds": threshold,
        }
    roles = lateness["roles"]

    def worst_of(role: dict[str, Any]) -> float:
        return max(role["worst_seconds"], role["timers_worst_seconds"])

    name = max(roles, key=lambda r: worst_of(roles[r]))
    role = roles[name]
    timers = role["of"] == "timers" or role["timers_worst_seconds"] > role["worst_seconds"]
    what = "timers fired" if timers else "messages arrived"
    outcomes = ", ".join(f"{k} {v}" for k, v in failed.items()) or "none"
    return {
        "status": INVALID,
        "reason": f"{name}'s {what} up to {worst:g} simulated s late (p99 "
        f"{lateness['p99_seconds']:g} s over every process), over the threshold of "
        f"{threshold:g} s: the run could not keep up with its clock, so its timings and "
        f"its failed ({outcomes}), offline and TRT-missed ({trt_missed}) counts are not to "
        "be trusted; run it slower (--speed) or with more CPU",
        "threshold_seconds": threshold,
    }
