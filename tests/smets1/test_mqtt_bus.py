"""MqttBus against a private mosquitto: round trip, shared subscriptions, broker restart."""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Awaitable, Callable

import pytest

from orchestrator.mosquitto import Mosquitto
from smets1.broker_url import parse_broker_url
from smets1.errors import BusError
from smets1.mqtt import (
    BATCH_MAGIC,
    BATCH_MAX_BYTES,
    ENVELOPE_BYTES,
    ENVELOPE_MAGIC,
    BatchEntry,
    Envelope,
    MqttBus,
    RecentNumbers,
    join_batch,
    split_batch,
)

pytestmark = pytest.mark.mqtt

TIMEOUT_SECONDS = 10.0


class Inbox:
    """What a subscription received; a test awaits a count, woken at each arrival."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bytes]] = []
        self._arrived = asyncio.Event()

    def __call__(self, topic: str, payload: bytes) -> None:
        self.items.append((topic, payload))
        self._arrived.set()

    @property
    def payloads(self) -> list[bytes]:
        return [p for _, p in self.items]

    def __len__(self) -> int:
        return len(self.items)

    async def reach(self, n: int, what: str) -> None:
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                while len(self.items) < n:
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}: {len(self)} of {n}") from None


async def within(aw: Awaitable[None], what: str) -> None:
    try:
        await asyncio.wait_for(aw, TIMEOUT_SECONDS)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def test_round_trip_in_order_with_counters(broker: Mosquitto) -> None:
    url = parse_broker_url(broker.url)
    pub, sub = MqttBus(url, "t-pub"), MqttBus(url, "t-sub")
    got = Inbox()
    sub.subscribe("smets1/t/down/+", got)
    await sub.start()
    await pub.start()
    try:
        sent = [bytes([i % 256]) * n for i, n in enumerate([1, 14, 1100, 65_536 + 14] * 50)]
        for i, payload in enumerate(sent):
            pub.publish(f"smets1/t/down/{i % 3}", payload)  # never blocks
        pub.publish("smets1/t/up/0", b"not subscribed")
        await got.reach(len(sent), "every message")
        # In order per topic (as MQTT promises), each frame whole and alone.
        for k in range(3):
            topic = f"smets1/t/down/{k}"
            assert [p for t, p in got.items if t == topic] == sent[k::3]
        await within(pub.wait_drained(), "the publisher to drain")
        assert pub.backlog == 0
        assert pub.counters.messages_published == len(sent) + 1
        assert pub.counters.bytes_published == sum(map(len, sent)) + len(b"not subscribed")
        assert sub.counters.messages_received == sub.counters.messages_delivered == len(sent)
        assert sub.counters.bytes_received == sum(map(len, sent))
        # Queued together, the frames of a topic shared MQTT messages of up to
        # BATCH_MAX_BYTES (2 MiB): 66 frames of 64 KiB and a few small ones per topic
        # make three messages of each of the three topics at least.
        assert pub.counters.mqtt_publishes < pub.counters.messages_published
        assert sub.counters.mqtt_received == pub.counters.mqtt_publishes - 1
        per_topic_bytes = sum(map(len, sent[0::3]))
        assert sub.counters.mqtt_received >= 3 * math.ceil(per_topic_bytes / BATCH_MAX_BYTES)
        assert sub.counters.bad_batches == 0
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
    both = Inbox()  # what either worker received, to wait on

    def worker_inbox(mine: list[bytes]) -> Callable[[str, bytes], None]:
        def receive(topic: str, payload: bytes) -> None:
            mine.append(payload)
            both(topic, payload)

        return receive

    for inbox, w in zip(got, workers, strict=True):
        w.subscribe("$share/dco/smets1/t/up/+", worker_inbox(inbox))
        await w.start()
    await pub.start()
    try:
        sent = [i.to_bytes(4, "big") for i in range(200)]
        for payload in sent:
            pub.publish("smets1/t/up/1", payload)
            # Each its own MQTT message (queued, they would batch): the next waits for the
            # broker's acknowledgement of this one.
            await within(pub.wait_drained(), "the broker's acknowledgement")
        await both.reach(len(sent), "every message")
        assert sorted(got[0] + got[1]) == sent  # each message to exactly one worker
        assert got[0] and got[1]
    finally:
        for b in [pub, *workers]:
            await b.close()


async def test_broker_restart_loses_nothing(broker: Mosquitto) -> None:
    url = parse_broker_url(broker.url)
    pub, sub = MqttBus(url, "t-pub"), MqttBus(url, "t-sub")
    got = Inbox()
    sub.subscribe("smets1/t/down/0", got)
    await sub.start()
    await pub.start()
    try:
        for i in range(100):
            pub.publish("smets1/t/down/0", i.to_bytes(4, "big"))
        await got.reach(100, "the first hundred")
        await asyncio.to_thread(broker.stop)
        await within(pub.wait_disconnected(), "the publisher to see the drop")
        await within(sub.wait_disconnected(), "the subscriber to see the drop")
        for i in range(100, 300):
            pub.publish("smets1/t/down/0", i.to_bytes(4, "big"))  # queued while down
        assert pub.backlog >= 200
        await asyncio.to_thread(broker.start)
        await got.reach(300, "the queued messages after the restart")
        # Exactly once, in order: what a restarted broker redelivers is dropped.
        assert got.payloads == [i.to_bytes(4, "big") for i in range(300)]
        # A resumed session's queued messages may reach the handler before the
        # reconnection is counted (they flow from the CONNACK on): wait for it.
        await within(pub.wait_connected(), "the publisher to reconnect")
        await within(sub.wait_connected(), "the subscriber to reconnect")
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
    recent = RecentNumbers()
    assert [recent.is_new(n) for n in (1, 2, 1, 3, 2)] == [True, True, False, True, False]


def test_batch_envelope_round_trip_and_a_broken_length() -> None:
    frames = [b"", b"\x01", b"frame" * 300]
    payload = join_batch(7, 42, frames, 1_740_787_200.125)
    envelope, rest = Envelope.deserialize(payload)
    assert (envelope.magic, envelope.sender, envelope.seq) == (BATCH_MAGIC, 7, 42)
    assert envelope.sent_at == 1_740_787_200.125
    assert bytes(rest) == b"".join(BatchEntry(f).serialize() for f in frames)
    assert split_batch(payload) == (frames, None)
    # A length that runs past the end keeps the frames before it and says where.
    kept, broken = split_batch(payload[:-1])
    assert kept == frames[:2]
    assert broken is not None
    # The third frame's data starts after three lengths and the first two frames.
    assert (broken.field, broken.offset) == ("frame", ENVELOPE_BYTES + 3 * 4 + 0 + 1)
    assert str(broken).endswith("expected at least 1530 bytes, got 1529")
    # One frame alone keeps the plain envelope.
    single = join_batch(7, 43, [b"abc"], -1.5)
    assert single == Envelope(ENVELOPE_MAGIC, 7, 43, -1.5).serialize() + b"abc"
    assert ENVELOPE_BYTES == 17 and single[9:17] == struct.pack(">d", -1.5)
    assert split_batch(single) == ([b"abc"], None)


def test_what_is_not_an_envelope_says_why() -> None:
    frames, empty = split_batch(b"")
    assert frames == [] and empty is not None and (empty.field, empty.offset) == ("magic", 0)
    _, short = split_batch(b"\xe7\x00")
    assert short is not None and (short.field, short.offset) == ("sender", 1)
    _, foreign = split_batch(b"\x01" + bytes(20))
    assert foreign is not None
    assert str(foreign) == "magic at offset 0: expected 0xE7 or 0xE8, got 0x01"
    _, no_time = split_batch(b"\xe7" + bytes(8) + b"\x41\xd9")
    assert no_time is not None and (no_time.field, no_time.offset) == ("sent_at", 9)


async def test_outbound_bytes_bounded_wait_for_room_until_the_broker_drains(
    broker: Mosquitto,
) -> None:
    """Backpressure: over its byte bound the bus has no room, and `wait_for_room` waits
    until the broker has taken enough of the queue (here: until it is back up)."""
    url = parse_broker_url(broker.url)
    pub, sub = MqttBus(url, "t-pub", max_queued_bytes=10_000), MqttBus(url, "t-sub")
    got = Inbox()
    sub.subscribe("smets1/t/down/0", got)
    await sub.start()
    await pub.start()
    try:
        await asyncio.to_thread(broker.stop)
        await within(pub.wait_disconnected(), "the publisher to see the drop")
        sent: list[bytes] = []
        # A producer that waits for room before each 4,000-byte frame: two fit under
        # 10,000 bytes, the third waits while the broker is down.
        for i in range(2):
            assert pub.has_room(4_000)
            sent.append(bytes([i]) * 4_000)
            pub.publish("smets1/t/down/0", sent[-1])
        assert pub.counters.queued_bytes == 8_000
        assert not pub.has_room(4_000)
        assert pub.has_room(2_000)  # a smaller frame still fits
        waiting = asyncio.create_task(pub.wait_for_room(4_000))
        for _ in range(20):  # the broker is down: nothing makes room
            await asyncio.sleep(0)
        assert not waiting.done()
        assert pub.counters.room_waits == 1
        await asyncio.to_thread(broker.start)
        await within(waiting, "room once the broker takes the queue")
        sent.append(b"\x02" * 4_000)
        pub.publish("smets1/t/down/0", sent[-1])
        await got.reach(3, "every frame")
        assert got.payloads == sent
        await within(pub.wait_drained(), "the publisher to drain")
        assert pub.counters.queued_bytes == 0
        assert pub.counters.peak_queued_bytes == 8_000 <= pub.max_queued_bytes
        # A message larger than the bound has room only on an empty queue, and goes alone.
        assert pub.has_room(50_000)
    finally:
        await pub.close()
        await sub.close()
