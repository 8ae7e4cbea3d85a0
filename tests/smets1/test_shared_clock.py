"""The clock a distributed run shares: the announcement on the wire, timers that follow a
new speed, a leader and its followers through a real broker."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from orchestrator.mosquitto import Mosquitto
from smets1.broker_url import parse_broker_url
from smets1.clock import DEFAULT_EPOCH_SECONDS, ScaledClock
from smets1.errors import ClockAnnouncementError, ClockError
from smets1.mqtt import MqttBus
from smets1.shared_clock import (
    STATE_FILE,
    ClockAnnouncement,
    ClockFollower,
    ClockLeader,
    SpeedRequest,
    decode_announcement,
    speed_topic,
)

FLEET = "clocktest"
#: Two clocks that follow one announcement read the same wall clock: they agree to well
#: within this many simulated seconds at the speeds used here (a wall millisecond or so).
TOLERANCE_SIM_SECONDS = 2.0


# -- the announcement on the wire ----------------------------------------------------------


def test_an_announcement_round_trips_and_refuses_trailing_bytes() -> None:
    a = ClockAnnouncement(0x0123_4567_89AB_CDEF, 3, 1.7e9, DEFAULT_EPOCH_SECONDS, 1440.0)
    data = a.serialize()
    assert decode_announcement(data) == a
    back, rest = ClockAnnouncement.deserialize(data + b"xy")
    assert back == a and rest == b"xy"
    with pytest.raises(ClockAnnouncementError, match="expected 37 bytes, got 39"):
        decode_announcement(data + b"xy")


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"\xc2" + bytes(36), "MAGIC at offset 0"),
        (ClockAnnouncement(1, 1, 1.0, 1.0, 1440.0).serialize()[:20], "expected at least"),
        (ClockAnnouncement(1, 1, 1.0, 1.0, 0.0).serialize(), "speed at offset 29"),
        (ClockAnnouncement(1, 1, float("nan"), 1.0, 1.0).serialize(), "origin_wall at offset 13"),
    ],
)
def test_a_bad_announcement_names_the_field_and_offset(data: bytes, says: str) -> None:
    with pytest.raises(ClockAnnouncementError, match=says):
        decode_announcement(data)


def test_a_speed_request_round_trips() -> None:
    data = SpeedRequest(2880.0).serialize()
    assert SpeedRequest.deserialize(data) == (SpeedRequest(2880.0), b"")
    with pytest.raises(ClockAnnouncementError, match="speed at offset 1"):
        SpeedRequest.deserialize(SpeedRequest(float("inf")).serialize())


# -- timers follow a new speed ---------------------------------------------------------------


def test_a_new_speed_replans_call_at_sleep_and_timeout() -> None:
    """Timers wait in simulated time: after a change of speed each fires when the clock
    shows its deadline, not when the old speed would have reached it."""
    clock = ScaledClock(DEFAULT_EPOCH_SECONDS, speed=100.0)

    async def main() -> dict[str, float]:
        fired: dict[str, float] = {}
        start = clock.now()
        deadline = start + 100.0  # 1 s of wall at speed 100; 0.1 s at 1000
        clock.call_at(deadline, lambda: fired.setdefault("call_at", clock.now()))

        async def sleeper() -> None:
            await clock.sleep(100.0)
            fired["sleep"] = clock.now()

        async def waiter() -> None:
            with pytest.raises(TimeoutError):
                await clock.timeout(100.0, asyncio.Event().wait())
            fired["timeout"] = clock.now()

        tasks = [asyncio.create_task(sleeper()), asyncio.create_task(waiter())]
        await asyncio.sleep(0.02)
        # Go on ten times faster from the moment shown now: no jump.
        before = clock.now()
        clock.retime(time.time(), clock.now(), 1000.0, 2)
        assert 0 <= clock.now() - before < TOLERANCE_SIM_SECONDS
        await asyncio.gather(*tasks)
        await asyncio.sleep(0.01)
        return {k: v - deadline for k, v in fired.items()}

    late = clock.run(main())
    # Without the re-plan every timer fires at the old speed's wall time: ~800 s late.
    assert set(late) == {"call_at", "sleep", "timeout"}
    for what, seconds in late.items():
        assert -0.01 <= seconds < 60.0, (what, seconds)


# -- a leader and its followers through a broker ---------------------------------------------


@asynccontextmanager
async def _bus(broker: Mosquitto, name: str) -> AsyncIterator[MqttBus]:
    bus = MqttBus(parse_broker_url(broker.url), f"clocktest-{name}-{time.monotonic_ns()}")
    try:
        yield bus
    finally:
        await bus.close()


def _clock(speed: float = 500.0) -> ScaledClock:
    """A process's own clock before it joins: started now, at the epoch."""
    return ScaledClock(DEFAULT_EPOCH_SECONDS, speed)


