from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smets1.codes import DeviceState, ReadKind, Reason
from smets1.errors import WireError
from smets1.wire import (
    FRAME_TYPES,
    FRAME_VERSION,
    NO_BLOCK,
    READ_REQUEST_MIN_BYTES,
    READING_MIN_BYTES,
    Activate,
    Activation,
    Blocks,
    Frame,
    Initiate,
    Query,
    Reading,
    ReadRequest,
    ReadVersion,
    Status,
    Version,
    blocks_body,
    blocks_frame,
    decode,
    decode_prefix,
    route_key,
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
    ReadRequest(0x00DB120000000001, 11, ReadKind.READ_PROFILE, 1_519, b"\x00" * 45),
    Reading(0x00DB120000000001, 11, ReadKind.READ_PROFILE, bytes(range(200))),
]


def same(a: Frame, b: Frame) -> bool:
    """Equal, with Blocks' data (a view after decoding) compared by its bytes."""
    if isinstance(a, Blocks) and isinstance(b, Blocks):
        return (a.device_id, a.transfer_id, a.first_block, a.crcs, bytes(a.data)) == (
            b.device_id,
            b.transfer_id,
            b.first_block,
            b.crcs,
            bytes(b.data),
        ) and (a.run_crc is None or b.run_crc is None or a.run_crc == b.run_crc)
    return a == b


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: type(f).__name__)
@pytest.mark.parametrize("trailing", [b"", b"\x00", b"xyz", bytes(FRAMES[0].serialize())])
def test_round_trip_and_trailing_bytes(frame: Frame, trailing: bytes) -> None:
    data = frame.serialize()
    assert same(decode(data), frame)
    back, rest = decode_prefix(data + trailing)
    assert same(back, frame) and bytes(rest) == trailing
    again, rest = type(frame).deserialize(data + trailing)
    assert same(again, frame) and rest == trailing
    any_type, _ = Frame.deserialize(memoryview(data + trailing))
    assert type(any_type) is type(frame)
    if trailing:
        with pytest.raises(WireError, match=f"{len(trailing)} unexpected trailing bytes"):
            decode(data + trailing)


def test_frames_back_to_back_decode_one_after_another() -> None:
    stream = b"".join(f.serialize() for f in FRAMES)
    got = []
    rest: bytes | memoryview = stream
    while len(rest):
        frame, rest = decode_prefix(rest)
        got.append(frame)
    assert len(got) == len(FRAMES)
    assert all(same(a, b) for a, b in zip(got, FRAMES, strict=True))


def test_blocks_carries_the_length_of_its_data_and_decodes_it_without_a_copy() -> None:
    frame = Blocks.build(5, 9, 3, bytes(range(256)) * 4, 256)
    data = bytearray(frame.serialize())
    # header, first block, run CRC, count and 4 CRCs, data length, data
    assert len(data) == 14 + 4 + 4 + 2 + 4 * 4 + 4 + 1024
    assert int.from_bytes(data[22:24], "little") == 4
    assert int.from_bytes(data[40:44], "little") == 1024
    back = decode(memoryview(data))
    assert isinstance(back, Blocks) and isinstance(back.data, memoryview)
    assert back.data[-1] == 0xFF
    data[-1] = 0x00
    assert back.data[-1] == 0x00  # the view follows the buffer: no copy was made


def test_the_frame_type_is_checked_by_the_class_that_decodes() -> None:
    data = Query(1, 2).serialize()
    with pytest.raises(WireError) as err:
        Initiate.deserialize(data)
    assert str(err.value) == "type at offset 1: expected INITIATE, got QUERY"


def test_route_key_reads_device_and_transfer_without_decoding() -> None:
    for frame in FRAMES:
        assert route_key(frame.serialize()) == (frame.device_id, frame.transfer_id)
    assert route_key(Query(7, 8).serialize()[:13]) is None


def test_every_type_code_is_unique() -> None:
    assert len(FRAME_TYPES) == 10
    assert {cls.TYPE for cls in FRAME_TYPES.values()} == set(FRAME_TYPES)


def test_truncated_frame_names_field_and_offset() -> None:
    data = Initiate(1, 2, 100, 10, b"\x00" * 32).serialize()
    with pytest.raises(WireError) as err:
        decode(data[:20])
    assert err.value.field == "initiate" and err.value.offset == 14
    assert "expected at least 52 bytes, got 20" in str(err.value)


def test_unknown_type_and_version_are_errors() -> None:
    with pytest.raises(WireError, match="unknown message type 0x09"):
        decode(bytes([FRAME_VERSION, 9]) + bytes(12))
    with pytest.raises(WireError, match=f"frame version {FRAME_VERSION}, got {FRAME_VERSION + 1}"):
        decode(bytes([FRAME_VERSION + 1, 1]) + bytes(12))


def test_a_short_header_is_reported_before_its_contents() -> None:
    with pytest.raises(WireError) as err:
        decode(bytes([FRAME_VERSION + 1, 9, 0]))
    assert str(err.value) == "header at offset 0: expected at least 14 bytes, got 3"


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: type(f).__name__)
def test_every_cut_of_every_frame_names_a_field_within_it(frame: Frame) -> None:
    data = frame.serialize()
    for cut in range(len(data)):
        with pytest.raises(WireError) as err:
            decode(data[:cut])
        assert err.value.offset <= cut
        assert f"got {cut}" in str(err.value)


