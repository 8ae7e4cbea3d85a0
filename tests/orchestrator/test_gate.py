"""The CI gate: `smets1 run` exits 5 with one line when a threshold is passed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.gate import EXIT_THRESHOLD, Limit, Thresholds, gate
from smets1.thresholds import parse_threshold

ROOT = Path(__file__).resolve().parents[2]
FAULTS = ROOT / "fleet_configs" / "faults.yaml"
#: A summary as faults.yaml gives it (64 of 420 failed), with 20 TRT missed added.
SUMMARY = {
    "requests": 420,
    "failed": {"offline": 60, "refused": 4},
    "trt_met": 400,
    "trt_missed": 20,
}


def limit(text: str, source: str = "--max-failed") -> Limit:
    return Limit(parse_threshold(text), source)


def test_no_threshold_is_unchecked() -> None:
    assert gate(SUMMARY, Thresholds())["status"] == "unchecked"


@pytest.mark.parametrize(
    ("max_failed", "status"),
    [("64", "passed"), ("63", "failed"), ("15.3%", "passed"), ("15.2%", "failed")],
)
def test_failed_against_a_count_or_a_share(max_failed: str, status: str) -> None:
    g = gate(SUMMARY, Thresholds(max_failed=limit(max_failed)))
    assert g["status"] == status
    assert g["checks"][0]["count"] == 64 and g["checks"][0]["of"] == 420


def test_trt_missed_is_a_share_of_those_with_an_outcome() -> None:
    g = gate(SUMMARY, Thresholds(max_trt_missed=limit("4%", "max_trt_missed in the config")))
    assert g["status"] == "failed"  # 20 of 420 is 4.76 %
    assert g["reason"] == "TRT missed 20 of 420 (4.8%), over max_trt_missed in the config 4%"


def test_run_over_its_threshold_exits_5_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["run", str(FAULTS), "--out", str(out), "--quiet", "--max-failed", "10"]
    assert main(argv) == EXIT_THRESHOLD
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "smets1: threshold passed: failed requests 64 of 420 (15.2%), over --max-failed 10"
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["gate"]["status"] == "failed"


def test_run_within_its_thresholds_exits_0(tmp_path: Path) -> None:
    argv = ["run", str(FAULTS), "--out", str(tmp_path / "o"), "--quiet"]
    assert main([*argv, "--max-failed", "20%", "--max-trt-missed", "0"]) == 0
    assert main(argv) == 0  # no threshold: the gate is not checked


def test_config_keys_and_a_flag_that_wins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = yaml.safe_load(FAULTS.read_text())
    cfg["max_failed"] = "10%"
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump(cfg))
    argv = ["run", str(path), "--out", str(tmp_path / "o"), "--quiet"]
    assert main(argv) == EXIT_THRESHOLD
    assert "over max_failed in the config 10%" in capsys.readouterr().err
    assert main([*argv, "--max-failed", "64"]) == 0


def test_bad_threshold_in_the_config_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = yaml.safe_load(FAULTS.read_text())
    cfg["max_trt_missed"] = "lots"
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "max_trt_missed" in err[0] and "percentage" in err[0]


def _distributed_summary(verdict: str, gate_status: str) -> dict[str, object]:
    return {
        "config": "faults",
        "images_activated": 356,
        "requests": 420,
        "devices": 420,
        "failed": {"offline": 64},
        "blocks_delivered": 1,
        "bytes_delivered": 1,
        "simulated_days": 1,
        "wall_seconds": 1,
        "bus": {
            "messages": 1,
            "bytes": 1,
            "messages_per_second": 1,
            "bytes_per_second": 1,
            "seconds": 1,
        },
        "lateness": {"worst_seconds": 0, "p99_seconds": 0},
        "verdict": {"status": verdict, "reason": "late", "threshold_seconds": 1},
        "gate": {
            "status": gate_status,
            "reason": "failed requests 64 of 420 (15.2%), over --max-failed 10",
        },
    }


@pytest.mark.parametrize(
    ("verdict", "gate_status", "status", "line"),
    [
        ("valid", "failed", EXIT_THRESHOLD, "smets1: threshold passed: failed requests 64"),
        ("invalid", "failed", 4, "smets1: invalid run: late"),
        ("valid", "passed", 0, None),
    ],
)
def test_distributed_exits_5_over_a_threshold_and_4_first_when_invalid(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    verdict: str,
    gate_status: str,
    status: int,
    line: str | None,
) -> None:
    import orchestrator.distributed

    seen: dict[str, object] = {}

    def fake(config: Path, out: Path, **kwargs: object) -> dict[str, object]:
        seen.update(kwargs)
        return _distributed_summary(verdict, gate_status)

    monkeypatch.setattr(orchestrator.distributed, "run_distributed", fake)
    assert main(["distributed", str(FAULTS), "--max-failed", "10"]) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ([] if line is None else [err[-1]]) and (line is None or err[-1].startswith(line))
    thresholds = seen["thresholds"]
    assert isinstance(thresholds, Thresholds) and thresholds.max_failed is not None
    assert thresholds.max_failed.source == "--max-failed"