@pytest.mark.mqtt
async def test_a_follower_started_late_joins_the_leaders_clock(
    broker: Mosquitto, tmp_path: Path
) -> None:
    leader_clock = _clock()
    async with _bus(broker, "leader") as lbus:
        leader = ClockLeader(leader_clock, lbus, FLEET, tmp_path)
        await lbus.start()
        first = await leader.start()
        assert first.sequence == 1 and first.origin_sim == DEFAULT_EPOCH_SECONDS
        await asyncio.sleep(0.5)  # 250 simulated seconds go by before the follower starts
        follower_clock = _clock(speed=1.0)  # its own guess: wrong speed, wrong origin
        async with _bus(broker, "fleet") as fbus:
            follower = ClockFollower(follower_clock, fbus, FLEET, "fleet")
            await fbus.start()
            joined = await follower.wait(10.0)
            assert joined == first
            assert follower_clock.speed == 500.0 and follower_clock.sequence == 1
            assert abs(follower_clock.now() - leader_clock.now()) < TOLERANCE_SIM_SECONDS
            assert leader_clock.now() - DEFAULT_EPOCH_SECONDS > 200.0


@pytest.mark.mqtt
async def test_a_speed_change_is_followed_by_every_follower_without_a_jump(
    broker: Mosquitto, tmp_path: Path
) -> None:
    leader_clock = _clock(speed=100.0)
    async with _bus(broker, "leader") as lbus, _bus(broker, "dco") as b1, _bus(broker, "f") as b2:
        leader = ClockLeader(leader_clock, lbus, FLEET, tmp_path)
        clocks = [_clock(1.0), _clock(1.0)]
        followers = [
            ClockFollower(clocks[0], b1, FLEET, "dco"),
            ClockFollower(clocks[1], b2, FLEET, "fleet"),
        ]
        await lbus.start()
        await leader.start()
        for bus, f in zip((b1, b2), followers, strict=True):
            await bus.start()
            await f.wait(10.0)
        before = [c.now() for c in clocks]
        # Asked over the broker, as `smets1 clock --speed` does.
        for f in followers:
            f.joined.clear()
        b1.publish(speed_topic(FLEET), SpeedRequest(5000.0).serialize())
        for f in followers:
            await f.wait(10.0)
        after = [c.now() for c in clocks]
        for c in [leader_clock, *clocks]:
            assert c.speed == 5000.0 and c.sequence == 2
            assert abs(c.now() - leader_clock.now()) < 5 * TOLERANCE_SIM_SECONDS
        assert leader.speed_requests == 1
        assert leader.current is not None
        # The change came at the simulated moment the clock showed: no jump either way.
        # (A change that restarted time would move it back by the minutes gone by; one
        # that kept the old origin would move it forward by 4900 s a wall second gone.)
        elapsed_wall = 1.0  # a generous bound on the wall time the exchange took
        for b, a in zip(before, after, strict=True):
            assert b <= a <= b + 100.0 * elapsed_wall + 5000.0 * elapsed_wall
            assert abs(leader.current.origin_sim - b) < 100.0 * elapsed_wall


@pytest.mark.mqtt
async def test_a_restarted_leader_continues_the_clock_and_its_speed(
    broker: Mosquitto, tmp_path: Path
) -> None:
    state = tmp_path / "scheduler-state"
    first_clock = _clock(speed=200.0)
    async with _bus(broker, "leader-1") as bus:
        first = ClockLeader(first_clock, bus, FLEET, state)
        await bus.start()
        await first.start()
        await asyncio.sleep(0.3)
        changed = first.set_speed(400.0)
        await bus.wait_drained()
    saved = json.loads((state / STATE_FILE).read_text())
    assert saved["sequence"] == 2 and saved["speed"] == 400.0
    await asyncio.sleep(0.3)
    # Started again, as a killed scheduler is: its own clock would say epoch and 200.
    again_clock = _clock(speed=200.0)
    async with _bus(broker, "leader-2") as bus:
        again = ClockLeader(again_clock, bus, FLEET, state)
        await bus.start()
        kept = await again.start()
        assert kept == changed
        assert again_clock.speed == 400.0 and again_clock.sequence == 2
        assert abs(again_clock.now() - first_clock.now()) < TOLERANCE_SIM_SECONDS
        assert again_clock.now() - DEFAULT_EPOCH_SECONDS > 100.0  # time was not restarted


