"""Links and faults in the fleet config: validation, named profiles, per-group overrides,
seeded streams, and the shipped faults.yaml."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from emulator.faults import FaultModel, device_rng
from emulator.fleet import FleetHost, build_devices
from smets1.bus import InProcessBus, down_topic, up_topic
from smets1.clock import VirtualClock, VirtualEventLoop
from smets1.config import FleetConfig, load_config
from smets1.config_fleet import LINK_PROFILES
from smets1.errors import ConfigError
from smets1.wire import ReadVersion
from tests.factories import tiny_config

ROOT = Path(__file__).resolve().parents[2]


def config(**model: Any) -> FleetConfig:
    raw = tiny_config()
    raw["models"][0].update(model)
    return FleetConfig.model_validate(raw)


def test_named_link_and_a_named_link_with_changes() -> None:
    assert (
        config(link="gprs").models[0].link.bandwidth_bps == LINK_PROFILES["gprs"]["bandwidth_bps"]
    )
    link = config(link={"profile": "edge", "latency_seconds": 4}).models[0].link
    assert (link.bandwidth_bps, link.latency_seconds) == (100_000, 4)


def test_unknown_link_profile_names_the_known_ones() -> None:
    with pytest.raises(ValidationError, match=r"unknown link profile 'lte'.*gprs"):
        config(link="lte")


@pytest.mark.parametrize(
    ("faults", "field"),
    [
        ({"block_los_rate": 0.1}, "block_los_rate"),
        ({"block_loss_rate": 1.5}, "block_loss_rate"),
        ({"offline_windows": [{"start_seconds": 0}]}, "duration_seconds"),
        ({"offline_windows": [{"start_seconds": 0, "duration_seconds": 9, "every": 1}]}, "every"),
    ],
)
def test_fault_keys_are_checked_by_name(faults: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        config(faults=faults)


def test_mistyped_fault_key_in_a_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    import yaml

    raw = tiny_config()
    raw["devices"][0]["faults"] = {"hang_probabilty": 0.1}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"devices\.0\.faults\.hang_probabilty: unknown key"):
        load_config(path)


def test_group_link_and_faults_replace_the_models() -> None:
    raw = tiny_config()
    raw["models"][0]["faults"] = {"boot_failure_rate": 0.5}
    raw["devices"] = [
        {"model": "acme-e1", "count": 2, "firmware_version": 1},
        {
            "model": "acme-e1",
            "count": 2,
            "firmware_version": 1,
            "link": "gprs-poor",
            "faults": {"refusal_rate": 1.0},
        },
    ]
    devices = list(build_devices(FleetConfig.model_validate(raw)).values())
    assert devices[0].profile is devices[1].profile  # one profile per group, shared
    assert devices[0].profile.faults == FaultModel(boot_failure_rate=0.5)
    assert devices[2].profile.faults == FaultModel(refusal_rate=1.0)
    assert devices[2].profile.link.bandwidth_bps == LINK_PROFILES["gprs-poor"]["bandwidth_bps"]
    assert devices[0].profile.link.bandwidth_bps == 100_000
    assert all(d.rng is None for d in devices)  # made only when first needed


def test_device_streams_depend_on_seed_and_device_only() -> None:
    a = [device_rng(1, 42).random() for _ in range(3)]
    assert a == [device_rng(1, 42).random() for _ in range(3)]
    assert a != [device_rng(2, 42).random() for _ in range(3)]
    assert device_rng(1, 42).random() != device_rng(1, 43).random()


def test_offline_windows_once_and_repeating() -> None:
    once = FaultModel(offline_windows=((100.0, 50.0, 0.0),))
    assert [once.offline(t) for t in (99, 100, 149, 150, 1e6)] == [False, True, True, False, False]
    daily = FaultModel(offline_windows=((3_600.0, 1_800.0, 86_400.0),))
    assert daily.offline(86_400 + 3_600 + 10) and not daily.offline(86_400 + 5_500)


def test_online_windows_leave_the_device_out_of_reach_elsewhere() -> None:
    nightly = FaultModel(online_windows=((7_200.0, 7_200.0, 86_400.0),))
    assert nightly.offline(0) and nightly.offline(86_400 + 15_000)
    assert not nightly.offline(7_200) and not nightly.offline(86_400 + 10_000)


def test_shipped_faults_yaml_validates() -> None:
    cfg = load_config(ROOT / "fleet_configs" / "faults.yaml")
    assert 200 <= sum(g.count for g in cfg.devices) <= 1_000
    assert any(g.faults is not None for g in cfg.devices)


def test_idle_devices_hold_no_random_stream_or_timer() -> None:
    raw = tiny_config()
    raw["devices"] = [{"model": "acme-e1", "count": 500, "firmware_version": 1}]
    cfg = FleetConfig.model_validate(raw)
    devices = build_devices(cfg)
    d = next(iter(devices.values()))
    assert d.rng is None and d.rx is None and d.inactive is None
    assert not hasattr(d, "__dict__")
    clock = VirtualClock(cfg.epoch_seconds)

    async def main() -> tuple[int, int, int, list[bytes]]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualEventLoop)
        bus = InProcessBus()
        answers: list[bytes] = []
        bus.subscribe(up_topic(cfg.name, "+"), lambda _topic, payload: answers.append(payload))
        host = FleetHost(clock, bus, cfg.name, devices)
        host.start()
        await asyncio.sleep(0)
        idle = loop.pending_timers
        # One device answers an 11.2: its frame needs a timer while it is on the link.
        bus.publish(down_topic(cfg.name, 0), ReadVersion(d.device_id, 1).serialize())
        await asyncio.sleep(0)
        busy = loop.pending_timers
        await clock.sleep(600)
        after = loop.pending_timers
        await bus.close()
        return idle, busy, after, answers

    idle, busy, after, answers = clock.run(main())
    # 500 idle devices: not one timer; one for the frame in flight; none once it is done.
    assert (idle, busy, after, len(answers)) == (0, 1, 0, 1)
    assert all(x.rng is None for x in devices.values())
