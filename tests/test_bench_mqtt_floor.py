"""`python -m bench mqtt-floor` runs end to end on a little traffic (its figures are for
BENCHMARKS.md, not checked here: no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.mosquitto import find_mosquitto

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
def test_mqtt_floor_measures_both_paths() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "mqtt-floor", "--messages", "40", "--mib", "4"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout)
    assert result["paho"] == "smets1.paho_copies installed"
    assert set(result["cpu_us_per_message"]) == {"publisher", "subscriber", "broker"}
    assert all(v >= 0 for v in result["cpu_seconds_per_gib"].values())
    day = result["demo_day"]
    assert day["mqtt_messages"] == 78_000 and day["bound_cpu_seconds"] == 112.0
    assert day["floor_with_twin_cpu_seconds"] == pytest.approx(
        day["floor_cpu_seconds_messages"] + day["floor_cpu_seconds_bytes"] + 44.8, abs=0.2
    )
