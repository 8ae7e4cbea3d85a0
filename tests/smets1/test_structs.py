"""Tests for smets1.structs: declared structs, both directions, errors that name the field."""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smets1.codes import DeviceState
from smets1.errors import DecodeError, WireError
from smets1.structs import (
    Bytes,
    Const,
    Field,
    Flag,
    Items,
    LVBytes,
    LVList,
    SizedBytes,
    Struct,
    Text,
    binary,
    f64,
    u8,
    u16,
    u32,
    u64,
)


class Options(enum.IntFlag):
    STAMP = 0x1
    RANGE = 0x2


def _even(value: int, _: Mapping[str, Any]) -> str | None:
    return None if value % 2 == 0 else f"expected an even number, got {value}"


def _fits(length: int, fields: Mapping[str, Any]) -> str | None:
    wanted = 4 + 2 * bool(fields["options"] & Options.RANGE)
    return None if length >= wanted else f"expected at least {wanted}, got {length}"


@binary(endian="<", error=WireError)
class Record(Struct):
    """Every kind of field, little-endian, one error per field."""

    MAGIC: ClassVar[Annotated[int, u16, Const("expected 0x{expected:04X}, got 0x{got:04X}")]] = (
        0xB00C
    )
    length: Annotated[int, u8, Field(check=_fits, check_after="options")]
    options: Annotated[Options, u8]
    state: Annotated[DeviceState, u8]
    even: Annotated[int, u32, Field(check=_even)]
    ratio: Annotated[float, f64]
    tag: Annotated[bytes, Bytes(3)]
    name: Annotated[str, Text(6)]
    stamp: Annotated[int | None, u64, Field(requires=Flag("options", Options.STAMP))] = None
    low: Annotated[int | None, u16, Field(requires=Flag("options", Options.RANGE))] = None
    high: Annotated[int | None, u16, Field(requires=Flag("options", Options.RANGE))] = None
    items: Annotated[tuple[int, ...], LVList(u16, u8)] = ()
    blob: Annotated[bytes | memoryview, LVBytes(u16)] = b""


def record(**changes: Any) -> Record:
    fields: dict[str, Any] = {
        "length": 8,
        "options": Options.STAMP | Options.RANGE,
        "state": DeviceState.RECEIVING,
        "even": 42,
        "ratio": 0.5,
        "tag": b"abc",
        "name": "héllo",
        "stamp": 2**63,
        "low": 1,
        "high": 0xFFFF,
        "items": (1, 2, 3),
        "blob": b"payload",
    }
    fields.update(changes)
    return Record(**fields)


# Offsets in a full record, field by field (the length prefix belongs to its field).
RECORD_FIELDS = [
    ("MAGIC", 0, 2),
    ("length", 2, 1),
    ("options", 3, 1),
    ("state", 4, 1),
    ("even", 5, 4),
    ("ratio", 9, 8),
    ("tag", 17, 3),
    ("name", 20, 6),
    ("stamp", 26, 8),
    ("low", 34, 2),
    ("high", 36, 2),
    ("items", 38, 1),  # the count
    ("items", 39, 6),
    ("blob", 45, 2),  # the length
    ("blob", 47, 7),
]


def equal(a: Struct, b: Struct) -> bool:
    """Field by field, with views compared by their bytes."""
    names = [f for f in a.__dataclass_fields__]  # type: ignore[attr-defined]
    norm = [
        (bytes(getattr(x, n)) if isinstance(getattr(x, n), memoryview) else getattr(x, n))
        for x in (a, b)
        for n in names
    ]
    return norm[: len(names)] == norm[len(names) :]


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
@pytest.mark.parametrize("trailing", [b"", b"\x00", b"xyz"])
def test_round_trip_leaves_trailing_bytes_of_the_same_type(kind: Any, trailing: bytes) -> None:
    original = record()
    data = original.serialize()
    assert len(data) == 54
    back, rest = Record.deserialize(kind(data + trailing))
    assert equal(back, original)
    assert isinstance(rest, kind) and bytes(rest) == trailing
    assert back.serialize() == data


def test_the_bytes_are_the_declared_layout() -> None:
    expected = struct.pack(
        "<HBBBId3s6sQHHB3HH7s",
        0xB00C,
        8,
        3,
        1,
        42,
        0.5,
        b"abc",
        "héllo".encode(),
        2**63,
        1,
        0xFFFF,
        3,
        1,
        2,
        3,
        7,
        b"payload",
    )
    assert record().serialize() == expected


def test_optional_fields_absent_when_their_flag_is_clear() -> None:
    short = record(options=Options(0), stamp=None, low=None, high=None, length=4)
    data = short.serialize()
    assert len(data) == 54 - 12
    back, _ = Record.deserialize(data)
    assert (back.stamp, back.low, back.high) == (None, None, None)
    only_stamp = record(options=Options.STAMP, low=None, high=None, length=4)
    back, _ = Record.deserialize(only_stamp.serialize())
    assert (back.stamp, back.low, back.high) == (2**63, None, None)


