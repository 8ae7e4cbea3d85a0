"""smets1.paho_copies against paho itself: the same packets decode to the same fields
(paho's own `decode_publish` is the reference), and joined writes reach a real broker
as the separate packets they were."""

from __future__ import annotations

import random
import struct

import pytest
from paho.mqtt import _packet
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
