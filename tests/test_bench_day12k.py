"""`python -m bench day12k` measures the whole `smets1 run` process in CPU seconds beside
the floor, and with idle devices added (its figures are for BENCHMARKS.md, not checked
here: no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from bench.day12k import BENCH_BACKGROUND, spread, trust, with_background, with_idle_devices

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "fleet_configs" / "small.yaml"


def _day12k(*args: str) -> dict[str, Any]:
    """`python -m bench day12k` on the small config with `args`: its JSON."""
    out = subprocess.run(
        [sys.executable, "-m", "bench", "day12k", "--config", str(SMALL), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return cast(dict[str, Any], json.loads(out.stdout))


def test_idle_devices_are_a_model_no_campaign_names(tmp_path: Path) -> None:
    path = with_idle_devices(SMALL, 300, tmp_path)
    raw = yaml.safe_load(path.read_text())
    source = yaml.safe_load(SMALL.read_text())
    assert len(raw["models"]) == len(source["models"]) + 1
    idle = raw["models"][-1]
    assert idle["name"] == source["models"][0]["name"] + "-idle"
    assert raw["devices"][-1]["model"] == idle["name"] and raw["devices"][-1]["count"] == 300
    named = {str(c["devices"]) for c in raw["campaigns"]}
    assert not any(idle["name"] in n for n in named)


def test_day12k_reports_cpu_beside_the_floor_and_the_idle_run() -> None:
    r = _day12k("--idle-devices", "200")
    assert r["images_activated"] == r["devices"] > 0
    assert r["cpu_seconds"] > 0 and r["floor_cpu_seconds"] > 0
    assert r["cpu_over_floor"] == pytest.approx(r["cpu_seconds"] / r["floor_cpu_seconds"], rel=0.05)
    idle = r["with_idle_devices"]
    # the idle devices are built and hosted, but nothing is sent to them
    assert idle["devices"] == r["devices"] + 200
    assert idle["images_activated"] == r["images_activated"]
    assert idle["bytes_delivered"] == r["bytes_delivered"]
    assert r["idle_cpu_ratio"] == pytest.approx(idle["cpu_seconds"] / r["cpu_seconds"], rel=0.01)
    assert r["machine"]["cores"]


def test_background_is_the_config_with_a_background_section(tmp_path: Path) -> None:
    path = with_background(SMALL, tmp_path)
    raw = yaml.safe_load(path.read_text())
    source = yaml.safe_load(SMALL.read_text())
    assert raw["background"] == BENCH_BACKGROUND
    assert {k: v for k, v in raw.items() if k not in ("background", "name")} == {
        k: v for k, v in source.items() if k != "name"
    }


def test_day12k_background_reports_both_cpu_figures_and_their_ratio() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "day12k",
            "--config",
            str(SMALL),
            "--no-floor",
            "--background",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    r = json.loads(out.stdout)
    bg = r["with_background"]
    assert bg["images_activated"] == r["images_activated"]
    assert bg["cpu_seconds"] > 0 and r["cpu_seconds"] > 0
    assert r["background_cpu_ratio"] == pytest.approx(
        bg["cpu_seconds"] / r["cpu_seconds"], rel=0.01
    )
    assert r["target_background_cpu_ratio"] == 1.5


def test_rounds_alternate_and_report_the_least_with_their_spread() -> None:
    r = _day12k("--rounds", "2")
    assert r["rounds"] == 2
    assert len(r["cpu_seconds_rounds"]) == 2 and r["cpu_seconds"] == min(r["cpu_seconds_rounds"])
    assert r["floor_cpu_seconds"] == min(r["floor_cpu_seconds_rounds"])
    assert r["cpu_spread"]["day"] == pytest.approx(
        max(r["cpu_seconds_rounds"]) / min(r["cpu_seconds_rounds"]) - 1, abs=0.002
    )
    assert r["trust"].startswith(("steady", "noisy"))


def test_trust_says_when_rounds_disagree_beyond_the_margin() -> None:
    assert trust(1, {"day": 0.0}).startswith("one round")
    assert trust(3, {"day": 0.02, "floor": 0.01}).startswith("steady")
    worded = trust(3, {"day": 0.02, "idle": 0.12, "floor": 0.07})
    assert worded.startswith("noisy") and worded.index("idle 12%") < worded.index("floor 7%")
    assert spread([10.0, 11.0, 10.5]) == pytest.approx(0.1)
