"""kill -9 of each role in turn, as separate processes through mosquitto (issue 10).

The scheduler is killed mid-campaign and between its two campaigns, then the DCO with
11.3s open, then a fleet shard with some of its devices done and others under way; each
is started again with the same arguments and state directory. At the end, read from
outside the code under test (the scheduler's SQLite file, every device's version through
the DCO's 11.2, and the shards' flash journals):

- every accepted request ends in exactly one final state, one request per device;
- each device runs the version the scheduler reports for it;
- the counts add up;
- the later campaign was submitted once, not lost to the kill;
- no device was flashed twice (its flash counts one activation).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from emulator.flash_journal import JOURNAL_NAME, read_journal
from orchestrator.distributed import Service, run_distributed
from orchestrator.mosquitto import Mosquitto
from smets1.config import load_config
from smets1.dco_http import VERSION_PATH
from smets1.eui64 import format_eui64
from tests.orchestrator.live import get_json, health

pytestmark = pytest.mark.mqtt

TINY = Path(__file__).parent / "files" / "tiny.yaml"
FINAL = {"done", "failed", "cancelled"}
SPEED = 4.0
KILLED = "--- killed and started again ---"


def two_campaigns(tmp_path: Path) -> Path:
    """tiny.yaml with its second campaign 40 simulated seconds in (10 s of wall time):
    time enough to kill the scheduler mid-way through the first, before the second."""
    text = TINY.read_text().replace("submit_after_seconds: 10", "submit_after_seconds: 40")
    assert "submit_after_seconds: 40" in text
    path = tmp_path / "two-campaigns.yaml"
    path.write_text(text)
    return path


TOKEN = "kill-test-token"


def _in_flight(dco: Service) -> int:
    return int(health(dco).get("dco", {}).get("in_flight", 0))


def _wait_for(what: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout:g} s: {what.__doc__}")
        time.sleep(0.02)


def test_kill_9_of_each_role_in_turn_loses_nothing(
    broker: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMETS1_DCO_TOKEN", TOKEN)  # the launcher hands it to DCO and scheduler
    config = two_campaigns(tmp_path)
    cfg = load_config(config)
    device_ids = [d for d, _ in cfg.device_ids()]
    seen: dict[str, Any] = {}
    versions: dict[int, dict[str, Any]] = {}

    def kill_each(services: dict[str, Service]) -> None:
        dco, scheduler = services["dco-w0"], services["scheduler"]

        def transfers_open() -> bool:
            """the DCO has 11.3s open"""
            return _in_flight(dco) > 0

        _wait_for(transfers_open)
        # Mid-campaign, and (the log below shows) before the second campaign went in.
        scheduler.crash_and_restart(down_seconds=0.2)
        _wait_for(transfers_open)
        seen["dco_killed_with"] = _in_flight(dco)
        dco.crash_and_restart(down_seconds=0.5)
        shard = services["fleet-1"]

        def shard_mid_campaign() -> bool:
            """fleet-1 has devices done and devices under way"""
            states = health(shard).get("device_states", {})
            seen["shard_states"] = states
            return bool(states.get("active")) and bool(set(states) - {"active"})

        _wait_for(shard_mid_campaign)
        shard.crash_and_restart(down_seconds=0.5)

    def read_every_device(services: dict[str, Service]) -> None:
        base = f"http://127.0.0.1:{services['dco-w0'].port}"
        for d in device_ids:
            path = VERSION_PATH.format(device_id=format_eui64(d))
            versions[d] = get_json(base + path, TOKEN)

    out = tmp_path / "dist"
    run_distributed(
        config,
        out,
        broker=broker.url,
        shards=2,
        dco_workers=1,
        speed=SPEED,
        timeout_seconds=120.0,
        on_started=kill_each,
        on_finished=read_every_device,
    )
    assert seen["dco_killed_with"] > 0
    assert (
        KILLED in (out / "fleet-1.log").read_text() and KILLED in (out / "dco-w0.log").read_text()
    )
    # The first life submitted the first campaign only; the second life the second only.
    before, after = (out / "scheduler.log").read_text().split(KILLED)
    assert "campaign acme-rollout" in before and "campaign zeta-rollout" not in before
    assert "campaign zeta-rollout" in after and "campaign acme-rollout" not in after
    assert "resuming 14 request(s)" in after
    # The restarted scheduler goes on with the clock it started (its state folder and the
    # broker's retained announcement hold it), and the restarted DCO joins that clock.
    assert "a new clock: run " in before and "a new clock" not in after
    run = before.split("a new clock: run ")[1].split()[0]
    assert f"the clock goes on: run {run} #1" in after
    dco_after = (out / "dco-w0.log").read_text().split(KILLED)[1]
    assert f"follows the clock: run {run} #1" in dco_after

    db = sqlite3.connect(out / "scheduler-state" / "scheduler.sqlite")
    rows = db.execute(
        "SELECT campaign, device_id, state, file_version, running_version FROM requests"
    ).fetchall()
    db.close()
    # One request per device, each in exactly one final state; both campaigns in.
    assert len(rows) == len({r[1] for r in rows}) == len(device_ids)
    assert Counter(r[0] for r in rows) == {"acme-rollout": 14, "zeta-rollout": 10}
    assert {r[2] for r in rows} <= FINAL, Counter(r[2] for r in rows)
    # Each device runs what the scheduler reports for it.
    for campaign, device_signed, state, file_version, running in rows:
        device = device_signed & 0xFFFF_FFFF_FFFF_FFFF
        reading = versions[device]
        assert reading.get("ok"), (format_eui64(device), reading)
        runs = int(reading["running_version"])
        if state == "done":
            assert runs == file_version == running, (campaign, format_eui64(device))
        else:
            assert runs != file_version, (campaign, format_eui64(device), state)
    # The counts add up.
    summary = json.loads((out / "summary.json").read_text())
    states = Counter(r[2] for r in rows)
    assert summary["requests"] == len(rows)
    assert summary["images_activated"] == states["done"]
    assert sum(summary["failed"].values()) == states["failed"]
    assert summary["trt_met"] + summary["trt_missed"] == states["done"] + states["failed"]
    assert summary["unfinished"] == 0
    assert summary["images_activated"] == len(device_ids), summary["failed"]
    # No device was flashed twice: each shard's flash counts one activation a device.
    activations: dict[int, int] = {}
    for s in range(2):
        path = out / f"fleet-{s}-state" / JOURNAL_NAME
        for device_id, (head, _, _) in read_journal(path.read_bytes(), str(path)).devices.items():
            activations[device_id] = head[5]
    assert activations == dict.fromkeys(device_ids, 1)