def test_decoded_values_have_their_declared_types() -> None:
    back, _ = Record.deserialize(record().serialize())
    assert back.options == Options.STAMP | Options.RANGE and isinstance(back.options, Options)
    assert back.state is DeviceState.RECEIVING
    assert isinstance(back.tag, bytes) and back.name == "héllo"
    assert back.items == (1, 2, 3) and isinstance(back.items, tuple)


def test_lvbytes_is_a_view_into_the_buffer_not_a_copy() -> None:
    buffer = bytearray(record(blob=b"0123456789").serialize())
    back, _ = Record.deserialize(memoryview(buffer))
    assert isinstance(back.blob, memoryview)
    buffer[-1] = ord("X")
    assert bytes(back.blob) == b"012345678X"


def test_unknown_enum_values_decode_as_undefined_members() -> None:
    data = bytearray(record().serialize())
    data[4] = 0xEE
    back, _ = Record.deserialize(bytes(data))
    assert back.state.name == "undefined_0xee" and int(back.state) == 0xEE


def test_text_that_is_not_utf8_survives_exactly() -> None:
    data = bytearray(record().serialize())
    data[20:26] = b"\xff\xfeok\x00\x00"
    back, _ = Record.deserialize(bytes(data))
    assert back.serialize() == bytes(data)


# --- errors name the field, its offset, and what was expected -------------------------------


@pytest.mark.parametrize("cut", range(54))
def test_truncation_at_every_offset_names_the_field_and_its_offset(cut: int) -> None:
    data = record().serialize()
    field, offset, size = next((f, o, s) for f, o, s in RECORD_FIELDS if cut < o + s)
    with pytest.raises(WireError) as caught:
        Record.deserialize(data[:cut])
    assert (caught.value.field, caught.value.offset) == (field, offset)
    assert str(caught.value) == (
        f"{field} at offset {offset}: expected at least {offset + size} bytes, got {cut}"
    )


def test_a_constant_is_checked_with_its_own_message() -> None:
    data = bytearray(record().serialize())
    data[0:2] = b"\x00\x01"
    with pytest.raises(WireError) as caught:
        Record.deserialize(bytes(data))
    assert str(caught.value) == "MAGIC at offset 0: expected 0xB00C, got 0x0100"


def test_a_check_runs_as_soon_as_its_field_is_read() -> None:
    # A wrong value early in a short buffer is reported as wrong, not as short.
    data = record(even=41).serialize()
    with pytest.raises(WireError) as caught:
        Record.deserialize(data[:10])
    assert str(caught.value) == "even at offset 5: expected an even number, got 41"
    with pytest.raises(WireError, match="even at offset 5"):
        Record.deserialize(data)


def test_a_check_after_a_later_field_runs_once_that_field_is_read() -> None:
    data = record(length=5).serialize()  # RANGE wants 6
    with pytest.raises(WireError) as caught:
        Record.deserialize(data[:4])
    assert str(caught.value) == "length at offset 2: expected at least 6, got 5"
    with pytest.raises(WireError) as caught:
        Record.deserialize(data[:3])  # options not read yet: a truncation
    assert caught.value.field == "options"


def test_decode_errors_are_decode_errors_and_pickle() -> None:
    import pickle

    with pytest.raises(DecodeError) as caught:
        Record.deserialize(b"")
    again = pickle.loads(pickle.dumps(caught.value))
    assert type(again) is WireError and str(again) == str(caught.value)


# --- what the declaration gives besides the two directions ----------------------------------


@binary(endian=">", error=WireError, truncated="expected {size} bytes, {left} left")
class Header(Struct):
    """Big-endian, all fixed, with optional fields: the shape of the OTA header."""

    SYNC: ClassVar[Annotated[int, u8, Const(name="sync")]] = 0x7E
    flags: Annotated[Options, u16]
    size: Annotated[int, u32]
    stamp: Annotated[int | None, u64, Field(requires=Flag("flags", Options.STAMP))] = None
    low: Annotated[int | None, u8, Field(requires=Flag("flags", Options.RANGE))] = None
    high: Annotated[int | None, u8, Field(requires=Flag("flags", Options.RANGE))] = None


def test_big_endian() -> None:
    header = Header(Options.RANGE, 0x01020304, None, 5, 6)
    assert header.serialize() == b"\x7e\x00\x02\x01\x02\x03\x04\x05\x06"
    assert Header.deserialize(header.serialize() + b"!") == (header, b"!")


