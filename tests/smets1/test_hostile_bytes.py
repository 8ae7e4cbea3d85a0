"""Hostile bytes for every decoder of the core: the OTA image parser, the wire frames and
the MQTT envelope and batch (issue 10).

Not round trips: arbitrary bytes, valid encodings cut short, valid encodings with a bit
flipped, and length fields pointing past the end or declaring gigabytes. For each:

* the only exception is the package's own (ImageError, WireError, EnvelopeError: the
  DecodeError tree), and it names a field and an offset inside the input;
* nothing is allocated according to a declared length: the peak allocation while
  decoding stays within a small multiple of the input (tracemalloc), whatever it claims.
"""

from __future__ import annotations

import math
import struct
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from smets1.codes import DeviceState, Reason
from smets1.errors import DecodeError, EnvelopeError, ImageError, WireError
from smets1.image import (
    FIXED_HEADER_BYTES,
    OtaHeader,
    parse_image,
)
from smets1.mqtt import (
    BATCH_MAGIC,
    ENVELOPE_BYTES,
    ENVELOPE_MAGIC,
    BatchEntry,
    Envelope,
    join_batch,
    split_batch,
)
from smets1.wire import (
    NO_BLOCK,
    Activate,
    Activation,
    Blocks,
    Frame,
    Initiate,
    Query,
    ReadVersion,
    Status,
    Version,
    decode,
    decode_prefix,
)
from tests.factories import make_image

#: Bytes a decoder may allocate besides a copy or two of its input: objects, small tuples.
ALLOCATION_SLACK_BYTES = 64 * 1024

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- valid encodings to start from ---------------------------------------------------------

SIGNED = make_image(300)  # sub-element body: image and signature elements
HASH = bytes(range(32))


def _raw_image() -> bytes:
    """A header and a raw body (the DCC sample's form), built by hand."""
    body = b"\x5a" * 200
    header = OtaHeader(
        header_version=0x0100,
        header_length=FIXED_HEADER_BYTES,
        field_control=0,  # type: ignore[arg-type]
        manufacturer_code=0x1234,
        image_type=1,
        file_version=2,
        stack_version=2,
        header_string="raw",
        total_image_size=FIXED_HEADER_BYTES + len(body),
    )
    return header.serialize() + body


RAW = _raw_image()
IMAGES = [SIGNED, RAW]

FRAMES: list[bytes] = [
    Initiate(1, 2, 1_000_000, 1024, HASH).serialize(),
    Blocks.build(1, 2, 7, bytes(range(256)) * 10, 1024).serialize(),
    Query(1, 2).serialize(),
    Activate(1, 2, 0.0, HASH).serialize(),
    ReadVersion(1, 2).serialize(),
    Status(1, 2, DeviceState.RECEIVING, Reason.NONE, 3, 4, 20, b"\xff\x0f\x00").serialize(),
    Activation(1, 2, DeviceState.ACTIVE, Reason.NONE, 5, 1e9).serialize(),
    Version(1, 2, 5, 6, DeviceState.ACTIVE).serialize(),
]

MESSAGES: list[bytes] = [
    join_batch(7, 9, [FRAMES[0]], 1.74e9),
    join_batch(7, 10, FRAMES[:4], 1.74e9 + 0.25),
]


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8 % len(out)] ^= 1 << (bit % 8)
    return bytes(out)


@contextmanager
def _bounded_allocation(data: bytes) -> Iterator[None]:
    """Fail if the block allocates more than two copies of `data` plus some slack."""
    tracemalloc.start()
    try:
        yield
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    limit = 2 * len(data) + ALLOCATION_SLACK_BYTES
    assert peak <= limit, f"decoding {len(data)} bytes allocated {peak} at peak (limit {limit})"


def _check_error(exc: DecodeError, data: bytes, kind: type[DecodeError]) -> None:
    assert isinstance(exc, kind), repr(exc)
    assert exc.field and isinstance(exc.field, str)
    assert 0 <= exc.offset <= len(data), (exc.offset, len(data))
    assert f"{exc.field} at offset {exc.offset}: " in str(exc)
    assert exc.message


# -- the image parser ----------------------------------------------------------------------


