"""Equal results (issue 11, item 6): a distributed run of a config at the default speed
against its in-process twin, the independent reference; and `smets1 compare-runs`."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli import main
from orchestrator.compare import compare_summaries, render
from orchestrator.distributed import run_distributed
from orchestrator.mosquitto import Mosquitto
from orchestrator.runner import run_config
from smets1.config import load_config

SMALL = Path(__file__).parents[2] / "fleet_configs" / "small.yaml"


def _summary(p50: float = 500.0, p95: float = 520.0, digest: str = "ab" * 32) -> dict[str, Any]:
    return {
        "config": "small",
        "seed": 1,
        "requests": 40,
        "images_activated": 40,
        "failed": {},
        "unfinished": 0,
        "trt_met": 40,
        "trt_missed": 0,
        "held_for_schedule": 0,
        "refused": 0,
        "overdue": 0,
        "activations": {
            "count": 40,
            "p50_seconds": p50,
            "p95_seconds": p95,
            "max_seconds": p95,
            "outcomes_sha256": digest,
        },
        "verdict": {"status": "valid", "reason": "", "threshold_seconds": 16.0},
    }


def _failed(checks: list[Any]) -> set[str]:
    return {c.name for c in checks if not c.ok}


def test_compare_names_each_difference() -> None:
    ref = _summary()
    assert _failed(compare_summaries(ref, _summary(p50=549.0, p95=649.0))) == set()
    assert _failed(compare_summaries(ref, _summary(p50=551.0))) == {"11.3 median seconds"}
    assert _failed(compare_summaries(ref, _summary(p95=651.0))) == {"11.3 p95 seconds"}
    assert _failed(compare_summaries(ref, _summary(p50=449.0))) == {"11.3 median seconds"}
    other = _summary(digest="cd" * 32)
    assert _failed(compare_summaries(ref, other)) == {"same devices, same outcomes"}
    worse = copy.deepcopy(ref)
    worse["failed"] = {"offline": 3}
    worse["images_activated"] = 37
    worse["verdict"] = {"status": "invalid", "reason": "late", "threshold_seconds": 16.0}
    assert _failed(compare_summaries(ref, worse)) == {
        "failed",
        "images_activated",
        "candidate's verdict",
    }
    text = render(compare_summaries(ref, worse))
    assert "FAIL failed: {} -> {'offline': 3}" in text and text.endswith("3 check(s) failed")


def test_compare_runs_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b, bad = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "bad.json"
    a.write_text(json.dumps(_summary()))
    b.write_text(json.dumps(_summary(p50=600.0)))
    bad.write_text('{"config": "small"}')
    assert main(["compare-runs", str(a), str(a)]) == 0
    assert capsys.readouterr().out.strip().endswith("equal results")
    assert main(["compare-runs", str(a), str(b), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["equal"] is False
    assert main(["compare-runs", str(a), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not a run summary (no requests" in err and "Traceback" not in err


@pytest.mark.mqtt
def test_distributed_small_equals_in_process(tmp_path: Path, broker: Mosquitto) -> None:
    reference = run_config(load_config(SMALL), tmp_path / "local", progress=None)
    candidate = run_distributed(
        SMALL, tmp_path / "dist", broker=broker.url, shards=2, timeout_seconds=240.0
    )
    assert candidate["speed"] == "auto"  # the default
    checks = compare_summaries(reference, candidate)
    assert all(c.ok for c in checks), render(checks)
    # What the comparison rests on is really there and not trivially equal.
    assert reference["activations"]["count"] == candidate["activations"]["count"] == 40
    assert candidate["activations"]["p50_seconds"] > 0
