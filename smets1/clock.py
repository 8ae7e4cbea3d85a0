"""The one clock: everything that waits or stamps a time asks a `Clock`.

Three kinds, one interface:

* `VirtualClock`: one process, in-process bus. It runs its coroutines on an event
  loop whose time jumps to the next timer whenever nothing is ready, so a simulated
  day runs as fast as the CPU allows and a seeded run repeats exactly.
* `ScaledClock`: several processes; simulated = origin_sim + (wall - origin_wall) * speed,
  the same three numbers everywhere (the scheduler announces them: smets1.shared_clock).
  A new speed re-plans its timers; it measures how far the loop lags behind it.
* `RealClock`: a scaled clock at speed 1 whose epoch is now.

Simulated time is Unix seconds (float, UTC). Timers go through the asyncio loop, so an
idle device costs a `TimerHandle`, not a task.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import heapq
import math
import selectors
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

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
        """Await `aw`, raising TimeoutError after `seconds` of simulated time. `aw` runs
        in the caller's task (a timer, no task of its own, as `asyncio.wait_for` makes)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout_at(loop.time() + max(0.0, self._to_loop_delay(seconds))):
            return await aw

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


#: A virtual loop looks at its real file descriptors (the self-pipe, any socket) once in
#: this many passes while it has work of its own; always when it has none. Between two
#: looks it never sleeps, so a socket waits at most this many callbacks, not any time.
REAL_POLL_EVERY = 64
_MAX_SELECT_SECONDS = 24 * 3600.0  # asyncio.base_events.MAXIMUM_SELECT_TIMEOUT


class VirtualEventLoop(asyncio.SelectorEventLoop):
    """An event loop whose `time()` is virtual and jumps over idle stretches.

    Its pass (`_run_once`) is asyncio's own with two changes that cost nothing in
    behaviour: the timer heap holds `(when, handle)` pairs, so that the heap compares
    floats in C and calls `TimerHandle.__lt__` only on a tie (the same order as asyncio's
    heap of handles, tie for tie); and real file descriptors are polled once in
    `REAL_POLL_EVERY` passes instead of at every pass (a system call each), which is what
    most of a simulated day's passes are: one timer each.
    """

    def __init__(self) -> None:
        self._virtual_now = 0.0
        self._passes_unpolled = 0
        super().__init__(selector=_VirtualSelector(self))

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        if seconds > 0:
            self._virtual_now += seconds

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., Any],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        if when is None:
            raise TypeError("when cannot be None")
        base: Any = self  # asyncio's private parts, as its own call_at uses them
        base._check_closed()
        if base._debug:
            base._check_thread()
            base._check_callback(callback, "call_at")
        timer: Any = asyncio.TimerHandle(when, callback, args, self, context)
        heapq.heappush(base._scheduled, (when, timer))
        timer._scheduled = True
        return cast(asyncio.TimerHandle, timer)

    def _run_once(self) -> None:
        base: Any = self  # asyncio's private parts, as its own _run_once uses them
        scheduled: list[tuple[float, Any]] = base._scheduled
        ready: collections.deque[Any] = base._ready
        count = len(scheduled)
        if count > 100 and base._timer_cancelled_count / count > 0.5:
            kept = []
            for entry in scheduled:
                if entry[1]._cancelled:
                    entry[1]._scheduled = False
                else:
                    kept.append(entry)
            heapq.heapify(kept)
            base._scheduled = scheduled = kept
            base._timer_cancelled_count = 0
        else:
            while scheduled and scheduled[0][1]._cancelled:
                base._timer_cancelled_count -= 1
                heapq.heappop(scheduled)[1]._scheduled = False

        timeout: float | None = None
        if ready or base._stopping:
            timeout = 0.0
        elif scheduled:
            # asyncio's cap on one wait, kept so that time moves by the same steps.
            timeout = min(max(0.0, scheduled[0][0] - self._virtual_now), _MAX_SELECT_SECONDS)
        self._passes_unpolled += 1
        if timeout is None or self._passes_unpolled >= REAL_POLL_EVERY:
            self._passes_unpolled = 0
            # The virtual selector moves time when no real descriptor is ready.
            base._process_events(base._selector.select(timeout))
        elif timeout > 0:
            self._virtual_now += timeout

        end_time = self._virtual_now + base._clock_resolution
        while scheduled and scheduled[0][0] < end_time:
            handle = heapq.heappop(scheduled)[1]
            handle._scheduled = False
            ready.append(handle)

        for _ in range(len(ready)):
            handle = ready.popleft()
            if not handle._cancelled:
                handle._run()

    @property
    def pending_timers(self) -> int:
        """Timers waiting to fire (cancelled ones not yet purged included): what an idle
        fleet must keep at zero, since each timer costs memory and a heap entry."""
        return len(self._scheduled)  # type: ignore[attr-defined]


class VirtualClock(Clock):
    """Simulated time that runs as fast as the CPU allows; deterministic."""

    def __init__(self, epoch: float = DEFAULT_EPOCH_SECONDS) -> None:
        self.epoch = epoch
        #: The loop this clock made last: `now()` from another thread (a metrics
        #: scrape) reads its time.
        self._made: VirtualEventLoop | None = None

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        self._made = VirtualEventLoop()
        return self._made

    def _loop(self) -> asyncio.AbstractEventLoop:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            if self._made is None:
                raise
            return self._made  # read from a thread without a loop of its own
        if not isinstance(loop, VirtualEventLoop):
            raise RuntimeError("VirtualClock needs its own loop: run through clock.run()")
        return loop

    def now(self) -> float:
        loop = asyncio._get_running_loop()
        if loop is not None and loop is self._made:  # the hot path: this clock's own loop
            return self.epoch + self._made._virtual_now
        return self.epoch + self._loop().time()

    def call_at(self, t: float, callback: Callable[..., Any], *args: Any) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_at(t - self.epoch, callback, *args)

    def _to_loop(self, t: float) -> float:
        return t - self.epoch

    def _to_loop_delay(self, seconds: float) -> float:
        return seconds


