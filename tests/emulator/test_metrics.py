"""A fleet shard's metrics through prometheus-client, parsed back by its parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from emulator.fleet import FleetHost, build_devices
from emulator.metrics import FLEET_METRICS
from smets1.bus import InProcessBus
from smets1.clock import RealClock
from smets1.config import FleetConfig
from smets1.metrics import exposition, role_registry, sampler
from tests.factories import tiny_config


def test_fleet_metrics_count_devices_and_frames_without_device_labels() -> None:
    config = FleetConfig.model_validate(tiny_config())
    host = FleetHost(RealClock(), InProcessBus(), config.name, build_devices(config))
    host.counters.frames_received = 5
    text = exposition(role_registry("fleet", [sampler(host, FLEET_METRICS)])).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["smets1_fleet_devices"].samples[0].value == 6
    received = families["smets1_fleet_frames_received"]
    assert received.type == "counter" and received.documentation
    assert [s.value for s in received.samples if s.name.endswith("_total")] == [5]
    assert all("device" not in s.labels for f in families.values() for s in f.samples)


def test_devices_by_state_is_one_gauge_with_every_state() -> None:
    config = FleetConfig.model_validate(tiny_config())
    host = FleetHost(RealClock(), InProcessBus(), config.name, build_devices(config))
    text = exposition(role_registry("fleet", [sampler(host, FLEET_METRICS)])).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    by_state = {
        s.labels["state"]: s.value for s in families["smets1_fleet_devices_by_state"].samples
    }
    assert by_state["idle"] == 6 and by_state["active"] == 0 and sum(by_state.values()) == 6