# --- hostile bytes: a WireError or a frame, never anything else -----------------------------

frame_bytes = st.sampled_from([f.serialize() for f in FRAMES])


@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_wire_error(data: bytes) -> None:
    try:
        decode(data)
    except WireError:
        pass


@given(st.sampled_from(sorted(FRAME_TYPES)), st.binary(max_size=200))
def test_random_bodies_decode_whole_or_raise_wire_error(mtype: int, body: bytes) -> None:
    raw = bytes([FRAME_VERSION, mtype]) + body
    try:
        frame = decode(raw)
    except WireError as exc:
        assert 0 <= exc.offset <= len(raw)
        return
    assert type(frame) is FRAME_TYPES[mtype]
    assert len(frame.serialize()) == len(raw)


@given(frame_bytes, st.data())
def test_flipped_and_cut_frames_decode_or_raise_wire_error(
    data: bytes, draw: st.DataObject
) -> None:
    raw = bytearray(data)
    for _ in range(draw.draw(st.integers(1, 4))):
        at = draw.draw(st.integers(0, len(raw) - 1))
        raw[at] = draw.draw(st.integers(0, 255))
    cut = draw.draw(st.integers(0, len(raw) + 3))
    raw = raw[:cut] + bytes(max(0, cut - len(raw)))
    try:
        frame, rest = decode_prefix(bytes(raw))
    except WireError as exc:
        assert 0 <= exc.offset <= len(raw)
        return
    assert len(frame.serialize()) + len(rest) == len(raw)


@given(
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.binary(max_size=3000),
    st.integers(1, 1024),
    st.binary(max_size=16),
)
def test_blocks_round_trip_with_trailing_bytes(
    device: int, transfer: int, first: int, data: bytes, block_size: int, trailing: bytes
) -> None:
    frame = Blocks.build(device, transfer, first, data, block_size)
    back, rest = decode_prefix(frame.serialize() + trailing)
    assert same(back, frame) and bytes(rest) == trailing


@given(st.integers(0, 300), st.binary(max_size=8))
def test_status_bitmap_follows_the_block_count(count: int, trailing: bytes) -> None:
    bitmap = bytes(range((count + 7) // 8))
    frame = Status(1, 2, DeviceState.RECEIVING, Reason.NONE, 0, 0, count, bitmap)
    back, rest = decode_prefix(frame.serialize() + trailing)
    assert back == frame and bytes(rest) == trailing
    with pytest.raises(ValueError, match="bitmap"):
        Status(1, 2, DeviceState.RECEIVING, Reason.NONE, 0, 0, count + 8, bitmap).serialize()


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


def test_read_frames_are_as_long_as_their_padding_and_data_say() -> None:
    request = ReadRequest(1, 2, ReadKind.READ_REGISTERS, 79, bytes(45))
    answer = Reading(1, 2, ReadKind.READ_REGISTERS, bytes(79))
    # header, kind, data bytes, padding length and padding; header, kind, data length, data
    assert len(request.serialize()) == READ_REQUEST_MIN_BYTES + 45 == 14 + 1 + 2 + 2 + 45
    assert len(answer.serialize()) == READING_MIN_BYTES + 79 == 14 + 1 + 2 + 79
    back = decode(request.serialize())
    assert (
        isinstance(back, ReadRequest) and back.data_bytes == 79 and bytes(back.padding) == bytes(45)
    )


@given(
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 0xFF),
    st.binary(max_size=2000),
    st.binary(max_size=16),
)
def test_read_frames_round_trip_with_trailing_bytes(
    device: int, transfer: int, kind: int, data: bytes, trailing: bytes
) -> None:
    for frame in (
        ReadRequest(device, transfer, ReadKind(kind), len(data), data),
        Reading(device, transfer, ReadKind(kind), data),
    ):
        back, rest = decode_prefix(frame.serialize() + trailing)
        assert back == frame and bytes(rest) == trailing
        assert decode(frame.serialize()) == frame
        if trailing:
            with pytest.raises(WireError, match=f"{len(trailing)} unexpected trailing bytes"):
                decode(frame.serialize() + trailing)


def test_an_unknown_read_kind_decodes_as_undefined() -> None:
    raw = bytearray(Reading(1, 2, ReadKind.READ_REGISTERS, b"ab").serialize())
    raw[14] = 0x7E
    back = decode(bytes(raw))
    assert isinstance(back, Reading) and back.kind.name == "undefined_0x7e"


@given(
    device_id=st.integers(0, 2**64 - 1),
    transfer_id=st.integers(0, 2**32 - 1),
    first_block=st.integers(0, 2**32 - 1),
    run_crc=st.integers(0, 2**32 - 1),
    crcs=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=70),
    data=st.binary(max_size=3000),
)
def test_a_frame_from_a_prebuilt_body_is_the_frame_blocks_serializes(
    device_id: int,
    transfer_id: int,
    first_block: int,
    run_crc: int,
    crcs: list[int],
    data: bytes,
) -> None:
    frame = Blocks(device_id, transfer_id, first_block, tuple(crcs), data, run_crc)
    body = blocks_body(crcs, memoryview(data))
    built = blocks_frame(device_id, transfer_id, first_block, run_crc, len(crcs), body)
    assert built == frame.serialize()
    assert decode(built) == frame
