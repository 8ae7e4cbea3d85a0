"""Binary frames between the DCO and its devices.

Every frame starts with the same 14 bytes, little-endian:

    offset 0  u8   frame format version (1)
    offset 1  u8   message type (MessageType)
    offset 2  u64  device id (EUI-64 as an integer)
    offset 10 u32  transfer id (0 where no transfer is meant)

then the fields of its type. Blocks travel as a run of consecutive blocks in one frame,
each with its own CRC-32, so one lost frame costs a run and the device's bitmap says
which run to send again. Each type is a slotted dataclass with `serialize()` and
`deserialize(data) -> (frame, rest)` (STYLE 1); `decode(data)` takes a whole frame.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass
from typing import ClassVar, Self

from smets1.codes import DeviceState, Reason
from smets1.errors import WireError

FRAME_VERSION = 1
NO_BLOCK = 0xFFFFFFFF
NO_VERSION = 0xFFFFFFFF
#: An execution time of 0 in an ACTIVATE frame means "now".
IMMEDIATE = 0.0
#: An execution time this far ahead cancels a pending activation, as DUIS uses a
#: far-future date (3000-01-01) to cancel.
CANCEL_AFTER_SECONDS = 100 * 365 * 86_400.0


def is_cancellation(execution_time: float, now: float) -> bool:
    return execution_time != IMMEDIATE and execution_time - now >= CANCEL_AFTER_SECONDS


_HEAD = struct.Struct("<BBQI")


class MessageType(enum.IntEnum):
    INITIATE = 0x01
    BLOCKS = 0x02
    QUERY = 0x03
    ACTIVATE = 0x04
    READ_VERSION = 0x05
    STATUS = 0x81
    ACTIVATION = 0x82
    VERSION = 0x83


def _need(data: memoryview | bytes, offset: int, size: int, field: str) -> None:
    if len(data) < offset + size:
        raise WireError(field, offset, f"expected at least {offset + size} bytes, got {len(data)}")


@dataclass(slots=True)
class Frame:
    """Fields shared by every frame."""

    TYPE: ClassVar[MessageType]
    BODY: ClassVar[struct.Struct]

    device_id: int
    transfer_id: int

    def _head(self) -> bytes:
        return _HEAD.pack(FRAME_VERSION, self.TYPE, self.device_id, self.transfer_id)

    def serialize(self) -> bytes:
        return self._head() + self.BODY.pack(*self._body_values())

    def _body_values(self) -> tuple[object, ...]:
        return ()

    @classmethod
    def deserialize(cls, data: bytes | memoryview) -> tuple[Self, memoryview]:
        frame, rest = decode_prefix(data)
        if not isinstance(frame, cls):
            raise WireError("type", 1, f"expected {cls.TYPE.name}, got {frame.TYPE.name}")
        return frame, rest

    @classmethod
    def _from_body(
        cls, device_id: int, transfer_id: int, data: memoryview, offset: int
    ) -> tuple[Self, int]:
        _need(data, offset, cls.BODY.size, cls.TYPE.name.lower())
        values = cls.BODY.unpack_from(data, offset)
        return cls(device_id, transfer_id, *values), offset + cls.BODY.size


@dataclass(slots=True)
class Initiate(Frame):
    """DCO → device: a transfer of `image_size` bytes in blocks of `block_size` begins."""

    TYPE = MessageType.INITIATE
    BODY = struct.Struct("<IH32s")

    image_size: int
    block_size: int
    firmware_hash: bytes

    def _body_values(self) -> tuple[object, ...]:
        return (self.image_size, self.block_size, self.firmware_hash)

    @property
    def block_count(self) -> int:
        return -(-self.image_size // self.block_size)


@dataclass(slots=True)
class Blocks(Frame):
    """DCO → device: `count` consecutive blocks from `first_block`, each with a CRC-32,
    and the CRC-32 of the whole run.

    The run CRC lets a device check an intact run with one call instead of one per block;
    only when it disagrees does the device check block by block and keep the good ones.
    On the wire: first block u32, count u16, run CRC u32, count × u32 CRCs, the data.
    """

    TYPE = MessageType.BLOCKS
    BODY = struct.Struct("<IHI")

    first_block: int
    crcs: tuple[int, ...]
    data: bytes | memoryview
    #: None until serialized (then computed from `data`), or when a run was cut up.
    run_crc: int | None = None

    @classmethod
    def build(
        cls,
        device_id: int,
        transfer_id: int,
        first_block: int,
        data: bytes | memoryview,
        block_size: int,
    ) -> Blocks:
        view = memoryview(data)
        crcs = tuple(zlib.crc32(view[i : i + block_size]) for i in range(0, len(view), block_size))
        return cls(device_id, transfer_id, first_block, crcs, data, zlib.crc32(view))

    def serialize(self) -> bytes:
        n = len(self.crcs)
        run_crc = zlib.crc32(self.data) if self.run_crc is None else self.run_crc
        return b"".join(
            (
                self._head(),
                self.BODY.pack(self.first_block, n, run_crc),
                struct.pack(f"<{n}I", *self.crcs),
                self.data,
            )
        )

    @classmethod
    def _from_body(
        cls, device_id: int, transfer_id: int, data: memoryview, offset: int
    ) -> tuple[Blocks, int]:
        _need(data, offset, cls.BODY.size, "blocks")
        first, n, run_crc = cls.BODY.unpack_from(data, offset)
        offset += cls.BODY.size
        _need(data, offset, 4 * n, "crcs")
        crcs = struct.unpack_from(f"<{n}I", data, offset)
        offset += 4 * n
        # The block data runs to the end of the frame; the CRCs say where each block ends.
        return cls(device_id, transfer_id, first, crcs, data[offset:], run_crc), len(data)


@dataclass(slots=True)
class Query(Frame):
    """DCO → device: report the state of this transfer (answered by Status)."""

    TYPE = MessageType.QUERY
    BODY = struct.Struct("<")


@dataclass(slots=True)
class Activate(Frame):
    """DCO → device: activate the image whose hash is `firmware_hash` at `execution_time`.

    `execution_time` is simulated Unix seconds; IMMEDIATE (0) means now.
    """

    TYPE = MessageType.ACTIVATE
    BODY = struct.Struct("<d32s")

    execution_time: float
    firmware_hash: bytes

    def _body_values(self) -> tuple[object, ...]:
        return (self.execution_time, self.firmware_hash)


@dataclass(slots=True)
class ReadVersion(Frame):
    """DCO → device: which firmware runs, and which is pending (SRV 11.2)."""

    TYPE = MessageType.READ_VERSION
    BODY = struct.Struct("<")


@dataclass(slots=True)
class Status(Frame):
    """Device → DCO: transfer state, blocks held, the first missing block and the bitmap."""

    TYPE = MessageType.STATUS
    BODY = struct.Struct("<BBIII")

    state: DeviceState
    reason: Reason
    received: int
    first_missing: int
    block_count: int
    bitmap: bytes = b""

    def serialize(self) -> bytes:
        return (
            self._head()
            + self.BODY.pack(
                self.state, self.reason, self.received, self.first_missing, self.block_count
            )
            + self.bitmap
        )

    @classmethod
    def _from_body(
        cls, device_id: int, transfer_id: int, data: memoryview, offset: int
    ) -> tuple[Status, int]:
        _need(data, offset, cls.BODY.size, "status")
        state, reason, received, first_missing, count = cls.BODY.unpack_from(data, offset)
        offset += cls.BODY.size
        bitmap_bytes = (count + 7) // 8
        _need(data, offset, bitmap_bytes, "bitmap")
        bitmap = bytes(data[offset : offset + bitmap_bytes])
        return (
            cls(
                device_id,
                transfer_id,
                DeviceState(state),
                Reason(reason),
                received,
                first_missing,
                count,
                bitmap,
            ),
            offset + bitmap_bytes,
        )

    @property
    def complete(self) -> bool:
        return self.first_missing == NO_BLOCK


@dataclass(slots=True)
class Activation(Frame):
    """Device → DCO: the outcome of an ACTIVATE (scheduled, active, failed, cancelled)."""

    TYPE = MessageType.ACTIVATION
    BODY = struct.Struct("<BBId")

    state: DeviceState
    reason: Reason
    running_version: int
    at: float

    def _body_values(self) -> tuple[object, ...]:
        return (self.state, self.reason, self.running_version, self.at)

    @classmethod
    def _from_body(
        cls, device_id: int, transfer_id: int, data: memoryview, offset: int
    ) -> tuple[Activation, int]:
        _need(data, offset, cls.BODY.size, "activation")
        state, reason, version, at = cls.BODY.unpack_from(data, offset)
        return (
            cls(device_id, transfer_id, DeviceState(state), Reason(reason), version, at),
            offset + cls.BODY.size,
        )


@dataclass(slots=True)
class Version(Frame):
    """Device → DCO: the running firmware version, and the pending one (or NO_VERSION)."""

    TYPE = MessageType.VERSION
    BODY = struct.Struct("<IIB")

    running_version: int
    pending_version: int
    state: DeviceState

    def _body_values(self) -> tuple[object, ...]:
        return (self.running_version, self.pending_version, self.state)

    @classmethod
    def _from_body(
        cls, device_id: int, transfer_id: int, data: memoryview, offset: int
    ) -> tuple[Version, int]:
        _need(data, offset, cls.BODY.size, "version")
        running, pending, state = cls.BODY.unpack_from(data, offset)
        return (
            cls(device_id, transfer_id, running, pending, DeviceState(state)),
            offset + cls.BODY.size,
        )


FRAME_TYPES: dict[int, type[Frame]] = {
    cls.TYPE: cls
    for cls in (Initiate, Blocks, Query, Activate, ReadVersion, Status, Activation, Version)
}


def decode_prefix(data: bytes | memoryview) -> tuple[Frame, memoryview]:
    """Decode one frame from the front of `data`; return it and the bytes after it."""
    view = memoryview(data)
    _need(view, 0, _HEAD.size, "header")
    version, mtype, device_id, transfer_id = _HEAD.unpack_from(view, 0)
    if version != FRAME_VERSION:
        raise WireError("version", 0, f"expected frame version {FRAME_VERSION}, got {version}")
    cls = FRAME_TYPES.get(mtype)
    if cls is None:
        raise WireError("type", 1, f"unknown message type 0x{mtype:02x}")
    frame, end = cls._from_body(device_id, transfer_id, view, _HEAD.size)
    return frame, view[end:]


def decode(data: bytes | memoryview) -> Frame:
    """Decode a whole frame; trailing bytes are an error."""
    frame, rest = decode_prefix(data)
    if len(rest):
        raise WireError("frame", len(data) - len(rest), f"{len(rest)} unexpected trailing bytes")
    return frame