def _parse(data: bytes) -> None:
    try:
        image = parse_image(data)
    except DecodeError as exc:
        _check_error(exc, data, ImageError)
        return
    # What parsed is self-consistent: every span lies inside the file.
    assert image.header.total_image_size == len(data)
    start = image.manufacturer_image_offset
    assert 0 <= start <= start + len(image.manufacturer_image) <= len(data)


@FAST
@given(st.binary(max_size=600))
@example(b"")
@example(b"\x1e\xf1\xee\x0b")  # the magic alone
def test_image_arbitrary_bytes(data: bytes) -> None:
    _parse(data)


@FAST
@given(st.sampled_from(IMAGES), st.data())
def test_image_truncated(image: bytes, draw: st.DataObject) -> None:
    cut = draw.draw(st.integers(0, len(image) - 1))
    try:
        parse_image(image[:cut])
    except ImageError as exc:
        _check_error(exc, image[:cut], ImageError)
    else:
        pytest.fail(f"a file cut to {cut} of {len(image)} bytes parsed")


@FAST
@given(st.sampled_from(IMAGES), st.integers(min_value=0), st.integers(0, 3))
def test_image_bit_flips(image: bytes, bit: int, more: int) -> None:
    data = image
    for k in range(more + 1):
        data = _flip(data, bit + 7919 * k)
    _parse(data)


@FAST
@given(
    st.sampled_from(IMAGES),
    st.sampled_from(["header_length", "total_image_size", "element_length"]),
    st.integers(0, 0xFFFF_FFFF),
)
def test_image_length_fields_anywhere(image: bytes, field: str, value: int) -> None:
    """Every length the file declares, set to anything: past the end, huge, zero."""
    data = bytearray(image)
    if field == "header_length":
        struct.pack_into("<H", data, 6, value & 0xFFFF)
    elif field == "total_image_size":
        struct.pack_into("<I", data, OtaHeader.LAYOUT.offset("total_image_size"), value)
    else:  # the first sub-element's length (in a raw body: some body bytes)
        header_length = struct.unpack_from("<H", image, 6)[0]
        struct.pack_into("<I", data, header_length + 2, value)
    _parse(bytes(data))


@pytest.mark.parametrize("declared", [len(SIGNED) + 1, 2**31, 0xFFFF_FFFF])
def test_image_huge_declared_sizes_allocate_nothing_for_them(declared: int) -> None:
    data = bytearray(SIGNED)
    struct.pack_into("<I", data, OtaHeader.LAYOUT.offset("total_image_size"), declared)
    with _bounded_allocation(SIGNED), pytest.raises(ImageError) as err:
        parse_image(bytes(data))
    assert err.value.field == "total_image_size" and err.value.offset == 52
    assert f"header says {declared}, file has {len(SIGNED)} bytes" in err.value.message
    # A sub-element that claims 4 GiB: the body is then taken as raw, nothing reserved.
    data = bytearray(SIGNED)
    header_length = struct.unpack_from("<H", data, 6)[0]
    struct.pack_into("<I", data, header_length + 2, declared)
    with _bounded_allocation(SIGNED):
        image = parse_image(bytes(data))
    assert not image.subelements and image.signature is None


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=400), st.integers(0, 0xFFFF_FFFF))
def test_image_allocation_follows_the_input_not_its_claims(tail: bytes, claim: int) -> None:
    header_length = struct.unpack_from("<H", SIGNED, 6)[0]
    data = bytearray(SIGNED[:header_length]) + struct.pack("<HI", 0, claim) + tail
    struct.pack_into("<I", data, OtaHeader.LAYOUT.offset("total_image_size"), len(data))
    with _bounded_allocation(bytes(data)):
        _parse(bytes(data))


def test_image_errors_name_field_and_offset() -> None:
    cases: list[tuple[bytes, str, int]] = [
        (b"", "magic", 0),
        (b"\x00" * 60, "magic", 0),
        (SIGNED[:5], "header_version", 4),  # the magic checks out; then the cut
        (SIGNED[:10], "manufacturer_code", 10),
        (SIGNED[: FIXED_HEADER_BYTES - 1], "total_image_size", 52),
    ]
    for data, field, offset in cases:
        with pytest.raises(ImageError) as err:
            parse_image(data)
        assert (err.value.field, err.value.offset) == (field, offset), str(err.value)


