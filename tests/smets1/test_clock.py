from __future__ import annotations

import asyncio
import random
import socket

import pytest

from smets1.clock import (
    DAY_SECONDS,
    REAL_POLL_EVERY,
    ScaledClock,
    VirtualClock,
    VirtualEventLoop,
    _VirtualSelector,
    wall_seconds,
)


def test_virtual_clock_jumps_over_a_day_at_once() -> None:
    clock = VirtualClock(epoch=1000.0)

    async def main() -> tuple[float, list[float]]:
        fired: list[float] = []
        clock.call_later(3600, lambda: fired.append(clock.now()))
        clock.call_at(1000.0 + 7200, lambda: fired.append(clock.now()))
        await clock.sleep(DAY_SECONDS)
        return clock.now(), fired

    wall0 = wall_seconds()
    now, fired = clock.run(main())
    assert now == 1000.0 + DAY_SECONDS
    assert fired == [1000.0 + 3600, 1000.0 + 7200]
    assert wall_seconds() - wall0 < 5  # a simulated day took no real day


def test_virtual_clock_is_deterministic() -> None:
    def trace() -> list[tuple[int, float]]:
        clock = VirtualClock(epoch=0.0)
        out: list[tuple[int, float]] = []

        async def worker(i: int) -> None:
            for k in range(5):
                await clock.sleep((i * 7 + k * 3) % 5)
                out.append((i, clock.now()))

        async def main() -> None:
            await asyncio.gather(*(worker(i) for i in range(20)))

        clock.run(main())
        return out

    assert trace() == trace()


def test_timeout_uses_simulated_seconds() -> None:
    clock = VirtualClock(epoch=0.0)

    async def main() -> float:
        try:
            await clock.timeout(600, asyncio.Event().wait())
        except TimeoutError:
            return clock.now()
        raise AssertionError("no timeout")

    assert clock.run(main()) == 600


def test_scaled_clock_runs_faster_than_wall() -> None:
    clock = ScaledClock(epoch=0.0, speed=1000.0)

    async def main() -> float:
        t0 = clock.now()
        await clock.sleep(50)  # 50 simulated seconds: 0.05 s of wall time
        return clock.now() - t0

    elapsed = clock.run(main())
    assert 50 <= elapsed < 5000


def test_a_scaled_timer_that_fires_early_finds_its_time_come() -> None:
    """Loop time (monotonic) and simulated time (wall clock) drift apart by microseconds;
    at speed 1000 a timer the loop fires 5 ms early would see the clock 5 simulated s
    short of its deadline, and a device whose reboot timer found it "not yet" stayed
    activating for ever (seen in a distributed demo day). The clock never reads earlier
    than a deadline that has fired, and later reads go on from there."""
    clock = ScaledClock(epoch=0.0, speed=1000.0)

    async def main() -> tuple[float, float, float]:
        clock._to_loop(0.0)  # measure the loop's offset, then make the loop run early
        assert clock._loop_offset is not None
        clock._loop_offset -= 0.005
        deadline = clock.now() + 20.0
        seen: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        clock.call_at(deadline, lambda: seen.set_result(clock.now()))
        at = await seen
        return deadline, at, clock.now()

    deadline, at, after = clock.run(main())
    assert at >= deadline
    assert after >= at


class _AsyncioOwnPass(asyncio.SelectorEventLoop):
    """The reference: asyncio's own pass and timer heap, on virtual time (what
    `VirtualEventLoop` was before it kept its own pass)."""

    def __init__(self) -> None:
        self._virtual_now = 0.0
        super().__init__(selector=_VirtualSelector(self))  # type: ignore[arg-type]

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        if seconds > 0:
            self._virtual_now += seconds


def _trace(loop: asyncio.AbstractEventLoop, seed: int) -> list[tuple[int, float]]:
    """Timers at random times with many ties, some cancelled, some scheduling more and
    some calling soon; the order and time each fires at."""
    rng = random.Random(seed)
    fired: list[tuple[int, float]] = []
    handles: list[asyncio.TimerHandle] = []
    label = iter(range(10**9))

    def fire(n: int, depth: int) -> None:
        fired.append((n, loop.time()))
        if depth < 3 and rng.random() < 0.5:
            later = loop.time() + rng.choice((0.0, 0.25, 1.0, 1.0, 2.5, 100_000.0))
            handles.append(loop.call_at(later, fire, next(label), depth + 1))
        if rng.random() < 0.2:
            loop.call_soon(fire, next(label), 9)
        if handles and rng.random() < 0.15:
            rng.choice(handles).cancel()

    async def main() -> None:
        for _ in range(400):
            when = rng.choice((1.0, 2.0, 2.0, 3.5)) if rng.random() < 0.6 else rng.random() * 5
            handles.append(loop.call_at(when, fire, next(label), 0))
        await asyncio.sleep(300_000.0)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return fired


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_virtual_loop_fires_timers_as_asyncio_own_pass_does(seed: int) -> None:
    ours = _trace(VirtualEventLoop(), seed)
    reference = _trace(_AsyncioOwnPass(), seed)
    assert len(ours) > 400
    assert ours == reference


def test_the_virtual_loop_still_serves_a_socket_while_it_has_timers() -> None:
    """Real descriptors are polled once in many passes, not never: a socket that becomes
    readable while timers keep the loop busy is read within a bounded number of ticks."""
    clock = VirtualClock(epoch=0.0)

    async def main() -> int:
        loop = asyncio.get_running_loop()
        reader, writer = socket.socketpair()
        heard = loop.create_future()
        ticks = 0

        def tick() -> None:
            nonlocal ticks
            ticks += 1
            if not heard.done() and ticks < 10_000:
                clock.call_later(1.0, tick)

        def readable() -> None:
            reader.recv(16)
            if not heard.done():
                heard.set_result(ticks)

        loop.add_reader(reader.fileno(), readable)
        try:
            tick()
            writer.send(b"x")
            return await heard
        finally:
            loop.remove_reader(reader.fileno())
            reader.close()
            writer.close()

    assert clock.run(main()) <= 2 * REAL_POLL_EVERY
