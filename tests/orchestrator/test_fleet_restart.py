"""A fleet shard killed (SIGKILL) mid-campaign and started again on the same --state-dir
resumes every device from its flash: at the end each device runs what the scheduler
recorded for it, and no device was flashed twice."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from emulator.flash_journal import JOURNAL_NAME, FlashJournal, read_journal
from emulator.fleet import build_devices
from emulator.slots import FlashStore
from orchestrator.distributed import Service, run_distributed
from orchestrator.mosquitto import Mosquitto
from smets1.config import load_config

pytestmark = pytest.mark.mqtt

CONFIG = Path(__file__).parent / "files" / "tiny.yaml"
DEVICES = 24
SHARDS = 2


def health(svc: Service) -> dict[str, Any]:
    url = f"http://127.0.0.1:{svc.argv[svc.argv.index('--port') + 1]}/health"
    with contextlib.suppress(OSError, ValueError):
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return dict(json.loads(resp.read()))
    return {}


def test_a_killed_shard_resumes_every_device_from_its_flash(
    broker: Mosquitto, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    def kill_a_shard(services: dict[str, Service]) -> None:
        # Mid-campaign: some of the shard's devices done, others still under way.
        shard = services["fleet-1"]
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            states = health(shard).get("device_states", {})
            if states.get("active") and set(states) - {"active"}:
                seen["states"] = states
                break
            time.sleep(0.02)
        seen["scheduler_running"] = services["scheduler"].proc.poll() is None
        shard.crash_and_restart(down_seconds=0.5)

    out = tmp_path / "dist"
    summary = run_distributed(
        CONFIG,
        out,
        broker=broker.url,
        shards=SHARDS,
        dco_workers=1,
        speed=10.0,
        timeout_seconds=60.0,
        on_started=kill_a_shard,
    )
    assert seen["scheduler_running"], "the shard was killed after the campaign had ended"
    assert "states" in seen, "the shard was never caught mid-campaign"
    assert "killed and started again" in (out / "fleet-1.log").read_text()
    assert summary["images_activated"] == summary["requests"] == DEVICES, summary["failed"]
    assert summary["device_states"] == {"active": DEVICES}

    # What the scheduler recorded for each device ...
    db = sqlite3.connect(out / "scheduler-state" / "scheduler.sqlite")
    try:
        recorded = dict(
            db.execute("SELECT device_id, file_version FROM requests WHERE state='done'")
        )
    finally:
        db.close()
    assert len(recorded) == DEVICES
    # ... is what its flash says it runs, and it booted into it once.
    flash: dict[int, tuple[int, int]] = {}
    for s in range(SHARDS):
        path = out / f"fleet-{s}-state" / JOURNAL_NAME
        for device_id, (head, _, _) in read_journal(path.read_bytes(), str(path)).devices.items():
            flash[device_id] = (head[7], head[5])  # active version, activations
    assert flash == {device_id: (version, 1) for device_id, version in recorded.items()}


def test_fleet_role_refuses_a_state_dir_of_another_shard(tmp_path: Path) -> None:
    """One line naming the state dir and what it was written for; exit status 2."""
    state = tmp_path / "state"
    cfg = load_config(CONFIG)
    flash = FlashStore()
    FlashJournal.open(
        state, build_devices(cfg, 0, 2, flash=flash), flash, fleet=cfg.name, shard=0, shards=2
    ).close()
    argv = [sys.executable, "-m", "orchestrator.cli", "fleet", str(CONFIG)]
    argv += ["--shard", "1", "--shards", "2", "--state-dir", str(state)]
    argv += ["--broker", "mqtt://127.0.0.1:9"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("smets1: error:")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"fleet state dir {state} was written for fleet 'tiny' shard 0/2" in lines[0]
    assert "not fleet 'tiny' shard 1/2" in lines[0]