# -- wire frames ---------------------------------------------------------------------------


def _decode(data: bytes) -> None:
    try:
        frame, rest = decode_prefix(data)
    except DecodeError as exc:
        _check_error(exc, data, WireError)
        return
    assert isinstance(frame, Frame)
    assert len(rest) < len(data) or not data
    try:
        decode(data)
    except DecodeError as exc:
        _check_error(exc, data, WireError)
        assert len(rest) and exc.field == "frame"


@FAST
@given(st.binary(max_size=300))
@example(b"")
@example(b"\x02")
@example(b"\x02\x02" + b"\x00" * 22 + b"\xff\xff")  # a Blocks header claiming 65,535 CRCs
def test_frames_arbitrary_bytes(data: bytes) -> None:
    _decode(data)


@FAST
@given(st.binary(max_size=120), st.sampled_from(sorted({f[1] for f in FRAMES})))
def test_frames_arbitrary_bodies_of_every_type(body: bytes, kind: int) -> None:
    _decode(bytes([2, kind]) + body)


@FAST
@given(st.sampled_from(FRAMES), st.data())
def test_frames_truncated(frame: bytes, draw: st.DataObject) -> None:
    cut = draw.draw(st.integers(0, len(frame) - 1))
    with pytest.raises(WireError) as err:
        decode_prefix(frame[:cut])
    _check_error(err.value, frame[:cut], WireError)


@FAST
@given(st.sampled_from(FRAMES), st.integers(min_value=0), st.integers(0, 3))
def test_frames_bit_flips(frame: bytes, bit: int, more: int) -> None:
    data = frame
    for k in range(more + 1):
        data = _flip(data, bit + 7919 * k)
    _decode(data)


BLOCKS = FRAMES[1]
STATUS = FRAMES[5]
_BLOCKS_COUNT_AT = 22  # u16 CRC count, after header (14), first block and run CRC
_STATUS_COUNT_AT = 24  # u32 block_count, after header, state, reason, received, missing


@pytest.mark.parametrize(
    ("frame", "at", "fmt", "value", "field"),
    [
        (BLOCKS, _BLOCKS_COUNT_AT, "<H", 0xFFFF, "crcs"),
        (STATUS, _STATUS_COUNT_AT, "<I", 0xFFFF_FFFF, "bitmap"),
        (STATUS, _STATUS_COUNT_AT, "<I", NO_BLOCK - 7, "bitmap"),
    ],
)
def test_frames_huge_declared_lengths_allocate_nothing_for_them(
    frame: bytes, at: int, fmt: str, value: int, field: str
) -> None:
    data = bytearray(frame)
    struct.pack_into(fmt, data, at, value)
    with _bounded_allocation(frame), pytest.raises(WireError) as err:
        decode(bytes(data))
    assert err.value.field == field
    assert err.value.offset == at + struct.calcsize(fmt)
    assert "expected at least" in err.value.message


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 0xFFFF_FFFF), st.binary(max_size=200))
def test_blocks_data_length_past_the_end(declared: int, data: bytes) -> None:
    """The length of a run's data, anything at all, against the bytes that follow."""
    head = Blocks(1, 2, 0, (), b"", 0).serialize()[:-4]  # up to the data length
    frame = head + struct.pack("<I", declared) + data
    with _bounded_allocation(frame):
        try:
            got = decode(frame)
        except WireError as exc:
            _check_error(exc, frame, WireError)
            assert exc.field in ("data", "frame")
            return
    assert isinstance(got, Blocks) and len(got.data) == declared == len(data)


# -- the MQTT envelope and batch -----------------------------------------------------------


def _split(payload: bytes) -> None:
    frames, error = split_batch(payload)
    if error is not None:
        _check_error(error, payload, EnvelopeError)
    # The frames are pieces of the payload, never more than it holds.
    assert sum(len(f) for f in frames) <= max(0, len(payload) - ENVELOPE_BYTES)


