from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smets1.codes import DeviceState, Reason
from smets1.errors import WireError
from smets1.wire import (
    FRAME_TYPES,
    NO_BLOCK,
    Activate,
    Activation,
    Blocks,
    Initiate,
    Query,
    ReadVersion,
    Status,
    Version,
    decode,
    decode_prefix,
)

FRAMES = [
    Initiate(0x00DB120000000001, 7, 1_048_576, 1024, b"\x11" * 32),
    Blocks.build(5, 9, 3, bytes(range(256)) * 10, 1024),
    Query(1, 2),
    Activate(1, 2, 1_740_787_200.5, b"\x22" * 32),
    ReadVersion(1, 0),
    Status(1, 2, DeviceState.RECEIVING, Reason.NONE, 3, 4, 10, b"\x07\x00"),
    Activation(1, 2, DeviceState.ACTIVE, Reason.NONE, 0x02000000, 12.5),
    Version(1, 0, 0x02000000, 0xFFFFFFFF, DeviceState.ACTIVE),
]


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: type(f).__name__)
def test_round_trip_and_trailing_bytes(frame: object) -> None:
    data = frame.serialize()  # type: ignore[attr-defined]
    back = decode(data)
    if isinstance(frame, Blocks):
        assert isinstance(back, Blocks)
        assert (back.first_block, back.crcs, bytes(back.data)) == (
            frame.first_block,
            frame.crcs,
            bytes(frame.data),
        )
    else:
        assert back == frame
        _, rest = decode_prefix(data + b"xyz")
        assert bytes(rest) == b"xyz"
        with pytest.raises(WireError, match="trailing"):
            decode(data + b"xyz")


def test_every_type_code_is_unique() -> None:
    assert len(FRAME_TYPES) == 8
    assert {cls.TYPE for cls in FRAME_TYPES.values()} == set(FRAME_TYPES)


def test_truncated_frame_names_field_and_offset() -> None:
    data = Initiate(1, 2, 100, 10, b"\x00" * 32).serialize()
    with pytest.raises(WireError) as err:
        decode(data[:20])
    assert err.value.field == "initiate" and err.value.offset == 14
    assert "expected at least 52 bytes, got 20" in str(err.value)


def test_unknown_type_and_version_are_errors() -> None:
    with pytest.raises(WireError, match="unknown message type 0x09"):
        decode(bytes([1, 9]) + bytes(12))
    with pytest.raises(WireError, match="frame version 1, got 2"):
        decode(bytes([2, 1]) + bytes(12))


def test_unknown_state_and_reason_decode_as_undefined() -> None:
    raw = bytearray(Status(1, 2, DeviceState.IDLE, Reason.NONE, 0, NO_BLOCK, 0).serialize())
    raw[14] = 0xEE
    raw[15] = 0xEF
    back = decode(bytes(raw))
    assert isinstance(back, Status)
    assert back.state.name == "undefined_0xee" and int(back.reason) == 0xEF


@given(st.binary(min_size=1, max_size=5000), st.integers(1, 2048))
def test_block_crcs_cover_each_block(data: bytes, block_size: int) -> None:
    f = Blocks.build(1, 1, 0, data, block_size)
    assert len(f.crcs) == -(-len(data) // block_size)
    assert f.crcs[-1] == zlib.crc32(data[(len(f.crcs) - 1) * block_size :])
