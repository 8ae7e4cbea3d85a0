"""CPU seconds, the figure benchmarks report beside wall time (a shared machine makes
wall time noisy; CPU seconds less so)."""

from __future__ import annotations

import json
import resource
import subprocess
from pathlib import Path
from typing import Any

from smets1.clock import wall_seconds


def self_cpu_seconds() -> float:
    """User + system CPU seconds of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def smets1_run(config: Path, folder: Path, python: str) -> tuple[dict[str, Any], float, float]:
    """`smets1 run CONFIG` in a process of its own (start-up, image building and the
    report included): its summary, its CPU seconds (user + system) and wall seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = wall_seconds()
    subprocess.run(
        [python, "-m", "orchestrator.cli", "run", str(config), "--out", str(folder), "--quiet"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wall = wall_seconds() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    return summary, round(cpu, 3), round(wall, 3)
