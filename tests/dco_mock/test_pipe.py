"""The DCO's outbound capacity (issue 16, dco_mock/pipe.py): one FIFO queue of fixed rate
for every frame the DCO sends. Checked through a real DCO, fleet and bus: transfers that
share a slow pipe take the pipe's time, not the links', and a meter read made while blocks
fill it waits behind them."""

from __future__ import annotations

import asyncio
from typing import Any

from dco_mock.pipe import Pipe
from smets1.clock import VirtualClock
from tests.dco_mock.harness import Harness, fleet_config, run
from tests.dco_mock.test_background import background, carry
from tests.factories import make_image

#: A fast link (1 Mbit/s, 0.1 s), so the pipe, not the link, is what a transfer waits for.
FAST = {"bandwidth_bps": 1_000_000, "latency_seconds": 0.1}


def test_frames_leave_in_turn_at_the_rate_and_an_idle_pipe_starts_afresh() -> None:
    clock = VirtualClock(1_000.0)
    pipe = Pipe(clock, 100.0)

    async def body() -> list[float]:
        first = pipe.book(50)
        second = pipe.book(100)  # behind the first
        backlog = pipe.backlog_seconds()
        await clock.sleep(10)
        return [first, second, backlog, pipe.book(100)]  # idle since 1,001.5: starts afresh

    assert clock.run(body()) == [1_000.5, 1_001.5, 1.5, 1_011.0]
    assert pipe.summary()["frames"] == 3 and pipe.summary()["bytes"] == 250


def transfer_times(throughput: float | None, devices: int = 3) -> tuple[list[float], Harness]:
    dco: dict[str, Any] = {} if throughput is None else {"throughput_bytes_per_second": throughput}
    cfg = fleet_config([{"count": devices}], link=FAST, dco=dco)
    image = make_image(40_000)

    async def body(h: Harness) -> tuple[list[float], Harness]:
        stored = await h.dco.update_firmware(image)
        t0 = h.clock.now()
        ids = [first + i for first, count in cfg.device_spans() for i in range(count)]

        async def one(d: int) -> float:
            outcome = await h.dco.activate_firmware(d, stored.firmware_hash)
            assert outcome.ok, outcome
            return h.clock.now() - t0

        return list(await asyncio.gather(*(one(d) for d in ids))), h

    return run(cfg, body)


def test_transfers_sharing_a_slow_pipe_take_the_pipes_time() -> None:
    free, _ = transfer_times(None)
    slow, h = transfer_times(2_000.0)
    # Unlimited, the 1 Mbit/s links move each image in under a second (the rest is the
    # devices' 30 s reboot); three images of 40,000 bytes through 2,000 bytes a second
    # take at least 60 s more.
    assert max(free) < 35
    assert max(slow) >= max(free) + 3 * 40_000 / 2_000 - 1
    assert h.dco.pipe is not None and h.dco.pipe.bytes > 3 * 40_000
    # Every block still reached its device and was checked: all three activated.
    assert h.host.counters.block_bytes_received >= 3 * 40_000


def test_a_read_waits_behind_the_blocks_in_the_pipe() -> None:
    def reads(throughput: float | None) -> dict[str, Any]:
        dco = {} if throughput is None else {"throughput_bytes_per_second": throughput}
        cfg = fleet_config([{"count": 8}], link=FAST, dco=dco)
        image = make_image(40_000)

        async def body(h: Harness) -> dict[str, Any]:
            stored = await h.dco.update_firmware(image)
            traffic = carry(h, cfg, background(per_day=20_000))
            ids = [first + i for first, count in cfg.device_spans() for i in range(count)]
            await asyncio.gather(*(h.dco.activate_firmware(d, stored.firmware_hash) for d in ids))
            traffic.stop()
            return traffic.summary()

        return run(cfg, body)

    free = reads(None)
    piped = reads(2_000.0)
    assert free["requests"] > 0 and piped["requests"] > 0
    # Behind runs of 8 blocks of 256 (about 2 KiB, a second of this pipe) from 8 transfers.
    assert piped["p95_seconds"] > free["p95_seconds"] + 2
    assert piped["p50_seconds"] > free["p50_seconds"]


def test_a_sample_of_the_traffic_keeps_its_share_and_stands_for_the_whole_in_the_pipe() -> None:
    cfg = fleet_config([{"count": 6}], link=FAST, dco={"throughput_bytes_per_second": 1e6})

    def hour(share: float) -> tuple[dict[str, Any], float]:
        async def body(h: Harness) -> tuple[dict[str, Any], float]:
            traffic = carry(h, cfg, background(per_day=40_000, sample_share=share))
            await h.clock.sleep(3_600)
            traffic.stop()
            assert h.dco.pipe is not None
            return traffic.summary(), h.dco.pipe.bytes

        return run(cfg, body)

    full, full_bytes = hour(1.0)
    tenth, tenth_bytes = hour(0.1)
    # 6 devices × 40,000 a day for an hour: 10,000 requests; a tenth of them sampled.
    assert 9_500 <= full["requests"] <= 10_500
    assert 900 <= tenth["requests"] <= 1_100
    assert tenth["sample_share"] == 0.1 and full["sample_share"] == 1.0
    assert tenth["max_open_requests"] == 1_000  # 10,000 scaled by the share
    # Each sampled read books ten reads' bytes: the pipe carries about the whole traffic's.
    assert 0.9 < tenth_bytes / full_bytes < 1.1
    assert full["met"] > 0 and tenth["met"] > 0
