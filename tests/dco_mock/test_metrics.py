"""The DCO's /metrics: prometheus-client exposition that prometheus-client parses back."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from dco_mock.http_api import make_app
from dco_mock.metrics import DCO_METRICS
from dco_mock.service import Dco
from smets1.bus import InProcessBus
from smets1.clock import RealClock
from smets1.config import DcoConfig
from smets1.config_background import BackgroundConfig
from smets1.metrics import exposition, role_registry, sampler


async def test_metrics_follow_the_exposition_format_with_help_and_types() -> None:
    dco = Dco(RealClock(), InProcessBus(), "t", 1, DcoConfig())
    dco.counters.transfers_started = 7
    dco.counters.transfers_failed["offline"] = 2
    dco.counters.images_waiting = 3
    dco.counters.image_processing_seconds = 164.9
    registry = role_registry("dco", [sampler(dco, DCO_METRICS)])
    async with TestClient(TestServer(make_app(dco, registry=registry, token="t"))) as client:
        resp = await client.get("/metrics")
        assert resp.status == 200
        text = await resp.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    started = families["smets1_dco_transfers_started"]
    assert started.type == "counter" and started.documentation
    (sample,) = [s for s in started.samples if s.name.endswith("_total")]
    assert sample.value == 7 and sample.labels == {"role": "dco"}
    assert families["smets1_dco_transfers_failed"].samples[0].value == 2
    assert families["smets1_dco_transfers_in_flight"].type == "gauge"
    assert families["smets1_dco_images_waiting"].samples[0].value == 3
    processing = families["smets1_dco_image_processing_simulated_seconds"]
    assert processing.type == "counter" and processing.samples[0].value == 164.9
    assert "process_cpu_seconds" in families  # the process collector is there too
    for family in families.values():
        for s in family.samples:
            assert "device" not in s.labels
    await dco.close()


async def test_transfer_times_are_a_histogram() -> None:
    dco = Dco(RealClock(), InProcessBus(), "t", 1, DcoConfig())
    dco.counters.transfer_seconds.observe(400.0)
    dco.counters.transfer_seconds.observe(5_000.0)
    text = exposition(role_registry("dco", [sampler(dco, DCO_METRICS)])).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    hist = families["smets1_dco_transfer_simulated_seconds"]
    assert hist.type == "histogram" and hist.documentation
    values = {(s.name, s.labels.get("le")): s.value for s in hist.samples}
    assert values["smets1_dco_transfer_simulated_seconds_bucket", "600.0"] == 1
    assert values["smets1_dco_transfer_simulated_seconds_count", None] == 2
    assert values["smets1_dco_transfer_simulated_seconds_sum", None] == 5_400
    await dco.close()


async def test_background_requests_by_kind_when_the_dco_carries_them() -> None:
    dco = Dco(RealClock(), InProcessBus(), "t", 1, DcoConfig())

    def families() -> dict[str, Any]:
        text = exposition(role_registry("dco", [sampler(dco, DCO_METRICS)])).decode()
        return {f.name: f for f in text_string_to_metric_families(text)}

    # No background: the families are there, with no samples.
    assert families()["smets1_dco_background_requests"].samples == []
    traffic = dco.carry_background(BackgroundConfig(), [(1, 10)], seed=1)
    stats = traffic.stats
    first, second = stats.kind_names[:2]
    for _ in range(3):
        stats.made(0, 7)
    stats.answered(0, 7, 1.0)
    stats.answered(0, 7, stats.targets[0] + 1)
    stats.lost(0, 7, 3_600.0)
    stats.made(1, 8)
    got = families()
    req = {s.labels["kind"]: s.value for s in got["smets1_dco_background_requests"].samples
           if s.name.endswith("_total")}  # fmt: skip
    assert req[first] == 3 and req[second] == 1
    met = {s.labels["kind"]: s.value for s in got["smets1_dco_background_met"].samples}
    missed = {s.labels["kind"]: s.value for s in got["smets1_dco_background_missed"].samples}
    assert (met[first], missed[first]) == (1, 2)
    assert got["smets1_dco_background_requests"].type == "counter"
    assert got["smets1_dco_background_open"].type == "gauge"
    assert got["smets1_dco_background_open"].samples[0].value == 0
    await dco.close()