def test_sizes_flags_and_presence_follow_from_the_declaration() -> None:
    layout = Header.LAYOUT
    assert [layout.size(flags=f) for f in (0, 1, 2, 3)] == [7, 15, 9, 17]
    assert layout.flags("flags", stamp=1, low=None) == Options.STAMP
    assert layout.flags("flags", low=1, high=2) == Options.RANGE
    assert layout.all_flags("flags") == 3
    layout.check_presence(Header(Options.STAMP, 0, 9))
    with pytest.raises(ValueError, match="flags 0x0001 disagrees with stamp"):
        layout.check_presence(Header(Options.STAMP, 0))
    with pytest.raises(ValueError, match="size must fit in 32 bits unsigned, got 4294967296"):
        layout.check_ranges(Header(Options(0), 2**32))
    assert layout.offset("size") == 3
    assert layout.reader("SYNC", "size").unpack(b"\x7e\x00\x02\x01\x02\x03\x04") == (
        0x7E,
        0x01020304,
    )


def test_the_truncation_message_is_the_structs_own() -> None:
    with pytest.raises(WireError) as caught:
        Header.deserialize(b"\x7e\x00\x01\x00\x00\x00\x00\x00")
    assert str(caught.value) == "stamp at offset 7: expected 8 bytes, 1 left"
    with pytest.raises(WireError, match=r"^sync at offset 0: expected 126, got 0$"):
        Header.deserialize(bytes(7))


@binary(error=WireError, section="head")
class Sectioned(Struct):
    """A section is read as one unit; a count elsewhere than just before its items."""

    count: Annotated[int, u8]
    flags: Annotated[int, u8]
    bits: Annotated[int, u16]
    values: Annotated[tuple[int, ...], Items(u16, count="count")]
    bitmap: Annotated[bytes, SizedBytes("bits", lambda n: (n + 7) // 8)]


def test_a_section_is_one_unit_and_sizes_come_from_earlier_fields() -> None:
    item = Sectioned(2, 1, 9, (7, 8), b"\xff\x01")
    data = item.serialize()
    assert data == b"\x02\x01\x09\x00\x07\x00\x08\x00\xff\x01"
    back, rest = Sectioned.deserialize(data + b"tail")
    assert (back, rest) == (item, b"tail")
    for cut, field, offset, end in [(3, "head", 0, 4), (5, "values", 4, 8), (9, "bitmap", 8, 10)]:
        with pytest.raises(WireError) as caught:
            Sectioned.deserialize(data[:cut])
        expected = f"{field} at offset {offset}: expected at least {end} bytes, got {cut}"
        assert str(caught.value) == expected


def test_serialize_refuses_a_length_its_field_disagrees_with() -> None:
    with pytest.raises(ValueError, match="bitmap is 1 long, bits 9 needs 2"):
        Sectioned(0, 1, 9, (), b"\xff").serialize()


def _crc(item: Filled) -> int:
    return sum(item.data) & 0xFF


@binary(error=WireError)
class Filled(Struct):
    data: Annotated[bytes, Bytes(2)]
    check: Annotated[int | None, u8, Field(fill=_crc)] = None


def test_fill_computes_a_value_left_none() -> None:
    assert Filled(b"\x01\x02").serialize() == b"\x01\x02\x03"
    assert Filled(b"\x01\x02", 9).serialize() == b"\x01\x02\x09"
    assert Filled.deserialize(b"\x01\x02\x03")[0] == Filled(b"\x01\x02", 3)


def test_declarations_that_cannot_work_are_refused_at_class_creation() -> None:
    with pytest.raises(TypeError, match="not before it"):

        @binary()
        class Backwards(Struct):
            data: Annotated[bytes, SizedBytes("size")]
            size: Annotated[int, u8]

    with pytest.raises(TypeError, match="Const"):

        @binary()
        class Loose(Struct):
            KIND: ClassVar[Annotated[int, u8]] = 1

    with pytest.raises(TypeError, match="wire_order"):

        @binary(wire_order=("a",))
        class Misordered(Struct):
            a: Annotated[int, u8]
            b: Annotated[int, u8]

    with pytest.raises(TypeError, match="on the wire"):

        @binary()
        class Unwired(Struct):
            a: Annotated[int, u8]
            b: int


# --- the generated decoder agrees with the reference walk -----------------------------------


@given(st.binary(max_size=80))
def test_generated_decoder_agrees_with_the_walk_on_any_bytes(data: bytes) -> None:
    for cls in (Record, Header, Sectioned):
        view = memoryview(data)
        try:
            values, end = cls.LAYOUT.walk(view, 0)
        except WireError as exc:
            with pytest.raises(WireError) as caught:
                cls.decode_at(view, 0)
            assert str(caught.value) == str(exc)
            continue
        obj, obj_end = cls.decode_at(view, 0)
        assert obj_end == end
        for name in obj.__dataclass_fields__:  # type: ignore[attr-defined]
            assert getattr(obj, name) == values[name]


@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from([*Options, Options(0), Options(3)]),
    st.binary(max_size=20),
)
def test_round_trip_any_values(size: int, flags: Options, trailing: bytes) -> None:
    header = Header(
        flags,
        size,
        7 if flags & Options.STAMP else None,
        *((1, 2) if flags & Options.RANGE else (None, None)),
    )
    data = header.serialize()
    assert len(data) == Header.LAYOUT.size(flags=flags)
    assert Header.deserialize(data + trailing) == (header, trailing)
