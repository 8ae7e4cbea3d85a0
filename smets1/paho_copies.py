"""Fewer copies and fewer socket writes for the MQTT packets paho moves (paho-mqtt 2.x).

paho copies a message's whole payload several times where it only needs to look at it:

* Receiving, `paho.mqtt._packet.decode_publish` splits the packet with `struct.unpack`
  (`"!H{n}s"`) three times under MQTT v5 (topic length, message id, properties), and
  each split copies the rest of the packet: a 2 MiB batch of blocks was copied three
  times before a handler saw it. `decode_publish` here reads the same fields through a
  memoryview and hands the payload on as a view of the packet paho read it into (a
  fresh `bytearray` for each packet, never reused), so nothing is copied.
* Sending, `Client._packet_write` sends `packet[pos:]`, which copies what is left of a
  `bytearray` each time the socket takes only part of it. Queued as a memoryview, the
  same slice is a view.
* Sending, paho writes each packet with a `send()` of its own. On this project's
  machines a write to the broker's loopback socket costs tens of microseconds of kernel
  time (it wakes the broker), and a role that reads several messages at once answers
  each with a PUBACK. A PUBACK or a QoS 1 PUBLISH queued behind another one not yet
  begun now joins it, and they leave in one `send()`. Only those two kinds join: paho
  does nothing when either has been written (a QoS 0 PUBLISH calls `on_publish` and a
  DISCONNECT closes the socket, so they stay alone).

Everything else (properties, the mid, topics that are not UTF-8, errors) is paho's own:
the decoding of the fixed fields and of the properties is paho's `Properties.unpack`,
and `tests/smets1/test_paho_copies.py` checks the result against paho's own
`decode_publish` for every QoS and protocol. `install()` is idempotent and refuses a paho
whose functions it does not know (another major version), leaving it as it is.
"""

from __future__ import annotations

import inspect
import struct
from typing import Any

from paho.mqtt import _packet, client
from paho.mqtt.client import MQTTv5
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

_U16 = struct.Struct("!H")
#: Below this, a copy costs less than a memoryview.
_VIEW_FROM_BYTES = 4096

_original_decode = _packet.decode_publish
_original_queue = client.Client._packet_queue
_installed = False


def decode_publish(header: int, packet: bytes | bytearray, protocol: int) -> _packet.PublishPacket:
    """paho's `decode_publish`, reading through a view: the payload is a memoryview of
    `packet` (for a packet of at least 4 KiB; bytes below that)."""
    view = memoryview(packet)
    if len(view) < _VIEW_FROM_BYTES:
        return _original_decode(header, packet, protocol)  # type: ignore[arg-type]
    dup = ((header & 0x08) >> 3) != 0
    qos = (header & 0x06) >> 1
    retain = (header & 0x01) != 0
    if len(view) < 2:
        raise _packet.MalformedPacket("PUBLISH shorter than its topic length")
    (slen,) = _U16.unpack_from(view, 0)
    pos = 2 + slen
    if pos > len(view):
        raise _packet.MalformedPacket("PUBLISH topic runs past the packet")
    topic = bytes(view[2:pos])
    if protocol != MQTTv5 and len(topic) == 0:
        raise _packet.MalformedPacket("topic can't be empty in MQTTv3")
    mid = 0
    if qos > 0:
        if pos + 2 > len(view):
            raise _packet.MalformedPacket("PUBLISH message id runs past the packet")
        (mid,) = _U16.unpack_from(view, pos)
        pos += 2
    properties = None
    if protocol == MQTTv5:
        properties = Properties(PacketTypes.PUBLISH)
        # The properties are short: paho reads them from a copy of their bytes alone.
        _props, props_len = properties.unpack(bytes(view[pos : pos + _props_span(view, pos)]))
        pos += props_len
    return _packet.PublishPacket(
        dup=dup,
        qos=qos,
        retain=retain,
        topic=topic,
        mid=mid,
        properties=properties,
        payload=view[pos:],  # type: ignore[arg-type]
    )


def _props_span(view: memoryview, pos: int) -> int:
    """Bytes of the properties at `pos`: their variable-length size and what it counts."""
    size = 0
    mult = 1
    for i in range(4):
        if pos + i >= len(view):
            raise _packet.MalformedPacket("PUBLISH properties run past the packet")
        byte = view[pos + i]
        size += (byte & 0x7F) * mult
        mult *= 128
        if not byte & 0x80:
            return i + 1 + size
    raise _packet.MalformedPacket("PUBLISH properties length longer than 4 bytes")


def _joins(command: int, qos: int) -> bool:
    """Whether paho does nothing once a packet of this kind is written."""
    kind = command & 0xF0
    return kind == client.PUBACK or (kind == client.PUBLISH and qos > 0)


def _packet_queue(
    self: client.Client,
    command: int,
    packet: bytes | bytearray,
    mid: int,
    qos: int,
    info: Any = None,
) -> Any:
    queue = self._out_packet
    if queue and _joins(command, qos) and len(packet) < _VIEW_FROM_BYTES:
        tail = queue[-1]
        if (
            tail["pos"] == 0
            and _joins(tail["command"], tail["qos"])
            and isinstance(tail["packet"], bytearray)
        ):  # pos 0: nothing of it is written yet (a part-written packet has pos > 0)
            tail["packet"] += packet
            tail["to_process"] += len(packet)
            return client.MQTTErrorCode.MQTT_ERR_SUCCESS
    if len(packet) >= _VIEW_FROM_BYTES:
        packet = memoryview(packet)  # type: ignore[assignment]
    elif _joins(command, qos) and not isinstance(packet, bytearray):
        packet = bytearray(packet)
    return _original_queue(self, command, packet, mid, qos, info)


def _parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


def install() -> bool:
    """Put the two in place in paho (once); False, with paho untouched, for a paho whose
    functions are not the ones these replace."""
    global _installed
    if _installed:
        return True
    if _parameters(_original_decode) != ["header", "packet", "protocol"]:
        return False
    if _parameters(_original_queue) != ["self", "command", "packet", "mid", "qos", "info"]:
        return False
    _packet.decode_publish = decode_publish
    client.Client._packet_queue = _packet_queue  # type: ignore[method-assign]
    _installed = True
    return True
