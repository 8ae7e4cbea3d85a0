"""The in-process bus: delivery through the loop, in publish order, never inside
`publish`, and a handler that raises stops nothing behind it."""

from __future__ import annotations

import asyncio

from smets1.bus import InProcessBus


async def test_every_subscriber_hears_every_message_in_publish_order() -> None:
    bus = InProcessBus()
    heard: list[tuple[str, str, bytes]] = []
    bus.subscribe("t/+", lambda t, p: heard.append(("a", t, p)))
    bus.subscribe("t/1", lambda t, p: heard.append(("b", t, p)))
    bus.publish("t/1", b"1")
    bus.publish("t/2", b"2")
    bus.publish("u/1", b"nobody")
    assert heard == []  # not inside publish
    await asyncio.sleep(0)
    assert heard == [("a", "t/1", b"1"), ("b", "t/1", b"1"), ("a", "t/2", b"2")]
    assert bus.counters.messages_published == 3 and bus.counters.messages_delivered == 3


async def test_what_a_handler_publishes_goes_in_the_next_pass() -> None:
    bus = InProcessBus()
    order: list[str] = []

    def ping(topic: str, payload: bytes) -> None:
        order.append(f"ping {payload.decode()}")
        bus.publish("pong", payload)

    bus.subscribe("ping", ping)
    bus.subscribe("pong", lambda t, p: order.append(f"pong {p.decode()}"))
    bus.publish("ping", b"1")
    bus.publish("ping", b"2")
    loop = asyncio.get_running_loop()
    loop.call_soon(order.append, "other callback")  # queued after the pump's first pass
    for _ in range(3):
        await asyncio.sleep(0)
    assert order == ["ping 1", "ping 2", "other callback", "pong 1", "pong 2"]


async def test_a_handler_that_raises_is_reported_and_the_rest_still_arrive() -> None:
    bus = InProcessBus()
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    heard: list[bytes] = []

    def fragile(topic: str, payload: bytes) -> None:
        if payload == b"bad":
            raise ValueError("cannot take it")
        heard.append(payload)

    bus.subscribe("t", fragile)
    for payload in (b"1", b"bad", b"2"):
        bus.publish("t", payload)
    await asyncio.sleep(0)
    bus.publish("t", b"3")  # the pump starts again after a raise
    await asyncio.sleep(0)
    assert heard == [b"1", b"2", b"3"]
    assert len(reported) == 1 and isinstance(reported[0]["exception"], ValueError)
