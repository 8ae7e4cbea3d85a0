"""MqttBus against a private mosquitto: round trip, shared subscriptions, broker restart."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from smets1.broker_url import parse_broker_url
from smets1.distributed import Mosquitto
from smets1.errors import BusError
from smets1.mqtt import MqttBus, _Recent

pytestmark = pytest.mark.mqtt

TIMEOUT_SECONDS = 10.0


async def until(pred: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT_SECONDS
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def collect(inbox: list[bytes]) -> Callable[[str, bytes], None]:
    return lambda topic, payload: inbox.append(payload)


async def test_round_trip_in_order_with_counters(broker: Mosquitto) -> None:
    url = parse_broker_url(broker.url)
    pub, sub = MqttBus(url, "t-pub"), MqttBus(url, "t-sub")
    got: list[tuple[str, bytes]] = []
    sub.subscribe("smets1/t/down/+", lambda t, p: got.append((t, p)))
    await sub.start()
    await pub.start()
    try:
        sent = [bytes([i % 256]) * n for i, n in enumerate([1, 14, 1100, 65_536 + 14] * 50)]
        for i, payload in enumerate(sent):
            pub.publish(f"smets1/t/down/{i % 3}", payload)  # never blocks
        pub.publish("smets1/t/up/0", b"not subscribed")
        await until(lambda: len(got) == len(sent), "every message")
        assert [p for _, p in got] == sent
        assert [t for t, _ in got][:4] == [f"smets1/t/down/{i}" for i in (0, 1, 2, 0)]
        await until(lambda: pub.backlog == 0, "the publisher to drain")
        assert pub.counters.messages_published == len(sent) + 1
        assert pub.counters.bytes_published == sum(map(len, sent)) + len(b"not subscribed")
        assert sub.counters.messages_received == sub.counters.messages_delivered == len(sent)
        assert sub.counters.bytes_received == sum(map(len, sent))
    finally:
        await pub.close()
        await sub.close()
    with pytest.raises(BusError, match="closed"):
        pub.publish("smets1/t/down/0", b"x")


async def test_shared_subscription_splits_the_traffic(broker: Mosquitto) -> None:
    url = parse_broker_url(broker.url)
    pub = MqttBus(url, "t-pub")
    workers = [MqttBus(url, f"t-dco-{i}") for i in range(2)]
    got: list[list[bytes]] = [[], []]
    for inbox, w in zip(got, workers, strict=True):
        w.subscribe("$share/dco/smets1/t/up/+", collect(inbox))
        await w.start()
    await pub.start()
    try:
        sent = [i.to_bytes(4, "big") for i in range(200)]
        for payload in sent:
            pub.publish("smets1/t/up/1", payload)
        await until(lambda: len(got[0]) + len(got[1]) == len(sent), "every message")
        assert sorted(got[0] + got[1]) == sent  # each message to exactly one worker
        assert got[0] and got[1]
    finally:
        for b in [pub, *workers]:
            await b.close()


async def test_broker_restart_loses_nothing(broker: Mosquitto) -> None:
    url = parse_broker_url(broker.url)
    pub, sub = MqttBus(url, "t-pub"), MqttBus(url, "t-sub")
    got: list[bytes] = []
    sub.subscribe("smets1/t/down/0", lambda t, p: got.append(p))
    await sub.start()
    await pub.start()
    try:
        for i in range(100):
            pub.publish("smets1/t/down/0", i.to_bytes(4, "big"))
        await until(lambda: len(got) == 100, "the first hundred")
        await asyncio.to_thread(broker.stop)
        await until(lambda: not pub.connected and not sub.connected, "both to see the drop")
        for i in range(100, 300):
            pub.publish("smets1/t/down/0", i.to_bytes(4, "big"))  # queued while down
        assert pub.backlog >= 200
        await asyncio.to_thread(broker.start)
        await until(lambda: len(got) == 300, "the queued messages after the restart")
        # Exactly once, in order: what a restarted broker redelivers is dropped.
        assert got == [i.to_bytes(4, "big") for i in range(300)]
        assert pub.counters.connects >= 2 and sub.counters.connects >= 2
        assert sub.counters.connection_losses >= 1
    finally:
        await pub.close()
        await sub.close()


async def test_unreachable_broker_fails_start_with_the_reason() -> None:
    bus = MqttBus(parse_broker_url("mqtt://127.0.0.1:9"), "t-none", connect_timeout_seconds=0.5)
    with pytest.raises(BusError, match=r"cannot reach the MQTT broker mqtt://127\.0\.0\.1:9"):
        await bus.start()
    await bus.close()


def test_redelivered_message_numbers_are_dropped() -> None:
    recent = _Recent()
    assert [recent.is_new(n) for n in (1, 2, 1, 3, 2)] == [True, True, False, True, False]
