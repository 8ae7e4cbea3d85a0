"""Worker routing over the in-process bus: a reply reaches the DCO worker that asked."""

from __future__ import annotations

import asyncio

import pytest

from smets1.bus import InProcessBus, down_topic, up_topic
from smets1.errors import BusError
from smets1.routing import DcoWorkerBus, ShardBus
from smets1.wire import Query, ReadVersion

DEV_A = 0x00DB_1200_0000_0001
DEV_B = 0x00DB_1200_0000_0002


async def test_replies_reach_the_worker_that_asked() -> None:
    inner = InProcessBus()
    w1, w2 = DcoWorkerBus(inner, "f", "w1"), DcoWorkerBus(inner, "f", "w2")
    shard = ShardBus(inner, "f", 0)
    heard: dict[str, list[tuple[str, bytes]]] = {"w1": [], "w2": []}
    w1.subscribe(up_topic("f", "+"), lambda t, p: heard["w1"].append((t, p)))
    w2.subscribe(up_topic("f", "+"), lambda t, p: heard["w2"].append((t, p)))
    down_seen: list[str] = []

    def device(topic: str, payload: bytes) -> None:
        down_seen.append(topic)
        shard.publish(up_topic("f", 0), payload)  # echo: same device and transfer id

    shard.subscribe(down_topic("f", 0), device)
    # The same transfer id from both workers, for different devices.
    w1.publish(down_topic("f", 0), Query(DEV_A, 7).serialize())
    w2.publish(down_topic("f", 0), ReadVersion(DEV_B, 7).serialize())
    for _ in range(5):
        await asyncio.sleep(0)
    # The fleet host sees the two-level topic it subscribed to.
    assert down_seen == [down_topic("f", 0)] * 2
    assert heard["w1"] == [(up_topic("f", 0), Query(DEV_A, 7).serialize())]
    assert heard["w2"] == [(up_topic("f", 0), ReadVersion(DEV_B, 7).serialize())]
    await inner.close()


def test_worker_ids_must_be_topic_safe() -> None:
    with pytest.raises(BusError, match="worker id"):
        DcoWorkerBus(InProcessBus(), "f", "a/b")
