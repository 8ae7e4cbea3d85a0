"""smets1.paho_copies against paho itself: the same packets decode to the same fields
(paho's own `decode_publish` is the reference), and joined writes reach a real broker
as the separate packets they were."""

from __future__ import annotations

import random
import struct

import pytest
from paho.mqtt import _packet, client
from paho.mqtt.client import MQTTv5, MQTTv311
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from smets1 import paho_copies


def _publish_body(topic: bytes, qos: int, mid: int, payload: bytes, protocol: int) -> bytes:
    """A PUBLISH packet after its fixed header, as a broker sends it."""
    body = struct.pack("!H", len(topic)) + topic
    if qos:
        body += struct.pack("!H", mid)
    if protocol == MQTTv5:
        props = Properties(PacketTypes.PUBLISH)
        props.MessageExpiryInterval = 30
        props.UserProperty = ("k", "v" * 200)  # a long property: a multi-byte length
        body += props.pack()
    return body + payload


@pytest.mark.parametrize("protocol", [MQTTv311, MQTTv5])
@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("size", [0, 100, 4096, 70_000])
def test_decode_matches_paho(protocol: int, qos: int, size: int) -> None:
    payload = random.Random(size).randbytes(size)
    body = _publish_body(b"smets1/fleet/down/3", qos, 517, payload, protocol)
    header = 0x30 | (qos << 1) | 0x01  # retained
    ours = paho_copies.decode_publish(header, bytearray(body), protocol)
    theirs = paho_copies._original_decode(header, bytearray(body), protocol)
    assert bytes(ours.payload) == bytes(theirs.payload) == payload
    assert (ours.topic, ours.mid, ours.qos, ours.retain, ours.dup) == (
        theirs.topic,
        theirs.mid,
        theirs.qos,
        theirs.retain,
        theirs.dup,
    )
    assert str(ours.properties) == str(theirs.properties)
    if size >= 4096:
        assert isinstance(ours.payload, memoryview)  # a view, not a copy


def test_topic_longer_than_packet_is_malformed() -> None:
    packet = bytearray(struct.pack("!H", 60_000) + bytes(5000))
    with pytest.raises(_packet.MalformedPacket, match="topic"):
        paho_copies.decode_publish(0x32, packet, MQTTv5)


def test_properties_past_packet_is_malformed() -> None:
    # Topic "t", mid 1, then a properties length of 127 + 127 * 128 * ... never ending.
    packet = bytearray(struct.pack("!H", 1) + b"t" + struct.pack("!H", 1) + b"\xff" * 4096)
    with pytest.raises(_packet.MalformedPacket, match="properties"):
        paho_copies.decode_publish(0x32, packet, MQTTv5)


def test_installed_by_the_bus() -> None:
    import smets1.mqtt  # noqa: F401  (installs on import)

    assert _packet.decode_publish is paho_copies.decode_publish


def _idle_client() -> client.Client:
    """A paho client with an event loop's write hook and no socket: queued packets stay
    in `_out_packet`, as they do between the loop's turns."""
    c = client.Client(client.CallbackAPIVersion.VERSION2, protocol=MQTTv5)
    c.on_socket_register_write = lambda *_: None
    return c


def test_pubacks_queued_together_leave_as_one_write() -> None:
    paho_copies.install()
    c = _idle_client()
    acks = [struct.pack("!BBH", 0x40, 2, mid) for mid in (1, 2, 3)]
    for mid, ack in enumerate(acks, 1):
        c._packet_queue(client.PUBACK, ack, mid, 0)
    assert len(c._out_packet) == 1
    joined = c._out_packet[0]
    assert bytes(joined["packet"]) == b"".join(acks)
    assert joined["to_process"] == 12 and joined["pos"] == 0


def test_a_packet_part_written_or_with_a_callback_is_not_joined() -> None:
    paho_copies.install()
    c = _idle_client()
    c._packet_queue(client.PUBACK, struct.pack("!BBH", 0x40, 2, 1), 1, 0)
    c._out_packet[0]["pos"] = 1  # the socket took part of it
    c._packet_queue(client.PUBACK, struct.pack("!BBH", 0x40, 2, 2), 2, 0)
    # A QoS 0 PUBLISH has on_publish called once written: it stays alone, and so does
    # what comes after it.
    c._packet_queue(client.PUBLISH, bytearray(b"\x30\x03\x00\x01t"), 0, 0)
    c._packet_queue(client.PUBACK, struct.pack("!BBH", 0x40, 2, 3), 3, 0)
    assert len(c._out_packet) == 4
    big = bytearray(5000)
    c._packet_queue(client.PUBLISH, big, 4, 1)
    assert isinstance(c._out_packet[-1]["packet"], memoryview)  # sent from a view
