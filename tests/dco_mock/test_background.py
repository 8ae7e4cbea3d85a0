"""Background traffic at the DCO (issue 16), through a real fleet host and bus: requests
made at the configured rate and profile, answered by the devices, counted met or missed
against their targets; slowed by the firmware sharing the devices' links."""

from __future__ import annotations

import asyncio
from typing import Any

from dco_mock.background import BackgroundTraffic
from smets1.config import FleetConfig
from smets1.config_background import BackgroundConfig
from tests.dco_mock.harness import Harness, fleet_config, run
from tests.factories import make_image

HOUR = 3_600.0
#: The harness link (2 kbit/s, 1 s round trip): an idle device's read of 64 bytes out and
#: 96 back, with 60 bytes of framing each way, takes 1 + 124 * 8 / 2000 + 156 * 8 / 2000.
IDLE_READ_SECONDS = 1.0 + 124 * 8 / 2_000 + 156 * 8 / 2_000


def background(
    per_day: float = 2_000,
    target: float = 30,
    weights: list[float] | None = None,
    **fields: Any,
) -> BackgroundConfig:
    return BackgroundConfig.model_validate(
        {
            "kinds": {
                "read_registers": {
                    "per_device_per_day": per_day,
                    "request_bytes": 64,
                    "response_bytes": 96,
                    "target_seconds": target,
                }
            },
            "hourly_weights": weights if weights is not None else [1] * 24,
            **fields,
        }
    )


def carry(h: Harness, cfg: FleetConfig, bg: BackgroundConfig, seed: int = 1) -> BackgroundTraffic:
    traffic = h.dco.carry_background(bg, cfg.device_spans(), seed, "Europe/London")
    traffic.start()
    return traffic


def reads_for(
    cfg: FleetConfig, bg: BackgroundConfig, seconds: float = HOUR, seed: int = 1
) -> dict[str, Any]:
    async def body(h: Harness) -> dict[str, Any]:
        traffic = carry(h, cfg, bg, seed)
        await h.clock.sleep(seconds)
        traffic.stop()
        assert h.dco.counters.stray_frames == 0
        return traffic.summary()

    return run(cfg, body)


def test_requests_at_the_rate_asked_all_answered_within_target() -> None:
    cfg = fleet_config([{"count": 6}])
    out = reads_for(cfg, background(per_day=2_000))
    # 6 devices × 2,000 a day for an hour: 500 expected (a Poisson count: ±4 sd is ±90)
    assert 410 <= out["requests"] <= 590
    assert out["missed"] == out["unanswered"] == 0
    assert out["met"] == out["requests"] - out["open_at_end"]
    assert abs(out["p50_seconds"] - IDLE_READ_SECONDS) < 0.02 * IDLE_READ_SECONDS
    assert out["kinds"]["read_registers"]["met"] == out["met"]
    assert len(out["by_hour"]["requests"]) == len(out["by_hour"]["p95_seconds"]) == 24


def test_reads_during_a_campaign_are_slower_than_without_it() -> None:
    cfg = fleet_config([{"count": 6}])
    image = make_image(40_000)  # 160 blocks of 256: 160 s of a 2 kbit/s link each

    async def body(h: Harness) -> tuple[dict[str, Any], list[bool]]:
        stored = await h.dco.update_firmware(image)
        traffic = carry(h, cfg, background(per_day=20_000))
        ids = [first + i for first, count in cfg.device_spans() for i in range(count)]
        outcomes = await asyncio.gather(
            *(h.dco.activate_firmware(d, stored.firmware_hash) for d in ids)
        )
        traffic.stop()
        return traffic.summary(), [o.ok for o in outcomes]

    during, ok = run(cfg, body)
    assert all(ok)
    assert during["requests"] > 100
    quiet = reads_for(cfg, background(per_day=20_000), seconds=600)
    # Quiet, reads wait only for each other now and then (half a second of link each).
    assert quiet["p95_seconds"] < 1.5 * IDLE_READ_SECONDS
    # A read waits on the link behind the run of blocks in front of it.
    assert during["p95_seconds"] > 10 * quiet["p95_seconds"]
    assert during["p50_seconds"] > quiet["p50_seconds"]
    assert during["missed"] > 0 and quiet["missed"] == 0


def test_a_target_too_tight_is_missed_and_counted_by_hour() -> None:
    cfg = fleet_config([{"count": 6}])
    weights = [1.0, 0.0, 5.0] + [0.0] * 21  # 00:00 some, 01:00 none, 02:00 five times as many
    out = reads_for(cfg, background(per_day=4_000, target=1.5, weights=weights), 3 * HOUR)
    by_hour = out["by_hour"]
    requests, missed = by_hour["requests"], by_hour["missed"]
    assert requests[1] == 0 and missed[1] == 0 and by_hour["p95_seconds"][1] is None
    assert requests[2] > 3 * requests[0] > 0
    assert missed[0] == requests[0]  # every read takes longer than 1.5 s
    assert missed[2] == requests[2] - out["open_at_end"]
    assert sum(requests[3:]) == 0
    assert out["met"] == 0 and out["missed"] == sum(missed)
    assert by_hour["p95_seconds"][2] > 1.5


def test_the_same_seed_makes_the_same_traffic() -> None:
    cfg = fleet_config([{"count": 6}])
    first = reads_for(cfg, background(per_day=2_000), seed=5)
    again = reads_for(cfg, background(per_day=2_000), seed=5)
    other = reads_for(cfg, background(per_day=2_000), seed=6)
    assert first == again
    assert other != first


def test_over_the_dcos_limit_a_request_waits_and_its_wait_counts() -> None:
    cfg = fleet_config([{"count": 6}])
    out = reads_for(cfg, background(per_day=20_000, max_open_requests=1), seconds=600)
    assert out["waited_for_dco"] > 0 and out["peak_open"] == 1
    assert out["p95_seconds"] > IDLE_READ_SECONDS * 1.5
    free = reads_for(cfg, background(per_day=20_000), seconds=600)
    assert free["waited_for_dco"] == 0 and free["peak_open"] > 1


def test_a_device_that_never_answers_is_given_up() -> None:
    offline = {"offline_windows": [{"start_seconds": 0, "duration_seconds": 10 * HOUR}]}
    cfg = fleet_config([{"count": 3, "faults": offline}])
    out = reads_for(cfg, background(per_day=2_000, give_up_seconds=60))
    assert out["requests"] > 0 and out["met"] == 0
    assert out["unanswered"] == out["missed"] == out["requests"] - out["open_at_end"]
    # Counted in the latencies at the give-up time, a lower bound of theirs.
    assert abs(out["p50_seconds"] - 60) < 0.01 * 60 and out["p95_seconds"] < 61