@FAST
@given(st.binary(max_size=300))
@example(b"")
@example(bytes([BATCH_MAGIC]) + b"\x00" * 16 + b"\xff\xff\xff\xff")
@example(bytes([ENVELOPE_MAGIC]) + b"\x00" * 8 + b"\x7f\xf8" + b"\x00" * 6)  # NaN sent_at
def test_envelope_arbitrary_bytes(payload: bytes) -> None:
    _split(payload)
    try:
        Envelope.deserialize(payload)
    except DecodeError as exc:
        _check_error(exc, payload, EnvelopeError)


@FAST
@given(st.sampled_from(MESSAGES), st.data())
def test_envelope_truncated(message: bytes, draw: st.DataObject) -> None:
    cut = draw.draw(st.integers(0, len(message) - 1))
    frames, error = split_batch(message[:cut])
    if cut < ENVELOPE_BYTES:
        assert frames == [] and error is not None and error.offset < ENVELOPE_BYTES
    elif message[0] == BATCH_MAGIC and error is None:
        # A cut exactly between entries leaves whole frames: a prefix of the batch.
        assert frames == FRAMES[: len(frames)]
    _split(message[:cut])


@FAST
@given(st.sampled_from(MESSAGES), st.integers(min_value=0), st.integers(0, 3))
def test_envelope_bit_flips(message: bytes, bit: int, more: int) -> None:
    data = message
    for k in range(more + 1):
        data = _flip(data, bit + 7919 * k)
    _split(data)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 0xFFFF_FFFF), st.binary(max_size=200))
def test_batch_entry_length_past_the_end(declared: int, rest: bytes) -> None:
    payload = Envelope(BATCH_MAGIC, 7, 9, 0.0).serialize() + struct.pack(">I", declared) + rest
    with _bounded_allocation(payload):
        frames, error = split_batch(payload)
    if declared > len(rest):
        assert frames == [] and error is not None
        assert (error.field, error.offset) == ("frame", ENVELOPE_BYTES + 4)
        assert f"expected at least {ENVELOPE_BYTES + 4 + declared} bytes" in error.message
    else:
        assert frames[0] == rest[:declared]


def test_unknown_envelope_magic_names_field_and_offset() -> None:
    frames, error = split_batch(b"\x42" + b"\x00" * 16 + FRAMES[2])
    assert frames == [] and error is not None
    assert (error.field, error.offset) == ("magic", 0)
    assert f"expected 0x{ENVELOPE_MAGIC:02X} or 0x{BATCH_MAGIC:02X}" in error.message


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_send_time_that_is_not_finite_names_field_and_offset(bad: float) -> None:
    payload = bytes([ENVELOPE_MAGIC]) + bytes(8) + struct.pack(">d", bad) + FRAMES[2]
    frames, error = split_batch(payload)
    assert frames == [] and error is not None
    assert (error.field, error.offset) == ("sent_at", 9)
    assert error.message == f"expected a finite simulated time, got {bad!r}"


@pytest.mark.parametrize("old", [0xE5, 0xE6])
def test_a_version_1_envelope_is_refused_by_name(old: int) -> None:
    """0xE5 and 0xE6 carried no send time: a receiver cannot tell how late they are."""
    frames, error = split_batch(bytes([old]) + bytes(8) + FRAMES[2])
    assert frames == [] and error is not None
    assert (error.field, error.offset) == ("magic", 0)
    assert error.message.endswith(f"got 0x{old:02X} (a version 1 envelope, without a send time)")


DECODERS: list[tuple[str, Callable[[bytes], Any]]] = [
    ("image", parse_image),
    ("frame", decode),
    ("envelope", lambda b: Envelope.deserialize(b)),
    ("batch entry", lambda b: BatchEntry.deserialize(b)),
]


@pytest.mark.parametrize(("name", "decoder"), DECODERS)
def test_memoryview_and_bytearray_inputs_behave_as_bytes(
    name: str, decoder: Callable[[bytes], Any]
) -> None:
    """A decoder given a bytearray or a memoryview (what the buses hand over) raises the
    same error as for bytes."""
    for data in (b"", b"\x00" * 3, b"\xff" * 70):
        errors = []
        for form in (bytes, bytearray, memoryview):
            try:
                decoder(form(data))  # type: ignore[arg-type]
                errors.append(None)
            except DecodeError as exc:
                errors.append(str(exc))
        assert len(set(errors)) == 1, (name, data, errors)
