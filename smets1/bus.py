"""The transport between the DCO and the fleet: a narrow interface with an in-memory twin.

Device logic never sees MQTT (STYLE 5). A bus carries opaque binary payloads on topics;
`publish` never blocks (a transport buffers), handlers are plain callables run on the
event loop. Topic filters use MQTT syntax (`+` one level, `#` the rest).

Topic layout, per fleet shard so that a fleet process subscribes to its own devices only:

    smets1/<fleet>/down/<shard>   DCO → the devices of one shard
    smets1/<fleet>/up/<shard>     devices of one shard → DCO
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from smets1.crc import crc32
from smets1.errors import BusError

Handler = Callable[[str, bytes], None]


def shard_of(device_id: int, shards: int) -> int:
    """The shard a device lives on: stable, and the same in every role."""
    return crc32(device_id.to_bytes(8, "big")) % shards


def down_topic(fleet: str, shard: int | str) -> str:
    return f"smets1/{fleet}/down/{shard}"


def up_topic(fleet: str, shard: int | str) -> str:
    """`shard` may be "+" for a filter over every shard."""
    return f"smets1/{fleet}/up/{shard}"


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic filter matching (`+` and `#`)."""
    f_parts = topic_filter.split("/")
    t_parts = topic.split("/")
    for i, part in enumerate(f_parts):
        if part == "#":
            return True
        if i >= len(t_parts):
            return False
        if part != "+" and part != t_parts[i]:
            return False
    return len(f_parts) == len(t_parts)


@dataclass(slots=True)
class BusCounters:
    """What went through a bus, for the summary and for metrics."""

    messages_published: int = 0
    bytes_published: int = 0
    messages_delivered: int = 0


class Bus(ABC):
    """Publish/subscribe of binary payloads."""

    counters: BusCounters

    @abstractmethod
    def publish(self, topic: str, payload: bytes, sent_at: float | None = None) -> None:
        """Queue `payload` for `topic`; never blocks. `sent_at`: the simulated time the
        sender meant to send it, if earlier than now (it waited for room, or for a byte
        budget): a transport that measures lateness counts the wait (default: now)."""

    @abstractmethod
    def subscribe(self, topic_filter: str, handler: Handler) -> None: ...

    def has_room(self, nbytes: int = 0) -> bool:
        """Whether `nbytes` more may be published now without going over the bus's bound
        on outbound bytes queued (a bus without a queue always has room)."""
        return True

    async def wait_for_room(self, nbytes: int = 0) -> None:  # noqa: B027 - no queue, no wait
        """Until `has_room(nbytes)`: a producer awaits it before it publishes more, so a
        slow broker slows the producer instead of piling bytes up in memory."""

    async def start(self) -> None:  # noqa: B027 - a transport without a connection needs nothing
        """Connect; the in-process bus has nothing to do."""

    async def close(self) -> None:  # noqa: B027
        """Disconnect and drop subscriptions."""


@dataclass(slots=True)
class _Subscription:
    topic_filter: str
    handler: Handler


class InProcessBus(Bus):
    """The embedded default: delivery through the event loop, in publish order.

    Messages wait in one queue that a single callback on the loop empties (the pump):
    a message costs a queue entry, not a loop handle of its own. A pass of the pump
    delivers what was published before it began; what its handlers publish goes in the
    next pass, so a handler never runs inside `publish`. A handler that raises is
    reported to the loop's exception handler, as a loop callback's would be, and the
    messages behind it are still delivered.
    """

    def __init__(self) -> None:
        self.counters = BusCounters()
        self._subs: list[_Subscription] = []
        self._routes: dict[str, list[Handler]] = {}
        self._closed = False
        self._queue: deque[tuple[Handler, str, bytes]] = deque()
        self._pumping = False

    def subscribe(self, topic_filter: str, handler: Handler) -> None:
        self._subs.append(_Subscription(topic_filter, handler))
        self._routes.clear()

    def _handlers(self, topic: str) -> list[Handler]:
        handlers = self._routes.get(topic)
        if handlers is None:
            handlers = [s.handler for s in self._subs if topic_matches(s.topic_filter, topic)]
            self._routes[topic] = handlers
        return handlers

    def publish(self, topic: str, payload: bytes, sent_at: float | None = None) -> None:
        if self._closed:
            raise BusError(f"publish on closed bus (topic {topic})")
        c = self.counters
        c.messages_published += 1
        c.bytes_published += len(payload)
        handlers = self._handlers(topic)
        if not handlers:
            return
        c.messages_delivered += len(handlers)
        queue = self._queue
        for handler in handlers:
            queue.append((handler, topic, payload))
        if not self._pumping:
            self._pumping = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self) -> None:
        queue = self._queue
        for _ in range(len(queue)):
            handler, topic, payload = queue.popleft()
            try:
                handler(topic, payload)
            except Exception as exc:  # reported as the loop reports a callback's
                asyncio.get_running_loop().call_exception_handler(
                    {"message": f"bus handler for {topic} raised", "exception": exc}
                )
        if queue:
            asyncio.get_running_loop().call_soon(self._pump)
        else:
            self._pumping = False

    async def close(self) -> None:
        self._closed = True
        self._subs.clear()
        self._routes.clear()
        self._queue.clear()


@dataclass(slots=True)
class LossyBus(Bus):
    """Wraps a bus and drops every n-th message; for tests of recovery by resume."""

    inner: Bus
    drop_every: int
    _n: int = field(default=0)

    @property
    def counters(self) -> BusCounters:  # type: ignore[override]
        return self.inner.counters

    def publish(self, topic: str, payload: bytes, sent_at: float | None = None) -> None:
        self._n += 1
        if self.drop_every and self._n % self.drop_every == 0:
            return
        self.inner.publish(topic, payload, sent_at)

    def subscribe(self, topic_filter: str, handler: Handler) -> None:
        self.inner.subscribe(topic_filter, handler)

    def has_room(self, nbytes: int = 0) -> bool:
        return self.inner.has_room(nbytes)

    async def wait_for_room(self, nbytes: int = 0) -> None:
        await self.inner.wait_for_room(nbytes)
