"""Honest lag: every MQTT message carries its simulated send time, receivers measure how
late it arrives (broker queueing included), and a run that was too late says so in its
summary's `verdict`, on one line at the end, and with exit status 4."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator import distributed
from orchestrator.cli import main
from orchestrator.distributed import Service, run_distributed
from orchestrator.mosquitto import Mosquitto
from orchestrator.roles_cli import EXIT_INVALID_RUN
from orchestrator.runner import run_config
from orchestrator.status import LatenessStatus
from orchestrator.verdict import lateness_document, verdict
from smets1.config import load_config
from smets1.lateness import (
    BUCKET_BOUNDS_SECONDS,
    LatenessMeter,
    lateness_threshold_seconds,
    percentile,
)
from tests.orchestrator.live import health

CONFIG = Path(__file__).parent / "files" / "tiny.yaml"
DEVICES = 24
LATENESS_KEYS = {"worst_seconds", "p99_seconds", "samples", "threshold_seconds", "roles"}
VERDICT_KEYS = {"status", "reason", "threshold_seconds"}


# -- the measure and the threshold ----------------------------------------------------------


def test_threshold_is_a_tenth_of_the_shortest_image_transfer() -> None:
    config = load_config(CONFIG)
    # zeta-3.2 (12,000 bytes) to zeta-s1: 128 kbit/s (0.75 s) plus 0.1 s of latency.
    assert lateness_threshold_seconds(config) == pytest.approx(0.085)
    # The demo day: 1 MiB to zeta-s1 at 40 kbit/s (209.7 s) plus 0.8 s.
    demo = load_config(Path(__file__).parents[2] / "fleet_configs" / "demo.yaml")
    assert lateness_threshold_seconds(demo) == pytest.approx(21.05, abs=0.01)
    chosen = config.model_copy(update={"max_lateness_seconds": 5.0})
    assert lateness_threshold_seconds(chosen) == 5.0


def test_meter_keeps_count_worst_and_a_p99_that_is_never_low() -> None:
    meter = LatenessMeter()
    for k in range(1, 1001):
        meter.add(k / 1000)  # 1 ms .. 1 s
    meter.add(-0.5)  # a sender's clock a little ahead: on time, not negative
    assert meter.count == 1001 and meter.worst == 1.0
    assert 0.99 <= meter.p99 <= 0.99 * 2 ** (1 / 4)
    assert meter.take_recent_worst() == 1.0 and meter.take_recent_worst() == 0.0
    assert percentile([0] * (len(BUCKET_BOUNDS_SECONDS) + 1), 0.99, 0.0) == 0.0
    beyond = LatenessMeter()
    beyond.add(1e9)  # past the last bucket: the worst itself
    assert beyond.p99 == 1e9


def _status(worst: float, of: str = "messages") -> LatenessStatus:
    meter = LatenessMeter()
    meter.add(worst)
    return LatenessStatus.of_meter(meter, 0.5, False, of)  # type: ignore[arg-type]


def test_verdict_is_invalid_past_the_threshold_and_says_the_counts_do_not_count() -> None:
    roles = {"scheduler": _status(0.01, "timers"), "fleet-1": _status(7.0)}
    lateness = lateness_document(roles, threshold_seconds=0.5)
    assert set(lateness) == LATENESS_KEYS and lateness["worst_seconds"] == 7.0
    assert lateness["samples"] == 2
    bad = verdict(lateness, {"offline": 3}, trt_missed=2)
    assert set(bad) == VERDICT_KEYS and bad["status"] == "invalid"
    assert bad["threshold_seconds"] == 0.5
    assert "fleet-1's messages arrived up to 7 simulated s late" in bad["reason"]
    assert (
        "failed (offline 3), offline and TRT-missed (2) counts are not to be trusted"
        in (bad["reason"])
    )
    good = verdict(lateness_document({"fleet-0": _status(0.5)}, 0.5), {}, 0)
    assert good["status"] == "valid"


# -- in process: the same keys, trivially valid -----------------------------------------------


def test_in_process_summary_carries_lateness_and_a_valid_verdict(tmp_path: Path) -> None:
    summary = run_config(load_config(CONFIG), tmp_path / "local", progress=None)
    assert set(summary["lateness"]) == LATENESS_KEYS
    assert summary["lateness"]["worst_seconds"] == 0.0
    assert set(summary["verdict"]) == VERDICT_KEYS
    assert summary["verdict"]["status"] == "valid"
    assert summary["verdict"]["threshold_seconds"] == pytest.approx(0.085)


# -- the command line: one line at the end, exit status 4 ------------------------------------


def _fake_run(summary: dict[str, Any]) -> Any:
    def run(*_: Any, **__: Any) -> dict[str, Any]:
        return summary

    return run


def test_an_invalid_distributed_run_ends_with_one_line_and_exit_status_4(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = run_config(load_config(CONFIG), tmp_path / "local", progress=None)
    summary["bus"].update(messages_per_second=1.0, bytes_per_second=1.0, seconds=1.0)
    roles = {"fleet-0": _status(9.0)}
    summary["lateness"] = lateness_document(roles, 0.5)
    summary["verdict"] = verdict(summary["lateness"], {}, 0)
    monkeypatch.setattr(distributed, "run_distributed", _fake_run(summary))
    out = str(tmp_path / "dist")
    assert main(["distributed", str(CONFIG), "--out", out]) == EXIT_INVALID_RUN == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("smets1: invalid run: fleet-0's messages")
    summary["verdict"] = verdict(lateness_document({"fleet-0": _status(0.1)}, 0.5), {}, 0)
    assert main(["distributed", str(CONFIG), "--out", out]) == 0
    assert capsys.readouterr().err == ""


# -- through a real broker ----------------------------------------------------------------------


@pytest.mark.mqtt
def test_a_run_that_keeps_up_is_valid_with_small_lateness(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """tiny.yaml at speed 2. Its links are fast (the default threshold is 0.0612 s, 31 ms
    wall at speed 2, which one stall of a loaded test machine can pass): the config is
    given a threshold of 0.25 s here, still under half of its shortest frame."""
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG.read_text() + "max_lateness_seconds: 0.25\n")
    summary = run_distributed(
        config,
        tmp_path / "dist",
        broker=broker.url,
        shards=2,
        dco_workers=1,
        speed=2.0,
        timeout_seconds=90.0,
    )
    assert summary["images_activated"] == DEVICES, summary["failed"]
    lateness = summary["lateness"]
    assert summary["verdict"]["status"] == "valid", summary["verdict"]["reason"]
    assert lateness["worst_seconds"] <= lateness["threshold_seconds"] == 0.25
    assert set(lateness["roles"]) == {"scheduler", "dco-w0", "fleet-0", "fleet-1"}
    for name in ("dco-w0", "fleet-0", "fleet-1"):
        assert lateness["roles"][name]["of"] == "messages"
        assert lateness["roles"][name]["samples"] > 0, name
    # The same keys as the in-process summary.
    local = run_config(load_config(CONFIG), tmp_path / "local", progress=None)
    assert set(summary["lateness"]) == set(local["lateness"]) == LATENESS_KEYS
    assert set(summary["verdict"]) == set(local["verdict"]) == VERDICT_KEYS
    status = json.loads((tmp_path / "dist" / "fleet-0.json").read_text())
    assert status["lateness"]["samples"] == lateness["roles"]["fleet-0"]["samples"]


@pytest.mark.mqtt
def test_a_dco_frozen_mid_campaign_makes_the_run_invalid(broker: Mosquitto, tmp_path: Path) -> None:
    """The DCO worker is frozen (SIGSTOP) for 3 wall seconds mid-campaign: the devices'
    answers sent meanwhile wait in the broker and reach it late by as much, which its
    lateness shows though its own publishing never waited. The verdict says the run is
    invalid, and why."""
    stopped = {"seconds": 0.0}
    speed = 2.0

    def freeze_a_shard(services: dict[str, Service]) -> None:
        svc = services["dco-w0"]
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:  # until blocks are out: answers will follow
            dco = health(svc).get("dco", {})
            if dco.get("in_flight") and dco.get("blocks_sent"):
                break
            time.sleep(0.02)
        proc = svc.proc
        proc.send_signal(signal.SIGSTOP)
        began = time.monotonic()
        try:
            time.sleep(3.0)
        finally:
            proc.send_signal(signal.SIGCONT)
        stopped["seconds"] = time.monotonic() - began

    out = tmp_path / "dist"
    summary = run_distributed(
        CONFIG,
        out,
        broker=broker.url,
        shards=2,
        dco_workers=1,
        speed=speed,
        timeout_seconds=120.0,
        on_started=freeze_a_shard,
    )
    assert stopped["seconds"] >= 3.0
    lateness = summary["lateness"]
    # The freeze shows as lateness of a good part of it, wherever it landed: answers
    # that waited in the broker for the DCO, the DCO's own timers, or frames it had
    # queued and sent on waking (a shard's lateness: they were meant to go before).
    roles = lateness["roles"]

    def worst(r: str) -> float:
        return max(roles[r]["worst_seconds"], roles[r]["timers_worst_seconds"])

    latest = max(roles, key=worst)
    assert latest in ("dco-w0", "fleet-0", "fleet-1"), lateness
    assert worst(latest) >= 1.0 * speed, lateness
    assert lateness["worst_seconds"] == worst(latest)
    assert summary["verdict"]["status"] == "invalid"
    # The reason names the latest role (both are the freeze's doing).
    assert summary["verdict"]["reason"].split("'s ")[0] in ("dco-w0", "fleet-0", "fleet-1")
    assert "not to be trusted" in summary["verdict"]["reason"]
    status = json.loads((out / f"{latest}.json").read_text())["lateness"]
    assert max(status["worst_seconds"], status["timers_worst_seconds"]) >= 1.0 * speed
    assert "over the run's threshold" in (out / f"{latest}.log").read_text()
