"""Backpressure at the DCO (issue 11, item 1): over MQTT its outbound queue is bounded in
bytes; a session waits for room before each frame, and a new 11.3 is turned away (503)
while the DCO has no room for it."""

from __future__ import annotations

import asyncio

import pytest

from dco_mock.service import ByteBudget, Dco
from emulator.fleet import FleetHost, build_devices
from orchestrator.mosquitto import Mosquitto
from smets1.broker_url import parse_broker_url
from smets1.bus import InProcessBus
from smets1.clock import ScaledClock, VirtualClock
from smets1.mqtt import MqttBus
from tests.dco_mock.harness import FIRST, Harness, fleet_config, run
from tests.factories import make_image

IMAGE = make_image(8_000)
#: Enough for a test's transfer many times over; a stuck one fails instead of hanging.
TIMEOUT_SECONDS = 60.0


@pytest.mark.mqtt
async def test_a_dco_with_a_tiny_outbound_bound_still_completes_within_it(
    broker: Mosquitto,
) -> None:
    # Runs of 8 blocks of 256 bytes: about 2.1 kB a run; the bound holds one run and a
    # few small frames, so every session waits for room time and again.
    cfg = fleet_config([{"count": 3}], link={"bandwidth_bps": 1_000_000, "latency_seconds": 0.1})
    bound = 3_000
    url = parse_broker_url(broker.url)
    clock = ScaledClock(cfg.epoch_seconds, speed=50.0)
    dco_bus = MqttBus(url, "t-dco", clock=clock, max_queued_bytes=bound)
    fleet_bus = MqttBus(url, "t-fleet", clock=clock)
    host = FleetHost(clock, fleet_bus, cfg.name, build_devices(cfg))
    dco = Dco(clock, dco_bus, cfg.name, 1, cfg.dco, block_size=cfg.block_size_bytes)
    host.start()
    dco.start()
    await fleet_bus.start()
    await dco_bus.start()
    try:
        stored = await dco.update_firmware(IMAGE)
        async with asyncio.timeout(TIMEOUT_SECONDS):
            outcomes = await asyncio.gather(
                *(dco.activate_firmware(FIRST + i, stored.firmware_hash) for i in range(3))
            )
    finally:
        await dco.close()
        await dco_bus.close()
        await fleet_bus.close()
    assert [o.ok for o in outcomes] == [True, True, True]
    assert all(o.blocks_sent >= stored.size_bytes // cfg.block_size_bytes for o in outcomes)
    c = dco_bus.counters
    assert c.room_waits > 0 and dco.counters.room_waits > 0  # it did wait for room
    assert 0 < c.peak_queued_bytes <= bound
    assert c.queued_bytes == 0


class FullBus(InProcessBus):
    """An in-process bus whose outbound queue the test declares full or not."""

    def __init__(self) -> None:
        super().__init__()
        self.full = False

    def has_room(self, nbytes: int = 0) -> bool:
        return not self.full


def test_no_room_while_the_slots_are_taken_or_the_outbound_queue_is_full() -> None:
    bus = FullBus()
    cfg = fleet_config(
        [{"count": 2}], dco={"max_concurrent_transfers": 1, "reply_timeout_seconds": 600}
    )

    async def body(h: Harness) -> tuple[str | None, ...]:
        stored = await h.dco.update_firmware(IMAGE)
        idle = h.dco.no_room_for()
        bus.full = True
        full = h.dco.no_room_for()
        bus.full = False
        first = asyncio.create_task(h.dco.activate_firmware(FIRST, stored.firmware_hash))
        await h.clock.sleep(1)  # the first 11.3 holds the only slot
        taken = h.dco.no_room_for()
        await first
        return idle, full, taken, h.dco.no_room_for()

    idle, full, taken, after = run(cfg, body, bus=bus)
    assert idle is None and after is None
    assert full is not None and "outbound" in full
    assert taken is not None and "slot" in taken


def test_rounds_wait_for_the_in_flight_byte_budget_and_all_complete() -> None:
    """With a budget of one round's bytes, three devices' rounds go one at a time (each
    given back with its device's answer), and every transfer still completes."""
    cfg = fleet_config([{"count": 3}])
    clock = VirtualClock(cfg.epoch_seconds)
    limit = 8_192  # the 8,000-byte image in 256-byte blocks: 32 blocks, one round

    async def main() -> tuple[list[bool], int, int, int]:
        bus = InProcessBus()
        host = FleetHost(clock, bus, cfg.name, build_devices(cfg))
        dco = Dco(clock, bus, cfg.name, 1, cfg.dco, block_size=cfg.block_size_bytes,
                  max_in_flight_bytes=limit)  # fmt: skip
        host.start()
        dco.start()
        stored = await dco.update_firmware(IMAGE)
        outcomes = await asyncio.gather(
            *(dco.activate_firmware(FIRST + i, stored.firmware_hash) for i in range(3))
        )
        budget = dco.in_flight
        assert budget is not None
        await dco.close()
        return [o.ok for o in outcomes], budget.peak, budget.waits, budget.used

    ok, peak, waits, used = clock.run(main())
    assert ok == [True, True, True]
    assert peak == limit and used == 0
    assert waits >= 2  # the second and third device waited for the first's answer


async def test_byte_budget_serves_waiters_in_turn_and_lets_a_large_round_go_alone() -> None:
    budget = ByteBudget(100)
    await budget.take(60)
    second = asyncio.create_task(budget.take(60))  # waits: 120 > 100
    third = asyncio.create_task(budget.take(10))  # fits, but waits its turn
    await asyncio.sleep(0)
    assert not second.done() and not third.done() and not budget.free()
    budget.give(60)
    await asyncio.gather(second, third)
    assert budget.used == 70
    budget.give(70)
    await budget.take(500)  # larger than the whole budget: goes when nothing is out
    assert budget.peak == 500
    budget.give(500)
    assert budget.used == 0 and budget.free()
