"""`smets1 run` end to end: fleet, DCO and scheduler in one process on a virtual clock."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.cli import main
from tests.factories import tiny_config

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, data: object) -> Path:
    p = tmp_path / "fleet.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_small_config_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["run", str(ROOT / "fleet_configs" / "small.yaml"), "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["devices"] == 40 and s["images_activated"] == 40 and s["failed"] == {}
    # Every block of every image reached a device: 24 × 1 MiB and 16 × 800,000 bytes.
    assert s["bytes_delivered"] == 24 * 1_048_576 + 16 * 800_000
    assert s["blocks_delivered"] == 24 * 1024 + 16 * 782
    assert s["device_states"] == {"active": 40}
    # A 1 MiB image over 20 kbit/s takes simulated minutes, not zero.
    assert s["simulated_seconds"] > 400
    for key in ("wall_seconds", "peak_rss_bytes", "simulated_seconds"):
        assert s[key] > 0
    assert "40/40 activated" in capsys.readouterr().out
    report = (out / "report.html").read_text()
    assert report.startswith("<!doctype html>") and "<svg" in report


def test_run_is_repeatable(tmp_path: Path) -> None:
    cfg = write(tmp_path, tiny_config())
    runs = []
    for n in range(2):
        out = tmp_path / f"r{n}"
        assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
        s = json.loads((out / "summary.json").read_text())
        s.pop("wall_seconds")
        s.pop("peak_rss_bytes")
        runs.append(s)
    assert runs[0] == runs[1]


def test_daily_cap_spreads_releases_over_days(tmp_path: Path) -> None:
    data = tiny_config(scheduler={"large_images_per_day": 2, "large_image_threshold_bytes": 10_000})
    # Three days of work: only an agreed schedule may reach past the two-day admission window.
    data["campaigns"][0]["schedule"] = "agreed"
    out = tmp_path / "out"
    assert main(["run", str(write(tmp_path, data)), "--out", str(out), "--quiet"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert list(s["large_images_released_per_day"].values()) == [2, 2, 2]
    assert s["max_large_images_released_in_a_day"] == 2
    assert s["images_activated"] == 6 and s["simulated_days"] > 2


def test_image_that_does_not_fit_fails_with_reason(tmp_path: Path) -> None:
    data = tiny_config()
    data["models"][0]["slot_capacity_bytes"] = 10_000
    out = tmp_path / "out"
    assert main(["run", str(write(tmp_path, data)), "--out", str(out), "--quiet"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["images_activated"] == 0 and s["failed"] == {"too_large_for_slot": 6}
    assert s["blocks_delivered"] == 0


def test_bad_config_is_one_line_exit_2(tmp_path: Path) -> None:
    data = tiny_config()
    data["devices"][0]["count"] = "many"
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "run", str(write(tmp_path, data))],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "devices.0.count" in proc.stderr and "fleet.yaml" in proc.stderr


def test_unusable_out_dir_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    small = str(ROOT / "fleet_configs" / "small.yaml")
    assert main(["run", small, "--out", "/proc/no-such-dir/out", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("smets1: error: /proc/no-such-dir") and err.count("\n") == 1


def test_campaigns_wait_for_their_11_1_and_one_past_seven_days_is_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A DCO so slow that the 11.1 takes eight days: the 11.3s go out only once the image
    # is stored, and the 11.1 is counted past seven days.
    data = tiny_config(epoch="2025-03-03T00:00:00Z", dco={"image_processing_seconds": 8 * 86_400.0})
    out = tmp_path / "out"
    assert main(["run", str(write(tmp_path, data)), "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["images_activated"] == 6 and s["failed"] == {}
    assert s["overdue_11_1"] == 1 and s["overdue"] == 0
    assert s["image_updates"]["requests"] == 1 and s["image_updates"]["stored"] == 1
    assert s["image_updates"]["longest_seconds"] >= 8 * 86_400
    assert list(s["campaigns"][0]["released_per_day"]) == ["2025-03-11"]
    assert "11.1 past seven days 1" in capsys.readouterr().out
    page = (out / "report.html").read_text()
    assert "<th>11.1s not stored within seven days</th><td>1</td>" in page
    assert "<th>longest 11.1, acceptance to stored</th><td>8." in page  # days


def test_progress_says_how_far_and_how_long_is_left() -> None:
    from collections import Counter

    from orchestrator.runner import progress_estimate
    from scheduler.requests import RequestState

    states = Counter({RequestState.DONE: 30, RequestState.FAILED: 10, RequestState.WAITING: 60})
    assert progress_estimate(states, 100, 20.0) == "40.0 % answered, about 30 s left"
    assert progress_estimate(Counter(), 0, 5.0) == "0 % answered"
    assert progress_estimate(Counter({RequestState.HELD: 5}), 5, 5.0) == "0 % answered"
