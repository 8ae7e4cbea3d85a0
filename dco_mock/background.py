"""Background traffic (issue 16): the ordinary service requests (meter reads) the DCO
carries for the whole fleet beside firmware, each met or missed against its target.

Arrivals are one seeded Poisson process over the whole fleet whose rate follows the
config's 24 hourly weights (hours of the day in the scheduler's time zone, UK local time):
in hour h the fleet makes devices × requests a device a day × w[h] / sum(w) requests.
Each arrival picks a device at random (so each device makes its rate on average) and a
kind in proportion to the kinds' rates. Nothing runs per device: one timer waits for the
next arrival, and an open request is one small record in a dict until its answer comes.

A request is a ReadRequest frame on the same bus as the firmware's frames; the fleet host
queues it on the device's link behind whatever the link is carrying (a device receiving
blocks answers late) and the device answers with a Reading. Its latency runs from the
moment it was made to the moment the answer reaches the DCO: a wait at the DCO for one of
`max_open_requests` counts in it. An answer that has not come `give_up_seconds` after the
request was made never will, as far as the count goes: the request is missed, unanswered.
"""

from __future__ import annotations

import bisect
import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import accumulate
from typing import Any
from zoneinfo import ZoneInfo

from dco_mock.background_stats import BackgroundStats
from dco_mock.pipe import Pipe
from smets1.bus import Bus, down_topic, shard_of
from smets1.clock import Clock
from smets1.codes import ReadKind
from smets1.config_background import KIND_NAMES, BackgroundConfig
from smets1.wire import READ_REQUEST_MIN_BYTES, READING_MIN_BYTES, Frame, Reading, ReadRequest

HOUR_SECONDS = 3_600.0


def traffic_rng(seed: int) -> random.Random:
    """The arrivals' own stream, fixed by the fleet's seed (the same on every machine)."""
    return random.Random(f"smets1-fleet background:{seed}")


@dataclass(frozen=True, slots=True)
class _Kind:
    kind: ReadKind
    target_seconds: float
    data_bytes: int
    padding: bytes


@dataclass(slots=True)
class _Open:
    """A request sent and not yet answered (or made, and waiting for the DCO)."""

    device_id: int
    kind: int  # index into the config's kinds
    hour: int  # hour of day it was made in
    made_at: float


