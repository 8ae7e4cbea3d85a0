from __future__ import annotations

import asyncio

from smets1.clock import DAY_SECONDS, ScaledClock, VirtualClock, wall_seconds


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
