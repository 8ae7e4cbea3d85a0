"""The one clock: everything that waits or stamps a time asks a `Clock`.

Three kinds, one interface:

* `VirtualClock`: one process, in-process bus. It runs its coroutines on an event
  loop whose time jumps to the next timer whenever nothing is ready, so a simulated
  day runs as fast as the CPU allows and a seeded run repeats exactly.
* `ScaledClock`: several processes; simulated = epoch + (wall - wall0) * speed, with the
  same epoch and speed everywhere. It measures how far the loop lags behind it.
* `RealClock`: a scaled clock at speed 1 whose epoch is now.

Simulated time is Unix seconds (float, UTC). Timers go through the asyncio loop, so an
idle device costs a `TimerHandle`, not a task.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

T = TypeVar("T")

#: The default simulated start: midnight UTC on 1 March 2025.
DEFAULT_EPOCH_SECONDS = 1_740_787_200.0
DAY_SECONDS = 86_400.0


def wall_seconds() -> float:
    """Wall-clock seconds for measuring the cost of a run; never for simulated stamps."""
    return time.perf_counter()


def to_datetime(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=UTC)


class Clock(ABC):
    """Simulated time and the timers that run on it."""

    epoch: float

    @abstractmethod
    def now(self) -> float:
        """Simulated Unix seconds."""

    @abstractmethod
    def _to_loop(self, t: float) -> float:
        """Loop time at which simulated time `t` falls."""

    @abstractmethod
    def _to_loop_delay(self, seconds: float) -> float:
        """Loop seconds that last `seconds` of simulated time."""

    @abstractmethod
    def new_event_loop(self) -> asyncio.AbstractEventLoop: ...

    def datetime(self) -> datetime:
        return to_datetime(self.now())

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, self._to_loop_delay(seconds)))

    async def sleep_until(self, t: float) -> None:
        await self.sleep(t - self.now())

    def call_later(
        self, seconds: float, callback: Callable[..., Any], *args: Any
    ) -> asyncio.TimerHandle:
        loop = asyncio.get_running_loop()
        return loop.call_later(max(0.0, self._to_loop_delay(seconds)), callback, *args)

    def call_at(self, t: float, callback: Callable[..., Any], *args: Any) -> asyncio.TimerHandle:
        loop = asyncio.get_running_loop()
        return loop.call_at(self._to_loop(t), callback, *args)

    async def timeout(self, seconds: float, aw: Coroutine[Any, Any, T]) -> T:
        """Await `aw`, raising TimeoutError after `seconds` of simulated time."""
        return await asyncio.wait_for(aw, max(0.0, self._to_loop_delay(seconds)))

    @property
    def lag_seconds(self) -> float:
        """How far, in simulated seconds, the process runs behind this clock."""
        return 0.0

    def run(self, main: Coroutine[Any, Any, T]) -> T:
        """Run `main` to completion on a loop of this clock's kind."""
        with asyncio.Runner(loop_factory=self.new_event_loop) as runner:
            return runner.run(main)


class _VirtualSelector(selectors.BaseSelector):
    """A selector that never waits for a timer: it moves virtual time instead.

    Real file descriptors (the loop's self-pipe, any socket) are still polled without
    blocking, so thread-safe callbacks keep working.
    """

    def __init__(self, loop: VirtualEventLoop) -> None:
        self._real = selectors.DefaultSelector()
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            # Nothing scheduled: only another thread or real I/O can wake us.
            return self._real.select(None)
        self._loop.advance(timeout)
        return []

    def close(self) -> None:
        self._real.close()

    def get_map(self) -> Any:
        return self._real.get_map()


class VirtualEventLoop(asyncio.SelectorEventLoop):
    """An event loop whose `time()` is virtual and jumps over idle stretches."""

    def __init__(self) -> None:
        self._virtual_now = 0.0
        super().__init__(selector=_VirtualSelector(self))

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        if seconds > 0:
            self._virtual_now += seconds

    @property
    def pending_timers(self) -> int:
        """Timers waiting to fire (cancelled ones not yet purged included): what an idle
        fleet must keep at zero, since each timer costs memory and a heap entry."""
        return len(self._scheduled)  # type: ignore[attr-defined]


class VirtualClock(Clock):
    """Simulated time that runs as fast as the CPU allows; deterministic."""

    def __init__(self, epoch: float = DEFAULT_EPOCH_SECONDS) -> None:
        self.epoch = epoch

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return VirtualEventLoop()

    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if not isinstance(loop, VirtualEventLoop):
            raise RuntimeError("VirtualClock needs its own loop: run through clock.run()")
        return loop

    def now(self) -> float:
        return self.epoch + self._loop().time()

    def _to_loop(self, t: float) -> float:
        return t - self.epoch

    def _to_loop_delay(self, seconds: float) -> float:
        return seconds


class ScaledClock(Clock):
    """simulated = epoch + (wall - wall0) * speed; the same epoch and speed in every process.

    `wall0` is the wall-clock Unix time at which simulated time equals `epoch`; every
    process given the same three numbers agrees on the simulated time.
    """

    def __init__(self, epoch: float, speed: float, wall0: float | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.epoch = epoch
        self.speed = speed
        self.wall0 = time.time() if wall0 is None else wall0
        self._lag = 0.0
        # Loop time and Unix wall time differ by a constant; measured once.
        self._loop_offset: float | None = None

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.new_event_loop()

    def _wall_to_loop(self) -> float:
        if self._loop_offset is None:
            self._loop_offset = asyncio.get_running_loop().time() - time.time()
        return self._loop_offset

    def now(self) -> float:
        return self.epoch + (time.time() - self.wall0) * self.speed

    def _to_loop(self, t: float) -> float:
        return self.wall0 + (t - self.epoch) / self.speed + self._wall_to_loop()

    def _to_loop_delay(self, seconds: float) -> float:
        return seconds / self.speed

    @property
    def lag_seconds(self) -> float:
        return self._lag

    async def watch_lag(self, interval_wall_seconds: float = 0.5) -> None:
        """Measure, forever, how late the loop wakes; lag is kept in simulated seconds."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + interval_wall_seconds
            await asyncio.sleep(interval_wall_seconds)
            self._lag = max(0.0, loop.time() - due) * self.speed


class RealClock(ScaledClock):
    """Wall-clock time, for driving real systems."""

    def __init__(self) -> None:
        now = time.time()
        super().__init__(epoch=now, speed=1.0, wall0=now)
