"""A distributed run's summary is complete: every key `smets1 run`'s summary has, each
added up over the processes, plus `roles` (CPU, peak RSS, lag and lateness of every
process and of the broker the launcher started), and `report.html` beside it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from dco_mock.service import DcoCounters
from emulator.fleet import FleetCounters
from orchestrator.cli import main
from orchestrator.distributed import clear_previous_run, merge
from orchestrator.report import render as render_record
from orchestrator.report_data import RunRecord
from orchestrator.runner import run_config
from orchestrator.status import (
    BusStatus,
    ClockStatus,
    DcoStatus,
    FleetStatus,
    LatenessStatus,
    RoleUsage,
    SchedulerStatus,
)
from scheduler.summary import SchedulerSummary
from smets1.config import load_config
from smets1.lateness import LatenessMeter
from smets1.mqtt import MqttCounters

CONFIG = Path(__file__).parent / "files" / "tiny.yaml"
DEVICES = 24
#: Summary keys whose value is a document of fixed keys (not keyed by data: a date, a
#: reason, a state), which a distributed summary must also carry in full.
NESTED = ("bus", "lateness", "verdict")
ROLE_KEYS = set(RoleUsage.model_fields)
#: Memory the launching process holds while a distributed run goes on; each role of
#: tiny.yaml holds about 70 MiB.
BALLAST_BYTES = 256 * 2**20


def render(summary: dict[str, Any]) -> str:
    """The report of a summary alone (no run folder: no charts over time)."""
    return render_record(RunRecord(summary))


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """tiny.yaml in process: the summary a distributed run must match key for key."""
    out = tmp_path_factory.mktemp("local")
    return run_config(load_config(CONFIG), out, progress=None)


def _assert_carries_every_key_of(summary: dict[str, Any], local: dict[str, Any]) -> None:
    assert set(summary) >= set(local), f"missing: {sorted(set(local) - set(summary))}"
    for key in NESTED:
        missing = set(local[key]) - set(summary[key])
        assert not missing, f"{key}: missing {sorted(missing)}"


# -- the merge, on hand-made statuses --------------------------------------------------------


def _clock(worst_lag: float) -> ClockStatus:
    return ClockStatus(
        lag_seconds=0.0,
        loop_lag_seconds=0.0,
        transport_delay_seconds=0.0,
        lagging=False,
        worst_lag_seconds=worst_lag,
        lag_episodes=1,
        speed=10.0,
        simulated_time="2025-03-01T00:00:00+00:00",
    )


def _lateness(*samples: float, of: str = "messages") -> LatenessStatus:
    meter = LatenessMeter()
    for s in samples:
        meter.add(s)
    return LatenessStatus.of_meter(meter, 0.5, False, of)  # type: ignore[arg-type]


def _bus(published: int) -> BusStatus:
    return BusStatus(
        connected=True,
        backlog=0,
        counters=MqttCounters(messages_published=published, bytes_published=published * 100),
    )


def _fleet(shard: int, cpu: float, rss: int, transitions: dict[str, int]) -> FleetStatus:
    counters = FleetCounters(
        blocks_received=10,
        block_bytes_received=10_240,
        faults=Counter({"blocks_lost": shard + 1}),
        frames_dropped=Counter({"offline": 2}),
    )
    return FleetStatus(
        shard=shard,
        shards=2,
        cpu_seconds=cpu,
        peak_rss_bytes=rss,
        devices=3,
        clock=_clock(0.2 + shard),
        lateness=_lateness(0.01, 0.03 * (shard + 1)),
        bus=_bus(5),
        fleet=counters,
        device_states={"active": 3},
        device_transitions=transitions,
    )


def _dco(worker: int, cpu: float, rss: int) -> DcoStatus:
    counters = DcoCounters(
        blocks_sent=10,
        bytes_sent=10_240,
        rounds=4 + worker,
        retries=1,
        resumes=worker,
        stray_frames=7,
    )
    return DcoStatus(
        worker=f"w{worker}",
        shards=2,
        cpu_seconds=cpu,
        peak_rss_bytes=rss,
        clock=_clock(0.05),
        lateness=_lateness(0.02),
        bus=_bus(9),
        dco=counters,
    )


def _scheduler(local: dict[str, Any]) -> SchedulerStatus:
    fields = set(SchedulerSummary.model_fields)
    return SchedulerStatus(
        cpu_seconds=2.5,
        peak_rss_bytes=80 * 2**20,
        wall_seconds=12.0,
        dco_urls=["http://127.0.0.1:1"],
        clock=_clock(0.01),
        lateness=_lateness(0.004, of="timers"),
        requests={"done": 6},
        summary=SchedulerSummary.model_validate({k: v for k, v in local.items() if k in fields}),
        activations_per_hour=[6],
    )


def test_merge_adds_up_every_process_and_keeps_each_one_in_roles(local: dict[str, Any]) -> None:
    fleets = [
        _fleet(0, 1.5, 90 * 2**20, {"receiving": 3, "active": 3}),
        _fleet(1, 1.25, 120 * 2**20, {"receiving": 3, "active": 3, "verify_failed": 1}),
    ]
    dcos = [_dco(0, 3.0, 100 * 2**20), _dco(1, 2.0, 70 * 2**20)]
    broker = RoleUsage(role="broker", cpu_seconds=0.75, peak_rss_bytes=8 * 2**20)
    summary = merge(_scheduler(local), fleets, dcos, 10.0, 0.5, broker)

    _assert_carries_every_key_of(summary, local)
    assert summary["transfer_rounds"] == 4 + 5
    assert summary["dco_retries"] == 2 and summary["dco_resumes"] == 1
    assert summary["dco_stray_frames"] == 14
    assert summary["device_transitions"] == {"active": 6, "receiving": 6, "verify_failed": 1}
    assert summary["faults"] == {"blocks_lost": 3}
    assert summary["frames_dropped"] == {"offline": 4}
    assert summary["blocks_delivered"] == summary["blocks_sent"] == 20

    roles = summary["roles"]
    assert list(roles) == ["scheduler", "dco-w0", "dco-w1", "fleet-0", "fleet-1", "mosquitto"]
    assert all(set(r) == ROLE_KEYS for r in roles.values())
    assert roles["fleet-1"] == {
        "role": "fleet",
        "cpu_seconds": 1.25,
        "peak_rss_bytes": 120 * 2**20,
        "worst_lag_seconds": 1.2,
        "lateness_worst_seconds": 0.06,
        "lateness_p99_seconds": fleets[1].lateness.p99_seconds,
        "lateness_samples": 2,
    }
    assert roles["scheduler"]["role"] == "scheduler"
    assert roles["scheduler"]["lateness_worst_seconds"] == 0.004
    assert roles["dco-w0"]["cpu_seconds"] == 3.0 and roles["dco-w1"]["role"] == "dco"
    assert roles["mosquitto"]["cpu_seconds"] == 0.75
    assert roles["mosquitto"]["worst_lag_seconds"] is None
    # The largest of any one process, as in process it is the one process's.
    assert summary["peak_rss_bytes"] == 120 * 2**20
    assert summary["cpu_seconds"]["dco-w1"] == 2.0  # the older per-process figure stays

    page = render(summary)
    assert '<table class="roles">' in page
    for name in roles:
        assert f"<td>{name}</td>" in page
    assert "<td>120.0 MiB</td>" in page  # fleet-1's peak RSS
    assert "<td>11</td>" in page  # CPU seconds of all the processes and the broker
    assert f'<p class="ok"><b>Run {summary["verdict"]["status"]}</b>' in page
    assert summary["verdict"]["reason"] in page


def test_merge_without_a_broker_of_its_own_lists_the_processes_only(
    local: dict[str, Any],
) -> None:
    summary = merge(_scheduler(local), [_fleet(0, 1.0, 1, {})], [_dco(0, 1.0, 2)], 5.0, 0.01)
    assert list(summary["roles"]) == ["scheduler", "dco-w0", "fleet-0"]
    assert summary["verdict"]["status"] == "invalid"  # 0.03 s late against 0.01
    page = render(summary)
    assert '<p class="bad"><b>Run invalid</b>' in page
    assert "fleet-0&#x27;s messages arrived" in page


def test_the_in_process_report_shows_its_verdict_and_no_process_table(
    local: dict[str, Any],
) -> None:
    page = render(local)
    assert "<b>Run valid</b>" in page
    assert 'class="roles"' not in page
    assert "<th>DCO transfer rounds, retries, resumes</th>" in page


def test_a_new_run_clears_the_last_one_and_its_broker_persistence(tmp_path: Path) -> None:
    out = tmp_path / "dist"
    stale = [
        out / "summary.json",
        out / "fleet-0.json",
        out / "report.html",
        out / "run.json",
        out / "failed_devices.csv",
        out / "mosquitto" / "mosquitto.db",
        out / "scheduler-state" / "scheduler.sqlite",
        out / "w0" / "images.db",
        out / "fleet-1-state" / "flash.journal",
    ]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("last run")
    kept = out / "fleet-0.log"
    kept.write_text("not the clearer's to remove")
    clear_previous_run(out)
    assert [p for p in stale if p.exists()] == []
    assert kept.exists()


# -- through a real broker ----------------------------------------------------------------------


@pytest.mark.mqtt
def test_a_distributed_run_writes_the_complete_summary_and_the_report(
    mosquitto_exe: str,
    local: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """tiny.yaml through a private mosquitto the launcher starts (so that its CPU and
    memory are in the summary too), at a fixed speed so the run takes seconds: about 10
    s of wall time at 5 (at 50 it took one, before the scheduler's lag watch, which
    checks once a wall second, had taken a sample)."""
    out = tmp_path / "dist"
    argv = ["distributed", str(CONFIG), "--out", str(out), "--shards", "2", "--speed", "5"]
    # The launcher made large: a role must report its own peak memory, not that of the
    # process it was started from (Linux keeps ru_maxrss across exec).
    ballast = b"\x01" * BALLAST_BYTES
    rc = main([*argv, "--timeout", "60"])
    del ballast
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    # 4: a loaded test machine fell behind tiny.yaml's short threshold; still complete.
    assert rc in (0, 4), printed
    assert summary["images_activated"] == DEVICES, summary["failed"]

    _assert_carries_every_key_of(summary, local)
    assert summary["device_states"] == local["device_states"]
    assert summary["device_transitions"]["active"] == local["device_transitions"]["active"]
    assert summary["transfer_rounds"] >= local["transfer_rounds"] == DEVICES
    assert summary["blocks_delivered"] == local["blocks_delivered"]

    roles = summary["roles"]
    assert list(roles) == ["scheduler", "dco-w0", "fleet-0", "fleet-1", "mosquitto"]
    for name, usage in roles.items():
        assert set(usage) == ROLE_KEYS, name
        assert usage["peak_rss_bytes"] > 0, name
        assert usage["cpu_seconds"] is not None, name
    for name in ("scheduler", "dco-w0", "fleet-0", "fleet-1"):
        usage = roles[name]
        status = json.loads((out / f"{name}.json").read_text())
        # A Python process that imported the project: tens of MiB, some CPU.
        assert usage["peak_rss_bytes"] == status["peak_rss_bytes"] > 20 * 2**20, name
        assert usage["peak_rss_bytes"] < BALLAST_BYTES, (name, usage)
        assert usage["cpu_seconds"] == status["cpu_seconds"] > 0, name
        assert usage["lateness_samples"] > 0, (name, usage)
        assert usage["lateness_worst_seconds"] > 0, (name, usage)
        assert usage["lateness_worst_seconds"] >= usage["lateness_p99_seconds"] >= 0, name
        assert usage["worst_lag_seconds"] is not None and usage["worst_lag_seconds"] >= 0, name
    assert summary["peak_rss_bytes"] == max(u["peak_rss_bytes"] for u in roles.values())

    report = (out / "report.html").read_text()
    assert report.startswith("<!doctype html>") and "distributed run" in report
    assert '<table class="roles">' in report
    for name in roles:
        assert f"<td>{name}</td>" in report
    assert f"<b>Run {summary['verdict']['status']}</b>" in report
    # Built from the scheduler's store: the charts over time, and the config's seed.
    assert "Release to answer, against the TRT" in report and "config SHA-256" in report
    assert f"report: {out / 'report.html'}" in printed
    assert "CPU s in all (scheduler " in printed and "mosquitto" in printed
