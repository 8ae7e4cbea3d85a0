"""The whole path as separate processes through mosquitto: DCO worker(s), two fleet
shards and the scheduler, each `python -m smets1.services_cli ROLE`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from smets1.config import load_config
from smets1.distributed import Mosquitto, Service, run_distributed
from smets1.runner import run_config

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


def test_campaign_completes_across_a_broker_restart(broker: Mosquitto, tmp_path: Path) -> None:
    seen: dict[str, bool] = {}

    def restart_mid_campaign(scheduler: Service) -> None:
        time.sleep(1.0)
        seen["scheduler_running"] = scheduler.proc.poll() is None
        broker.restart(down_seconds=1.0)

    summary = run_distributed(
        CONFIG,
        tmp_path / "dist",
        broker=broker.url,
        shards=2,
        dco_workers=1,
        speed=10.0,
        timeout_seconds=60.0,
        on_scheduler_started=restart_mid_campaign,
    )
    assert seen["scheduler_running"], "the broker restarted after the campaign had ended"
    assert summary["images_activated"] == summary["requests"] == DEVICES, summary["failed"]
    assert summary["device_states"] == {"active": DEVICES}
    # Nothing accepted was lost: not one block had to be sent again.
    local = run_config(load_config(CONFIG), tmp_path / "local", progress=None)
    assert summary["blocks_delivered"] == summary["blocks_sent"] == local["blocks_sent"]
    # Every MQTT process (one DCO worker, two shards) lost its connection and came back.
    assert summary["bus"]["connection_losses"] >= 3
