"""`smets1 capacity`: the most large images a day the emulated system sustains while its
background traffic keeps within its target; each trial a whole run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.capacity import _between, judge
from orchestrator.cli import main

CONFIG = """\
name: cap
seed: 1
block_size_bytes: 1024
models:
  - name: acme-e1
    manufacturer_code: 0x1234
    image_type: 0x0001
    hardware_version: 3
    slot_capacity_bytes: 1572864
    reboot_seconds: 90
    link: {bandwidth_bps: 20000, latency_seconds: 1.5}
devices:
  - {model: acme-e1, count: 120, firmware_version: 0x01000000, supplier: 90-B3-D5-1F-30-01-00-00}
images:
  - {name: acme-2.0, manufacturer_code: 0x1234, image_type: 0x0001, file_version: 0x02000000,
     size_bytes: 800000, hardware_versions: [1, 5], seed: 1}
scheduler:
  large_images_per_day: 120
campaigns:
  - {name: acme-rollout, user: 90-B3-D5-1F-30-01-00-00, image: acme-2.0,
     devices: {model: acme-e1}, schedule: agreed}
"""
BACKGROUND = """\
background:
  kinds:
    read_registers: {per_device_per_day: 48, request_bytes: 64, response_bytes: 96,
                     target_seconds: 30}
"""


def summary(**over: Any) -> dict[str, Any]:
    s: dict[str, Any] = {
        "requests": 1000,
        "images_activated": 1000,
        "large_images_released_per_day": {"2025-03-01": 500, "2025-03-02": 500},
        "trt_missed": 0,
        "failed": {},
        "simulated_days": 2.0,
        "background": {"requests": 10_000, "missed": 50, "unanswered": 0, "p95_seconds": 2.0},
    }
    s.update(over)
    return s


def test_a_rate_is_sustained_only_when_every_condition_holds() -> None:
    assert judge(500, summary(), 0.01).sustained
    short = judge(500, summary(large_images_released_per_day={"2025-03-01": 400}), 0.01)
    assert not short.sustained and "busiest day released 400 of 500" in short.reason
    late = judge(500, summary(trt_missed=3), 0.01)
    assert not late.sustained and "TRT missed 3" in late.reason
    crowded = judge(500, summary(failed={"offline": 2, "boot_failed": 9}), 0.01)
    assert not crowded.sustained and crowded.load_failures == 2
    # boot failures are the devices' own, not the rate's
    assert judge(500, summary(failed={"boot_failed": 9}), 0.01).sustained
    noisy = summary(background={"requests": 1000, "missed": 8, "unanswered": 4})
    t = judge(500, noisy, 0.01)
    assert not t.sustained and t.background_miss_rate == 0.012
    assert "background missed 1.20% (over 1.00%)" in t.reason
    # a fleet smaller than the rate: every request released in a day is enough
    one_day = summary(large_images_released_per_day={"2025-03-01": 1000})
    assert judge(5000, one_day, 0.01).sustained
    assert not judge(5000, summary(), 0.01).sustained  # 500 a day: the rate was not reached


def test_rates_between_are_whole_and_strictly_inside() -> None:
    assert _between(20, 400, 2) == [146, 273]
    assert _between(10, 12, 4) == [11]
    assert _between(10, 11, 3) == []


def test_a_config_without_background_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "cap.yaml"
    config.write_text(CONFIG)
    assert main(["capacity", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no `background` section" in err
    config.write_text(CONFIG + BACKGROUND)
    assert main(["capacity", str(config), "--low", "200", "--high", "100"]) == 2
    assert "expected 1 <= --low < --high" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["capacity", str(config), "--max-miss-rate", "lots"])
    assert exc.value.code == 2
    assert "expected a share such as 1% or 0.01" in capsys.readouterr().err


def test_the_search_finds_the_highest_rate_sustained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "cap.yaml"
    config.write_text(CONFIG + BACKGROUND)
    out = tmp_path / "out"
    argv = ["capacity", str(config), "--low", "10", "--max-miss-rate", "0.05%"]
    status = main([*argv, "--resolution", "30", "--out", str(out)])
    printed = capsys.readouterr().out
    result = json.loads((out / "capacity.json").read_text())
    trials = {t["rate"]: t for t in result["trials"]}
    assert {10, 120} <= set(trials)
    # more images a day keep more meters busy, so more reads come back late
    assert trials[120]["background_miss_rate"] > trials[10]["background_miss_rate"]
    cap = result["capacity"]
    assert status == (0 if cap is not None else 1)
    sustained = [r for r, t in trials.items() if t["sustained"]]
    failed = [r for r, t in trials.items() if not t["sustained"]]
    assert failed, "the test's background target is meant to be too tight for 120 a day"
    assert cap == max(sustained) and cap < min(failed) == result["first_failed"]
    assert min(failed) - cap <= 30
    for rate in trials:  # each trial is a run of its own, with its summary and report
        assert (out / f"rate-{rate}" / "summary.json").is_file()
        assert (out / f"rate-{rate}" / "report.html").is_file()
    assert f"capacity: {cap:,} large images a day" in printed