@pytest.mark.mqtt
async def test_a_new_run_does_not_inherit_an_earlier_runs_clock(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with _bus(broker, "old") as bus:
        old = ClockLeader(_clock(), bus, FLEET, tmp_path / "old-run")
        await bus.start()
        earlier = await old.start()
        await bus.wait_drained()
    async with _bus(broker, "new") as bus:
        new_clock = _clock()
        new = ClockLeader(new_clock, bus, FLEET, tmp_path / "new-run")
        await bus.start()
        fresh = await new.start()
        assert new.retained == earlier  # it saw the old clock on the broker
        assert fresh.run_id != earlier.run_id and fresh.sequence == 1
        assert abs(new_clock.now() - DEFAULT_EPOCH_SECONDS) < 50.0


@pytest.mark.mqtt
async def test_a_named_run_is_started_once_and_then_only_resumed(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """A run with a name (--run) has topics of its own: a clock there that the leader's
    state folder does not know means the name was used before (a scheduler whose volume
    was lost or deleted). It is not replaced, which would mix two runs' devices and
    frames on one clock: the leader says so, and only its own state folder resumes it."""
    async with _bus(broker, "first") as bus:
        first = ClockLeader(_clock(), bus, FLEET, tmp_path / "first", named_run=True)
        await bus.start()
        started = await first.start()
        await bus.wait_drained()
    async with _bus(broker, "fresh") as bus:
        fresh = ClockLeader(_clock(), bus, FLEET, tmp_path / "fresh", named_run=True)
        await bus.start()
        with pytest.raises(ClockError, match="a name of its own"):
            await fresh.start()
        assert fresh.current is None  # nothing was announced
    async with _bus(broker, "resumed") as bus:
        resumed = ClockLeader(_clock(), bus, FLEET, tmp_path / "first", named_run=True)
        await bus.start()
        assert await resumed.start() == started


@pytest.mark.mqtt
async def test_a_follower_without_a_leader_gives_up_with_a_clear_error(
    broker: Mosquitto,
) -> None:
    async with _bus(broker, "lonely") as bus:
        follower = ClockFollower(_clock(), bus, "nobody-leads", "fleet")
        await bus.start()
        with pytest.raises(ClockError, match=r"no clock announcement on smets1/nobody-leads/"):
            await follower.wait(0.3)


@pytest.mark.mqtt
async def test_a_bad_speed_request_is_refused_and_the_clock_goes_on(
    broker: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = _clock()
    async with _bus(broker, "leader") as bus:
        leader = ClockLeader(clock, bus, FLEET, tmp_path)
        await bus.start()
        await leader.start()
        bus.publish(speed_topic(FLEET), b"\xc2" + b"\x00" * 8)  # speed 0.0
        bus.publish(speed_topic(FLEET), b"junk")
        await bus.wait_drained()
        await asyncio.sleep(0.2)
        assert clock.sequence == 1 and clock.speed == 500.0
        assert leader.speed_requests == 0
        assert "a speed request refused: speed at offset 1" in caplog.text
        with pytest.raises(ClockError, match="speed: expected a speed above 0"):
            leader.set_speed(-1.0)


def announce_clock(broker_url: str, fleet: str, state_dir: Path, speed: float = 1440.0) -> None:
    """Lead a clock for `fleet` for a moment and leave it retained on the broker, for a
    test that runs a follower (a DCO, a fleet shard) without a scheduler."""

    async def lead() -> None:
        bus = MqttBus(parse_broker_url(broker_url), f"clocktest-announce-{time.monotonic_ns()}")
        leader = ClockLeader(ScaledClock(DEFAULT_EPOCH_SECONDS, speed), bus, fleet, state_dir)
        try:
            await bus.start()
            await leader.start()
            await bus.wait_drained()
        finally:
            await bus.close()

    asyncio.run(lead())
