"""Replies find the DCO worker that holds the request: topics per worker, over any Bus.

A DCO matches a device's answer to the request in flight by (device id, transfer id), in
memory. With several DCO workers the answer must reach the worker that asked, so the
worker's id travels in the topic:

    smets1/<fleet>/down/<shard>/<worker>   worker → the devices of one shard
    smets1/<fleet>/up/<shard>/<worker>     the devices of one shard → that worker
    smets1/<fleet>/up/<shard>              uplink no worker asked for; DCO workers share
                                           it with `$share/dco/smets1/<fleet>/up/+`

The fleet side remembers, per (device, transfer), which worker's topic a frame came on
and answers on that worker's topic. The components keep the two-level layout of
`smets1.bus` (`down/<shard>`, `up/<shard>`); these wrappers add and strip the worker
level, so neither the DCO nor the fleet host knows about workers.
"""

from __future__ import annotations

import re

from smets1.bus import Bus, BusCounters, Handler, down_topic, up_topic
from smets1.errors import BusError
from smets1.wire import route_key

#: (device, transfer) pairs the fleet side remembers; the oldest go first.
MAX_ROUTES = 1_000_000
SHARE_GROUP = "dco"

_WORKER = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_worker_id(worker: str) -> str:
    if not _WORKER.match(worker):
        raise BusError(f"DCO worker id must be 1-64 of A-Z a-z 0-9 _ -, got {worker!r}")
    return worker


class DcoWorkerBus(Bus):
    """The DCO worker's view: its downlink names it; it hears its own replies."""

    def __init__(self, inner: Bus, fleet: str, worker: str) -> None:
        self.inner = inner
        self.fleet = fleet
        self.worker = check_worker_id(worker)
        self._down_prefix = down_topic(fleet, "")
        self._up_all = up_topic(fleet, "+")

    @property
    def counters(self) -> BusCounters:  # type: ignore[override]
        return self.inner.counters

    def publish(self, topic: str, payload: bytes, sent_at: float | None = None) -> None:
        if topic.startswith(self._down_prefix):
            topic = f"{topic}/{self.worker}"
        self.inner.publish(topic, payload, sent_at)

    def subscribe(self, topic_filter: str, handler: Handler) -> None:
        if topic_filter != self._up_all:
            self.inner.subscribe(topic_filter, handler)
            return

        def strip(topic: str, payload: bytes) -> None:
            handler(topic.rsplit("/", 1)[0], payload)

        self.inner.subscribe(f"{self._up_all}/{self.worker}", strip)
        self.inner.subscribe(f"$share/{SHARE_GROUP}/{self._up_all}", handler)

    def has_room(self, nbytes: int = 0) -> bool:
        return self.inner.has_room(nbytes)

    async def wait_for_room(self, nbytes: int = 0) -> None:
        await self.inner.wait_for_room(nbytes)

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()


class ShardBus(Bus):
    """The fleet shard's view: frames from any worker; answers go back to the asker."""

    def __init__(self, inner: Bus, fleet: str, shard: int) -> None:
        self.inner = inner
        self._down = down_topic(fleet, shard)
        self._up = up_topic(fleet, shard)
        self._worker_of: dict[tuple[int, int], str] = {}

    @property
    def counters(self) -> BusCounters:  # type: ignore[override]
        return self.inner.counters

    def subscribe(self, topic_filter: str, handler: Handler) -> None:
        if topic_filter != self._down:
            self.inner.subscribe(topic_filter, handler)
            return
        down = self._down
        routes = self._worker_of

        def remember(topic: str, payload: bytes) -> None:
            key = route_key(payload)
            if key is not None:
                routes.pop(key, None)  # re-insert: keeps the dict in age order
                routes[key] = topic.rsplit("/", 1)[1]
                if len(routes) > MAX_ROUTES:
                    del routes[next(iter(routes))]
            handler(down, payload)

        self.inner.subscribe(f"{down}/+", remember)
        self.inner.subscribe(down, handler)  # a DCO that names no worker

    def publish(self, topic: str, payload: bytes, sent_at: float | None = None) -> None:
        if topic == self._up:
            key = route_key(payload)
            worker = None if key is None else self._worker_of.get(key)
            if worker is not None:
                topic = f"{topic}/{worker}"
        self.inner.publish(topic, payload, sent_at)

    def has_room(self, nbytes: int = 0) -> bool:
        return self.inner.has_room(nbytes)

    async def wait_for_room(self, nbytes: int = 0) -> None:
        await self.inner.wait_for_room(nbytes)

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()
