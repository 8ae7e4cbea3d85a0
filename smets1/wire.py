"""Binary frames between the DCO and its devices.

Every frame starts with the same 14 bytes, little-endian:

    offset 0  u8   frame format version (FRAME_VERSION, 2)
    offset 1  u8   message type (MessageType)
    offset 2  u64  device id (EUI-64 as an integer)
    offset 10 u32  transfer id (0 where no transfer is meant)

then the fields of its type. Version 2 gave Blocks' data a length of its own, so a Blocks
frame ends where its data ends, like every other frame. Blocks travel as a run of
consecutive blocks in one frame, each with its own CRC-32, so one lost frame costs a run
and the device's bitmap says which run to send again. Each type is a struct of
`smets1.structs` (STYLE 1): declared once, with `serialize()` and `deserialize(data) ->
(frame, rest)`; `decode(data)` takes a whole frame and `decode_prefix(data)` one from the
front of a buffer. A short frame is reported by part: the header, then the fixed fields of
the type (named after the type), then each field of variable size.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from typing import Annotated, ClassVar, Self, cast

from smets1.codes import DeviceState, ReadKind, Reason
from smets1.crc import crc32
from smets1.errors import WireError
from smets1.structs import (
    Bytes,
    Const,
    Field,
    LVBytes,
    LVList,
    SizedBytes,
    Struct,
    binary,
    f64,
    u8,
    u16,
    u32,
    u64,
)

#: 2: Blocks carries the length of its data, and its CRC count just before the CRCs.
FRAME_VERSION = 2
NO_BLOCK = 0xFFFFFFFF
NO_VERSION = 0xFFFFFFFF
#: An execution time of 0 in an ACTIVATE frame means "now".
IMMEDIATE = 0.0
#: An execution time this far ahead cancels a pending activation, as DUIS uses a
#: far-future date (3000-01-01) to cancel.
CANCEL_AFTER_SECONDS = 100 * 365 * 86_400.0


def is_cancellation(execution_time: float, now: float) -> bool:
    return execution_time != IMMEDIATE and execution_time - now >= CANCEL_AFTER_SECONDS


class MessageType(enum.IntEnum):
    INITIATE = 0x01
    BLOCKS = 0x02
    QUERY = 0x03
    ACTIVATE = 0x04
    READ_VERSION = 0x05
    READ_REQUEST = 0x06
    STATUS = 0x81
    ACTIVATION = 0x82
    VERSION = 0x83
    READING = 0x84


def _type_mismatch(expected: MessageType, got: int) -> str:
    known = FRAME_TYPES.get(got)
    if known is None:
        return f"unknown message type 0x{got:02x}"
    return f"expected {expected.name}, got {known.TYPE.name}"


@binary(endian="<", error=WireError, section="header")
class Frame(Struct):
    """Fields shared by every frame. `Frame.deserialize` decodes a frame of any type."""

    VERSION: ClassVar[
        Annotated[int, u8, Const("expected frame version {expected}, got {got}", name="version")]
    ] = FRAME_VERSION
    TYPE: ClassVar[Annotated[MessageType, u8, Const(_type_mismatch, name="type")]]

    device_id: Annotated[int, u64]
    transfer_id: Annotated[int, u32]

    @classmethod
    def decode_at(cls, data: memoryview, offset: int = 0) -> tuple[Self, int]:
        # The base class has no type of its own: the type byte picks the class. Query's
        # layout is the header alone, so an unknown type decodes as far as the header,
        # which reports a short header, a wrong version or the unknown type, in that order.
        kind = FRAME_TYPES.get(data[offset + 1], Query) if len(data) > offset + 1 else Query
        return cast(tuple[Self, int], kind.decode_at(data, offset))


@binary(section="initiate")
class Initiate(Frame):
    """DCO → device: a transfer of `image_size` bytes in blocks of `block_size` begins."""

    TYPE = MessageType.INITIATE

    image_size: Annotated[int, u32]
    block_size: Annotated[int, u16]
    firmware_hash: Annotated[bytes, Bytes(32)]

    @property
    def block_count(self) -> int:
        return -(-self.image_size // self.block_size)


def _crc_of_data(frame: Blocks) -> int:
    return crc32(frame.data)


@binary(section="blocks", wire_order=("first_block", "run_crc", "crcs", "data"))
class Blocks(Frame):
    """DCO → device: consecutive blocks from `first_block`, each with a CRC-32, and the
    CRC-32 of the whole run.

    The run CRC lets a device check an intact run with one call instead of one per block;
    only when it disagrees does the device check block by block and keep the good ones.
    On the wire: first block u32, run CRC u32, count u16 and count × u32 CRCs, data length
    u32 and the data. The CRCs say where each block ends; `data` decodes as a view into
    the frame, not a copy.
    """

    TYPE = MessageType.BLOCKS

    first_block: Annotated[int, u32]
    crcs: Annotated[tuple[int, ...], LVList(u32, u16)]
    data: Annotated[bytes | memoryview, LVBytes(u32)]
    #: None until serialized (then computed from `data`), or when a run was cut up.
    run_crc: Annotated[int | None, u32, Field(fill=_crc_of_data)] = None

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
        crcs = tuple(crc32(view[i : i + block_size]) for i in range(0, len(view), block_size))
        return cls(device_id, transfer_id, first_block, crcs, data, crc32(view))


#: A BLOCKS frame up to its block CRCs: version, type, device, transfer, first block, run
#: CRC, block count (the layout `Blocks` declares; tests hold the two equal).
_BLOCKS_HEAD = struct.Struct("<BBQIIIH")
_U32 = struct.Struct("<I")


def blocks_body(crcs: Sequence[int], data: bytes | memoryview) -> bytes:
    """What follows the head in a BLOCKS frame (the block CRCs, the data's length and the
    data): the same for every device sent the run, so a sender builds it once."""
    return struct.pack(f"<{len(crcs)}I", *crcs) + _U32.pack(len(data)) + bytes(data)


def blocks_frame(
    device_id: int, transfer_id: int, first_block: int, run_crc: int, count: int, body: bytes
) -> bytes:
    """The BLOCKS frame `Blocks(...).serialize()` makes, from a `blocks_body` of `count`
    blocks: one copy of the run's bytes, not a packing of its CRCs each time."""
    return (
        _BLOCKS_HEAD.pack(
            FRAME_VERSION, MessageType.BLOCKS, device_id, transfer_id, first_block, run_crc, count
        )
        + body
    )


