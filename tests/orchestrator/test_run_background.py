"""`smets1 run` with background traffic on (issue 16): the summary's `background` section,
the same counts for the same seed, and nothing of it when the config leaves it off."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.cli import main
from tests.factories import tiny_config

BACKGROUND = {
    "kinds": {
        "read_registers": {
            "per_device_per_day": 5_000,
            "request_bytes": 64,
            "response_bytes": 96,
            "target_seconds": 30,
        },
        "read_profile": {
            "per_device_per_day": 2_000,
            "request_bytes": 64,
            "response_bytes": 1_536,
            "target_seconds": 60,
        },
    }
}


def run(tmp_path: Path, name: str, **top: Any) -> dict[str, Any]:
    raw = tiny_config(**top)
    raw["devices"][0]["count"] = 20
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = tmp_path / name
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return summary


def test_a_small_fleet_with_background_traffic_gets_its_reads_answered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = run(tmp_path, "bg", background=BACKGROUND)
    assert s["images_activated"] == 20 and s["failed"] == {}
    bg = s["background"]
    assert bg["requests"] > 20 and bg["met"] > 0
    assert bg["requests"] == bg["met"] + bg["missed"] + bg["open_at_end"]
    assert set(bg["kinds"]) == {"read_registers", "read_profile"}
    for kind in bg["kinds"].values():
        assert kind["requests"] > 0 and kind["p50_seconds"] <= kind["p95_seconds"]
    assert bg["kinds"]["read_profile"]["target_seconds"] == 60
    by_hour = bg["by_hour"]
    assert by_hour["timezone"] == "Europe/London"
    assert len(by_hour["requests"]) == len(by_hour["missed"]) == len(by_hour["p95_seconds"]) == 24
    assert sum(by_hour["requests"]) == bg["requests"]
    assert sum(by_hour["missed"]) == bg["missed"]
    said = capsys.readouterr().out
    assert f"background: {bg['requests']:,} requests, met {bg['met']:,}" in said
    report = (tmp_path / "bg" / "report.html").read_text()
    assert "<h2>Background traffic</h2>" in report and "read profile" in report


def test_the_same_seed_gives_the_same_counts(tmp_path: Path) -> None:
    first = run(tmp_path, "a", background=BACKGROUND)
    again = run(tmp_path, "b", background=BACKGROUND)
    assert first["background"] == again["background"]
    assert first["activations"]["outcomes_sha256"] == again["activations"]["outcomes_sha256"]


def test_off_leaves_the_summary_without_it(tmp_path: Path) -> None:
    s = run(tmp_path, "off")
    assert "background" not in s
    assert "Background traffic" not in (tmp_path / "off" / "report.html").read_text()
    assert s["dco_stray_frames"] == 0


def test_a_dco_pipe_and_a_sample_show_in_the_summary_the_line_and_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sampled = {**BACKGROUND, "sample_share": 0.5}
    s = run(tmp_path, "pipe", background=sampled, dco={"throughput_bytes_per_second": 50_000})
    assert s["images_activated"] == 20
    pipe = s["dco_pipe"]
    assert pipe["bytes_per_second"] == 50_000 and pipe["frames"] > 0
    # Every image's blocks went through it, and the sampled reads' bytes twice over.
    assert pipe["bytes"] > 20 * 20_480
    assert s["background"]["sample_share"] == 0.5
    said = capsys.readouterr().out
    assert "requests (a 50.00% sample)" in said
    report = (tmp_path / "pipe" / "report.html").read_text()
    assert "DCO outbound capacity" in report and "a sample: 50.00%" in report
    assert run(tmp_path, "free", background=BACKGROUND)["dco_pipe"] is None