def _run_simulated(t: float, clock: ScaledClock, callback: Callable[..., Any], *args: Any) -> None:
    """The callback of every loop timer a `ScaledClock` plans: the simulated deadline `t`
    rides along, so that a change of speed can find the timer and plan it again. The
    loop may fire a timer a little before its simulated time (loop time is monotonic,
    simulated time follows the wall clock, and the two drift by microseconds, which a
    fast clock makes milliseconds): the clock never reads earlier than a deadline that
    has fired, so a callback always finds its time come (a device whose reboot timer
    found it "not yet" would stay activating for ever)."""
    if t > clock._floor:
        clock._floor = t
    callback(*args)


class ScaledClock(Clock):
    """simulated = origin_sim + (wall - origin_wall) * speed, in every process alike.

    `origin_wall` is a wall-clock Unix time and `origin_sim` the simulated time at that
    moment; every process given the same three numbers agrees on the simulated time. A
    distributed run shares them through the scheduler's announcement
    (smets1.shared_clock), and `retime` moves to a new announcement: a new speed that goes
    on from the same simulated moment, or the leader's clock for a follower that joins.

    Timers are planned in simulated time: every `call_at`, `call_later`, `sleep` and
    `timeout` is a loop timer whose callback is `_run_simulated`, holding its simulated
    deadline, so `retime` finds each one on the loop and moves it to the loop time its
    deadline now falls at. Nothing is kept per timer besides the loop's own handle.
    `epoch` stays the config's epoch (campaigns count from it); it is not the origin.
    """

    def __init__(
        self,
        epoch: float,
        speed: float,
        wall0: float | None = None,
        *,
        origin_sim: float | None = None,
    ) -> None:
        if not speed > 0 or not math.isfinite(speed):
            raise ValueError(f"speed must be a finite number above 0, got {speed!r}")
        self.epoch = epoch
        self.speed = speed
        self.origin_wall = time.time() if wall0 is None else wall0
        self.origin_sim = epoch if origin_sim is None else origin_sim
        #: The leader's announcement this clock follows (smets1.shared_clock); 0: none yet.
        self.sequence = 0
        #: The latest deadline of a timer that has fired: `now` never reads earlier.
        self._floor = -math.inf
        self._lag = 0.0
        # Loop time and Unix wall time differ by a constant; measured once.
        self._loop_offset: float | None = None

    @property
    def wall0(self) -> float:
        """The wall-clock Unix time at which simulated time is (or was) `epoch`."""
        return self.origin_wall + (self.epoch - self.origin_sim) / self.speed

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.new_event_loop()

    def _wall_to_loop(self) -> float:
        if self._loop_offset is None:
            self._loop_offset = asyncio.get_running_loop().time() - time.time()
        return self._loop_offset

    def now(self) -> float:
        t = self.origin_sim + (time.time() - self.origin_wall) * self.speed
        return t if t >= self._floor else self._floor

    def _to_loop(self, t: float) -> float:
        return self.origin_wall + (t - self.origin_sim) / self.speed + self._wall_to_loop()

    def _to_loop_delay(self, seconds: float) -> float:
        return seconds / self.speed

    def call_at(self, t: float, callback: Callable[..., Any], *args: Any) -> asyncio.TimerHandle:
        loop = asyncio.get_running_loop()
        return loop.call_at(self._to_loop(t), _run_simulated, t, self, callback, *args)

    def call_later(
        self, seconds: float, callback: Callable[..., Any], *args: Any
    ) -> asyncio.TimerHandle:
        return self.call_at(self.now() + max(0.0, seconds), callback, *args)

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        handle = self.call_later(seconds, _resolve, future)
        try:
            await future
        finally:
            handle.cancel()

    async def timeout(self, seconds: float, aw: Coroutine[Any, Any, T]) -> T:
        async with asyncio.timeout(None) as scope:
            loop = asyncio.get_running_loop()
            handle = self.call_later(seconds, lambda: scope.reschedule(loop.time()))
            try:
                return await aw
            finally:
                handle.cancel()

    def retime(
        self, origin_wall: float, origin_sim: float, speed: float, sequence: int = 0
    ) -> None:
        """Follow a new (origin, simulated time at origin, speed), and move every timer
        of this clock on the running loop (if any) to where its simulated deadline falls."""
        if not speed > 0 or not math.isfinite(speed):
            raise ValueError(f"speed must be a finite number above 0, got {speed!r}")
        self.origin_wall, self.origin_sim, self.speed = origin_wall, origin_sim, speed
        self.sequence = sequence
        self._floor = -math.inf  # a new origin: the old clock's deadlines say nothing
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        scheduled = getattr(loop, "_scheduled", None)
        if not isinstance(scheduled, list):
            return  # not a loop of asyncio's own: nothing of ours to move
        moved = False
        for handle in scheduled:
            if handle._callback is _run_simulated and not handle._cancelled:
                handle._when = self._to_loop(handle._args[0])
                moved = True
        if moved:
            heapq.heapify(scheduled)

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


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class RealClock(ScaledClock):
    """Wall-clock time, for driving real systems."""

    def __init__(self) -> None:
        now = time.time()
        super().__init__(epoch=now, speed=1.0, wall0=now)