@binary()
class Query(Frame):
    """DCO → device: report the state of this transfer (answered by Status)."""

    TYPE = MessageType.QUERY


@binary(section="activate")
class Activate(Frame):
    """DCO → device: activate the image whose hash is `firmware_hash` at `execution_time`.

    `execution_time` is simulated Unix seconds; IMMEDIATE (0) means now.
    """

    TYPE = MessageType.ACTIVATE

    execution_time: Annotated[float, f64]
    firmware_hash: Annotated[bytes, Bytes(32)]


@binary()
class ReadVersion(Frame):
    """DCO → device: which firmware runs, and which is pending (SRV 11.2)."""

    TYPE = MessageType.READ_VERSION


@binary(section="read request")
class ReadRequest(Frame):
    """DCO → device: an ordinary service request (background traffic, issue 16), answered by
    a Reading with `data_bytes` bytes of data.

    `padding` stands for the rest of a real request (its command and signature): the frame
    is as long on the link as the request it stands for. On the wire: kind u8, data bytes
    u16, padding length u16 and the padding.
    """

    TYPE = MessageType.READ_REQUEST

    kind: Annotated[ReadKind, u8]
    data_bytes: Annotated[int, u16]
    padding: Annotated[bytes | memoryview, LVBytes(u16)] = b""


def _bitmap_bytes(block_count: int) -> int:
    return (block_count + 7) // 8


@binary(section="status")
class Status(Frame):
    """Device → DCO: transfer state, blocks held, the first missing block and the bitmap
    of held blocks (one bit a block, `block_count` bits)."""

    TYPE = MessageType.STATUS

    state: Annotated[DeviceState, u8]
    reason: Annotated[Reason, u8]
    received: Annotated[int, u32]
    first_missing: Annotated[int, u32]
    block_count: Annotated[int, u32]
    bitmap: Annotated[bytes, SizedBytes("block_count", _bitmap_bytes)] = b""

    @property
    def complete(self) -> bool:
        return self.first_missing == NO_BLOCK


@binary(section="activation")
class Activation(Frame):
    """Device → DCO: the outcome of an ACTIVATE (scheduled, active, failed, cancelled)."""

    TYPE = MessageType.ACTIVATION

    state: Annotated[DeviceState, u8]
    reason: Annotated[Reason, u8]
    running_version: Annotated[int, u32]
    at: Annotated[float, f64]


@binary(section="version")
class Version(Frame):
    """Device → DCO: the running firmware version, and the pending one (or NO_VERSION)."""

    TYPE = MessageType.VERSION

    running_version: Annotated[int, u32]
    pending_version: Annotated[int, u32]
    state: Annotated[DeviceState, u8]


@binary(section="reading")
class Reading(Frame):
    """Device → DCO: the answer to a ReadRequest, with the data read (kind u8, data
    length u16 and the data)."""

    TYPE = MessageType.READING

    kind: Annotated[ReadKind, u8]
    data: Annotated[bytes | memoryview, LVBytes(u16)] = b""


FRAME_TYPES: dict[int, type[Frame]] = {
    cls.TYPE: cls
    for cls in (
        Initiate,
        Blocks,
        Query,
        Activate,
        ReadVersion,
        ReadRequest,
        Status,
        Activation,
        Version,
        Reading,
    )
}

#: The shortest ReadRequest and Reading on the wire (no padding, no data): a background
#: request or answer is at least this long.
READ_REQUEST_MIN_BYTES = len(ReadRequest(0, 0, ReadKind.READ_REGISTERS, 0).serialize())
READING_MIN_BYTES = len(Reading(0, 0, ReadKind.READ_REGISTERS).serialize())


_ROUTE = Frame.LAYOUT.reader("device_id", "transfer_id")


def decode_prefix(data: bytes | memoryview) -> tuple[Frame, memoryview]:
    """Decode one frame from the front of `data`; return it and the bytes after it."""
    view = memoryview(data)
    # Frame.decode_at's dispatch, inline: this is the hot path.
    cls = FRAME_TYPES.get(view[1], Query) if len(view) > 1 else Query
    frame, end = cls.decode_at(view, 0)
    return frame, view[end:]


def decode(data: bytes | memoryview) -> Frame:
    """Decode a whole frame; trailing bytes are an error."""
    frame, rest = decode_prefix(data)
    if len(rest):
        raise WireError("frame", len(data) - len(rest), f"{len(rest)} unexpected trailing bytes")
    return frame


def route_key(payload: bytes | memoryview) -> tuple[int, int] | None:
    """(device id, transfer id) of a frame, read without decoding it; None if too short.

    What a reply is matched by: the fleet side of a sharded DCO remembers which worker
    sent each (device, transfer) and answers that worker (smets1.routing).
    """
    if len(payload) < _ROUTE.size:
        return None
    return cast(tuple[int, int], _ROUTE.unpack_from(payload))
