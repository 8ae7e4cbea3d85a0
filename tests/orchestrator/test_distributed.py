"""The whole path as separate processes through mosquitto: DCO worker(s), two fleet
shards and the scheduler, each `python -m orchestrator.cli ROLE`."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.distributed import Service, run_distributed, wait_healthy
from orchestrator.mosquitto import Mosquitto
from orchestrator.runner import run_config
from smets1.config import load_config
from tests.orchestrator.live import health
from tests.smets1.test_shared_clock import announce_clock

pytestmark = pytest.mark.mqtt

CONFIG = Path(__file__).parent / "files" / "tiny.yaml"
DEVICES = 24


def test_distributed_run_ends_as_the_in_process_run(broker: Mosquitto, tmp_path: Path) -> None:
    summary = run_distributed(
        CONFIG,
        tmp_path / "dist",
        broker=broker.url,
        shards=2,
        dco_workers=2,
        speed=50.0,
        timeout_seconds=45.0,
    )
    assert summary["images_activated"] == summary["requests"] == DEVICES, summary["failed"]
    assert summary["device_states"] == {"active": DEVICES}
    per_shard = summary["devices_per_shard"]
    assert sum(per_shard) == DEVICES and all(per_shard)
    # Each shard heard only the frames of its own devices, from both DCO workers.
    for shard in range(2):
        status = json.loads((tmp_path / "dist" / f"fleet-{shard}.json").read_text())
        assert status["fleet"]["unknown_device_frames"] == 0
        assert status["fleet"]["frames_received"] > 0
    workers = [json.loads((tmp_path / "dist" / f"dco-w{w}.json").read_text()) for w in (0, 1)]
    assert all(w["dco"]["transfers_ok"] for w in workers)
    assert sum(w["dco"]["stray_frames"] for w in workers) == 0  # every reply found its asker
    local = run_config(load_config(CONFIG), tmp_path / "local", progress=None)
    for key in ("requests", "images_activated", "failed", "device_states", "blocks_delivered"):
        assert summary[key] == local[key], key
    assert summary["bus"]["messages"] > 0


def test_campaign_completes_across_a_20_second_broker_outage(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """The broker is down for 20 wall seconds mid-campaign (40 simulated seconds at speed
    2, longer than the whole campaign takes without it): the campaign ends exactly as it
    does in process, with nothing accepted lost and not one block sent twice."""
    seen: dict[str, bool] = {}

    def outage_mid_campaign(scheduler: Service) -> None:
        time.sleep(1.5)
        seen["scheduler_running"] = scheduler.proc.poll() is None
        broker.restart(down_seconds=20.0)

    summary = run_distributed(
        CONFIG,
        tmp_path / "dist",
        broker=broker.url,
        shards=2,
        dco_workers=1,
        speed=2.0,
        timeout_seconds=90.0,
        on_scheduler_started=outage_mid_campaign,
    )
    assert seen["scheduler_running"], "the broker went down after the campaign had ended"
    local = run_config(load_config(CONFIG), tmp_path / "local", progress=None)
    for key in ("requests", "images_activated", "failed", "device_states", "trt_met"):
        assert summary[key] == local[key], key
    assert summary["images_activated"] == DEVICES
    # Nothing accepted was lost: not one block had to be sent again.
    assert summary["blocks_delivered"] == summary["blocks_sent"] == local["blocks_sent"]
    # Every MQTT process (one DCO worker, two shards) lost its connection and came back.
    assert summary["bus"]["connection_losses"] >= 3
    # The campaign really waited for the broker: it cannot end before it came back.
    assert summary["bus"]["seconds"] > 20.0


def test_campaign_completes_across_a_dco_crash(broker: Mosquitto, tmp_path: Path) -> None:
    """A DCO worker killed mid-campaign drops every 11.3 it held open; the scheduler
    sends each again once the worker is back, and the devices resume from their bitmaps."""
    seen: dict[str, bool] = {}

    def crash_the_dco(services: dict[str, Service]) -> None:
        # The hardest moment: 11.3s open, and devices rebooting into the image the
        # dead worker told them to activate (a new transfer would find them busy).
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            activating = sum(
                health(services[f"fleet-{s}"]).get("device_states", {}).get("activating", 0)
                for s in (0, 1)
            )
            if activating and health(services["dco-w0"]).get("dco", {}).get("in_flight"):
                break
            time.sleep(0.02)
        seen["scheduler_running"] = services["scheduler"].proc.poll() is None
        services["dco-w0"].crash_and_restart(down_seconds=0.5)

    out = tmp_path / "dist"
    summary = run_distributed(
        CONFIG,
        out,
        broker=broker.url,
        shards=2,
        dco_workers=1,
        speed=10.0,
        timeout_seconds=60.0,
        on_started=crash_the_dco,
    )
    assert seen["scheduler_running"], "the DCO crashed after the campaign had ended"
    scheduler_log = (out / "scheduler.log").read_text()
    assert "dropped a request" in scheduler_log, "no 11.3 was open when the DCO crashed"
    # A device that the dead worker had told to activate was not sent the image again.
    assert "already runs the image" in scheduler_log
    assert summary["images_activated"] == summary["requests"] == DEVICES, summary["failed"]
    assert summary["failed"] == {}
    assert summary["device_states"] == {"active": DEVICES}


def test_a_role_whose_port_was_taken_first_starts_again_on_another(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """`free_port` finds a port, and another program may bind it before the role does
    (other test runs on a shared machine did): the launcher starts that role again."""
    with socket.socket() as squatter:
        squatter.bind(("0.0.0.0", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        announce_clock(broker.url, "tiny", tmp_path / "clock")
        argv = [sys.executable, "-m", "orchestrator.cli", "fleet", str(CONFIG)]
        argv += ["--broker", broker.url, "--shard", "0", "--shards", "1", "--port", str(taken)]
        argv += ["--state-dir", str(tmp_path / "state")]
        svc = Service("fleet-0", argv, tmp_path)
        try:
            wait_healthy([(svc, f"http://127.0.0.1:{taken}/health")], 30.0)
            assert svc.port != taken
            log = svc.log_path.read_text()
            assert "Address already in use" in log and "Traceback" not in log
        finally:
            svc.stop()


def test_every_role_follows_a_speed_change_mid_run(
    broker: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No process is given a start time: the scheduler leads the clock, and when it is
    asked for a new speed mid-run (`smets1 clock --speed`) every process goes on at it."""
    from orchestrator.cli import main

    shown: list[dict[str, Any]] = []

    def speed_up(services: dict[str, Service]) -> None:
        for svc in services.values():
            assert "--wall0" not in svc.argv, svc.argv
        assert main(["clock", str(CONFIG), "--broker", broker.url, "--speed", "100"]) == 0
        shown.append(json.loads(capsys.readouterr().out))

    out = tmp_path / "dist"
    summary = run_distributed(
        CONFIG,
        out,
        broker=broker.url,
        shards=2,
        speed=50.0,
        timeout_seconds=60.0,
        on_started=speed_up,
    )
    assert summary["images_activated"] == summary["requests"] == DEVICES, summary["failed"]
    assert shown and shown[0]["speed"] == 100.0 and shown[0]["sequence"] == 2
    for name in ("scheduler", "dco-w0", "fleet-0", "fleet-1"):
        clock = json.loads((out / f"{name}.json").read_text())["clock"]
        assert clock["speed"] == 100.0 and clock["clock_sequence"] == 2, (name, clock)
    assert "the clock changes speed" in (out / "scheduler.log").read_text()