class BackgroundTraffic:
    """Makes the requests, sends them, matches the answers, counts the outcomes."""

    def __init__(
        self,
        clock: Clock,
        bus: Bus,
        fleet: str,
        shards: int,
        config: BackgroundConfig,
        device_spans: Sequence[tuple[int, int]],
        seed: int,
        new_tid: Callable[[], int],
        timezone: str = "Europe/London",
        pipe: Pipe | None = None,
    ) -> None:
        """`device_spans`: (first id, count) of each group of the fleet's devices;
        `new_tid`: the DCO's transfer ids, so that no request shares one with an 11.3."""
        self.clock = clock
        self.bus = bus
        self.config = config
        self.timezone = timezone
        self._zone = ZoneInfo(timezone)
        self._new_tid = new_tid
        #: The DCO's outbound capacity, shared with firmware (None: unlimited). A request
        #: of a sample books its bytes over the share: it stands for 1/share requests.
        self._pipe = pipe
        self._topics = [down_topic(fleet, s) for s in range(shards)]
        self._shards = shards
        names = tuple(config.kinds)
        self._kinds = tuple(
            _Kind(
                KIND_NAMES[name],
                k.target_seconds,
                k.response_bytes - READING_MIN_BYTES,
                bytes(k.request_bytes - READ_REQUEST_MIN_BYTES),
            )
            for name, k in config.kinds.items()
        )
        rates = [config.kinds[n].per_device_per_day for n in names]
        total = sum(rates)
        self._kind_edges = [r / total for r in accumulate(rates)][:-1]
        self._spans = list(device_spans)
        self._span_starts = [0, *accumulate(count for _, count in self._spans)][:-1]
        self.devices = sum(count for _, count in self._spans)
        weights = config.hourly_weights
        # Requests a second, the whole fleet (or the sample of it), in each hour of the day.
        share = config.sample_share
        self._hour_rates = [
            self.devices * total * share * w / sum(weights) / HOUR_SECONDS for w in weights
        ]
        #: The DCO's limit on open requests, scaled as the traffic is.
        self.max_open = max(1, math.ceil(config.max_open_requests * share))
        self.stats = BackgroundStats(names, tuple(k.target_seconds for k in self._kinds))
        self._rng = traffic_rng(seed)
        self._open: dict[tuple[int, int], _Open] = {}
        #: (give-up time, key) of every request sent, in the order sent (= made).
        self._deadlines: deque[tuple[float, tuple[int, int]]] = deque()
        #: Requests made while `max_open_requests` were open, in the order made.
        self._waiting: deque[_Open] = deque()
        self._hour = 0
        self._hour_ends = 0.0
        self._timer: Any = None
        self._stopped = False

    @property
    def open_requests(self) -> int:
        """Requests sent and not yet answered or given up (waiting ones not counted)."""
        return len(self._open)

    # -- arrivals -------------------------------------------------------------------------

    def start(self) -> None:
        if not self.devices:
            return
        now = self.clock.now()
        self._enter_hour(now)
        self._schedule(now)

    def _enter_hour(self, t: float) -> None:
        """Take up the hour of day `t` falls in, and when it ends."""
        local = datetime.fromtimestamp(t, self._zone)
        self._hour = local.hour
        top = local.replace(minute=0, second=0, microsecond=0).timestamp()
        self._hour_ends = top + HOUR_SECONDS

    def _schedule(self, t: float) -> None:
        """Set the timer for the first arrival after `t`. The process is memoryless: at an
        hour's end the next arrival is drawn afresh at the next hour's rate."""
        rng = self._rng
        while True:
            rate = self._hour_rates[self._hour]
            if rate > 0:
                t_next = t + rng.expovariate(rate)
                if t_next < self._hour_ends:
                    break
            t = self._hour_ends
            self._enter_hour(t)
        self._timer = self.clock.call_at(t_next, self._arrive, t_next)

    def _arrive(self, t: float) -> None:
        if self._stopped:
            return
        rng = self._rng
        i = int(rng.random() * self.devices)
        g = bisect.bisect_right(self._span_starts, i) - 1
        first, _ = self._spans[g]
        device_id = first + i - self._span_starts[g]
        kind = bisect.bisect_right(self._kind_edges, rng.random())
        request = _Open(device_id, kind, self._hour, t)
        self.stats.made(kind, self._hour)
        self._expire(t)
        if self._waiting or len(self._open) >= self.max_open:
            self.stats.waited += 1
            self._waiting.append(request)
        else:
            self._send(request)
        self._schedule(t)

    # -- requests and answers ---------------------------------------------------------------

    def _send(self, request: _Open) -> None:
        kind = self._kinds[request.kind]
        tid = self._new_tid()
        device_id = request.device_id
        key = (device_id, tid)
        self._open[key] = request
        if len(self._open) > self.stats.peak_open:
            self.stats.peak_open = len(self._open)
        self._deadlines.append((request.made_at + self.config.give_up_seconds, key))
        frame = ReadRequest(device_id, tid, kind.kind, kind.data_bytes, kind.padding)
        topic = self._topics[shard_of(device_id, self._shards) if self._shards > 1 else 0]
        payload = frame.serialize()
        pipe = self._pipe
        if pipe is not None:
            done = pipe.book(len(payload) / self.config.sample_share)
            if done > self.clock.now():
                self.clock.call_at(done, self.bus.publish, topic, payload)
                return
        self.bus.publish(topic, payload)

    def on_answer(self, frame: Frame) -> bool:
        """Take `frame` if it answers an open request; whether it did."""
        request = self._open.pop((frame.device_id, frame.transfer_id), None)
        if request is None:
            if type(frame) is Reading:
                self.stats.late_answers += 1  # given up already: counted as missed
                return True
            return False
        now = self.clock.now()
        self.stats.answered(request.kind, request.hour, now - request.made_at)
        self._next_waiting(now)
        return True

    def _expire(self, now: float) -> None:
        """Give up the requests whose time has passed."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, key = deadlines.popleft()
            request = self._open.pop(key, None)
            if request is not None:
                self.stats.lost(request.kind, request.hour, self.config.give_up_seconds)
                self._next_waiting(now)

    def _next_waiting(self, now: float) -> None:
        waiting = self._waiting
        while waiting and len(self._open) < self.max_open:
            request = waiting.popleft()
            if request.made_at + self.config.give_up_seconds <= now:
                self.stats.lost(request.kind, request.hour, self.config.give_up_seconds)
                continue
            self._send(request)

    # -- the end ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Make no more requests; what is still open is settled by `summary`."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def summary(self) -> dict[str, Any]:
        """The run's `background` section. A request still open (or waiting) at the end
        is missed if its target has passed, and otherwise left out of met and missed
        (`open_at_end`): its outcome is not known."""
        now = self.clock.now()
        self._expire(now)
        open_at_end = 0
        for request in [*self._open.values(), *self._waiting]:
            if now - request.made_at > self._kinds[request.kind].target_seconds:
                self.stats.lost(request.kind, request.hour, now - request.made_at)
            else:
                open_at_end += 1
        self._open.clear()
        self._waiting.clear()
        self._deadlines.clear()
        out = self.stats.summary(open_at_end, self.timezone)
        out["requests_per_device_per_day"] = self.config.per_device_per_day
        out["devices"] = self.devices
        out["max_open_requests"] = self.max_open
        out["sample_share"] = self.config.sample_share
        return out
