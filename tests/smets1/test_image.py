"""Tests for smets1.image: the OTA file format, its parser, its signature, its summary."""

from __future__ import annotations

import hashlib
import pickle
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smets1.errors import Smets1Error
from smets1.eui64 import format_eui64
from smets1.image import (
    DEFAULT_BLOCK_BYTES,
    LARGE_IMAGE_BYTES,
    OTA_MAGIC,
    SIGNATURE_TAG,
    FieldControl,
    ImageError,
    OtaHeader,
    OtaImage,
    header_length_for,
    image_summary,
    parse_image,
    seeded_body,
    signed_message,
    verify_signature,
)
from smets1.signing import (
    demo_private_key,
    generate_private_key,
)
from tests.smets1.image_files import DESTINATION, MANUFACTURER, build


def header_with(
    *,
    security_credential_version: int | None = None,
    upgrade_file_destination: int | None = None,
    hardware_versions: tuple[int, int] | None = None,
    header_string: str = "",
    total_image_size: int = 1000,
) -> OtaHeader:
    fc = FieldControl(0)
    if security_credential_version is not None:
        fc |= FieldControl.SECURITY_CREDENTIAL_VERSION
    if upgrade_file_destination is not None:
        fc |= FieldControl.DEVICE_SPECIFIC_FILE
    if hardware_versions is not None:
        fc |= FieldControl.HARDWARE_VERSIONS
    low, high = hardware_versions if hardware_versions is not None else (None, None)
    return OtaHeader(
        header_version=0x0100,
        header_length=header_length_for(fc),
        field_control=fc,
        manufacturer_code=MANUFACTURER,
        image_type=7,
        file_version=0xDEADBEEF,
        stack_version=2,
        header_string=header_string,
        total_image_size=total_image_size,
        security_credential_version=security_credential_version,
        upgrade_file_destination=upgrade_file_destination,
        min_hardware_version=low,
        max_hardware_version=high,
    )


# --- header round trips ---------------------------------------------------------------------

header_strings = st.text(max_size=32).filter(
    lambda s: len(s.encode("utf-8")) <= 32 and not s.endswith("\x00")
)


@given(
    security_credential_version=st.none() | st.integers(0, 0xFF),
    upgrade_file_destination=st.none() | st.integers(0, 2**64 - 1),
    hardware_versions=st.none() | st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
    header_string=header_strings,
    total_image_size=st.integers(0, 2**32 - 1),
    trailing=st.binary(max_size=40),
)
def test_header_round_trip_with_each_optional_field(
    security_credential_version: int | None,
    upgrade_file_destination: int | None,
    hardware_versions: tuple[int, int] | None,
    header_string: str,
    total_image_size: int,
    trailing: bytes,
) -> None:
    header = header_with(
        security_credential_version=security_credential_version,
        upgrade_file_destination=upgrade_file_destination,
        hardware_versions=hardware_versions,
        header_string=header_string,
        total_image_size=total_image_size,
    )
    raw = header.serialize()
    assert len(raw) == header.header_length
    parsed, rest = OtaHeader.deserialize(raw + trailing)
    assert parsed == header
    assert rest == trailing
    assert parsed.serialize() == raw


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_header_deserialize_returns_rest_of_the_same_type(kind: Any) -> None:
    raw = header_with(hardware_versions=(1, 2)).serialize()
    parsed, rest = OtaHeader.deserialize(kind(raw + b"xyz"))
    assert parsed.header_length == 60
    assert isinstance(rest, kind)
    assert bytes(rest) == b"xyz"


def test_header_serializes_to_the_zigbee_layout() -> None:
    header = header_with(
        security_credential_version=3,
        upgrade_file_destination=DESTINATION,
        hardware_versions=(0x0102, 0x0210),
        header_string="abc",
        total_image_size=0x11223344,
    )
    expected = struct.pack(
        "<IHHHHHIH32sIBQHH",
        OTA_MAGIC,
        0x0100,
        69,
        0x0007,
        MANUFACTURER,
        7,
        0xDEADBEEF,
        2,
        b"abc" + b"\x00" * 29,
        0x11223344,
        3,
        DESTINATION,
        0x0102,
        0x0210,
    )
    assert header.serialize() == expected


def test_header_string_that_is_not_utf8_survives_exactly() -> None:
    raw = bytearray(header_with().serialize())
    raw[20:24] = b"\xff\xfeok"
    parsed, _ = OtaHeader.deserialize(bytes(raw))
    assert parsed.serialize() == bytes(raw)


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"header_length": 57}, "header_length"),
        ({"field_control": FieldControl.HARDWARE_VERSIONS}, "min_hardware_version"),
        ({"field_control": FieldControl(0x0008)}, "reserved"),
        ({"header_string": "x" * 33}, "header_string"),
        ({"header_string": "padded\x00"}, "NUL"),
        ({"manufacturer_code": 0x10000}, "manufacturer_code"),
        ({"file_version": -1}, "file_version"),
    ],
)
def test_header_constructor_refuses_what_would_not_parse(
    changes: dict[str, object], needle: str
) -> None:
    fields = {
        "header_version": 0x0100,
        "header_length": 56,
        "field_control": FieldControl(0),
        "manufacturer_code": 1,
        "image_type": 1,
        "file_version": 1,
        "stack_version": 2,
        "header_string": "",
        "total_image_size": 56,
    }
    fields.update(changes)
    with pytest.raises(ValueError, match=needle):
        OtaHeader(**fields)  # type: ignore[arg-type]


# --- header errors name field and offset ------------------------------------------------------

ALL_OPTIONAL = build(
    b"",
    private_key=None,
    security_credential_version=1,
    upgrade_file_destination=DESTINATION,
    hardware_versions=(1, 2),
)


@pytest.mark.parametrize(
    ("cut", "field", "offset"),
    [
        (0, "magic", 0),
        (3, "magic", 0),
        (5, "header_version", 4),
        (7, "header_length", 6),
        (9, "field_control", 8),
        (11, "manufacturer_code", 10),
        (13, "image_type", 12),
        (17, "file_version", 14),
        (19, "stack_version", 18),
        (51, "header_string", 20),
        (55, "total_image_size", 52),
        (56, "security_credential_version", 56),
        (64, "upgrade_file_destination", 57),
        (66, "min_hardware_version", 65),
        (68, "max_hardware_version", 67),
    ],
)
def test_truncated_header_names_the_cut_field(cut: int, field: str, offset: int) -> None:
    with pytest.raises(ImageError) as caught:
        parse_image(ALL_OPTIONAL[:cut])
    assert (caught.value.field, caught.value.offset) == (field, offset)
    assert str(caught.value).startswith(f"{field} at offset {offset}: expected ")
    assert "left" in str(caught.value)


def patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def test_wrong_magic() -> None:
    with pytest.raises(ImageError) as caught:
        parse_image(patched(build(), 0, "<I", 0x12345678))
    assert str(caught.value) == "magic at offset 0: expected 0x0BEEF11E, got 0x12345678"


def test_wrong_magic_is_reported_before_truncation() -> None:
    with pytest.raises(ImageError, match=r"^magic at offset 0: expected 0x0BEEF11E"):
        parse_image(b"PK\x03\x04 not an image")


def test_wrong_header_version() -> None:
    with pytest.raises(ImageError) as caught:
        parse_image(patched(build(), 4, "<H", 0x0200))
    assert str(caught.value) == "header_version at offset 4: expected 0x0100, got 0x0200"


def test_header_length_disagreeing_with_field_control() -> None:
    data = build(hardware_versions=(1, 2))
    with pytest.raises(ImageError) as caught:
        parse_image(patched(data, 6, "<H", 58))
    assert str(caught.value) == (
        "header_length at offset 6: field control 0x0004 announces 60 bytes, header says 58"
    )


def test_reserved_field_control_bit() -> None:
    with pytest.raises(ImageError) as caught:
        parse_image(patched(build(), 8, "<H", 0x0008))
    assert (caught.value.field, caught.value.offset) == ("field_control", 8)
    assert "0x0008" in caught.value.message


@pytest.mark.parametrize("delta", [-10, -1, 1, 10])
def test_total_image_size_disagreeing_with_file_length(delta: int) -> None:
    data = build(seeded_body(1_048_576))
    cut = data[:delta] if delta < 0 else data + b"\x00" * delta
    with pytest.raises(ImageError) as caught:
        parse_image(cut)
    assert str(caught.value) == (
        f"total_image_size at offset 52: header says {len(data)}, file has {len(cut)} bytes"
    )


def test_image_error_is_a_smets1_error_and_pickles() -> None:
    error = ImageError("magic", 0, "expected 0x0BEEF11E, got 0x00000000")
    assert isinstance(error, Smets1Error)
    again = pickle.loads(pickle.dumps(error))
    assert (again.field, again.offset, again.message, str(again)) == (
        error.field,
        error.offset,
        error.message,
        str(error),
    )


# --- body forms -----------------------------------------------------------------------------


def test_signed_image_is_in_subelement_form() -> None:
    body = seeded_body(5000, seed=3)
    data = build(body)
    image = parse_image(data)
    assert image.subelements
    assert bytes(image.manufacturer_image) == body
    assert image.manufacturer_image_offset == 56 + 6
    assert data[image.manufacturer_image_offset :][: len(body)] == body
    assert image.signature is not None and len(image.signature) == 64
    assert image.firmware_hash == hashlib.sha256(body).digest()
    assert image.header_bytes == data[:56]
    # tag 0x0000 and the signature tag, as other tools read them
    assert struct.unpack_from("<HI", data, 56) == (0x0000, len(body))
    assert struct.unpack_from("<HI", data, 62 + len(body)) == (SIGNATURE_TAG, 64)


def test_unsigned_image_has_a_raw_body_like_the_dcc_sample() -> None:
    body = seeded_body(5000, seed=3)
    data = build(body, private_key=None)
    assert data[56:] == body
    image = parse_image(data)
    assert not image.subelements
    assert image.signature is None
    assert bytes(image.manufacturer_image) == body
    assert image.manufacturer_image_offset == 56
    assert image.firmware_hash == hashlib.sha256(body).digest()


def test_unsigned_image_in_subelement_form_on_request() -> None:
    body = b"abc" * 10
    image = parse_image(build(body, private_key=None, subelements=True))
    assert image.subelements and image.signature is None
    assert bytes(image.manufacturer_image) == body


def test_empty_body() -> None:
    image = parse_image(build(b"", private_key=None))
    assert not image.subelements
    assert image.firmware_hash == hashlib.sha256(b"").digest()
    assert image.blocks() == 1


def raw_with_body(body: bytes) -> bytes:
    return build(body, private_key=None)


def element(tag: int, data: bytes) -> bytes:
    return struct.pack("<HI", tag, len(data)) + data


@pytest.mark.parametrize(
    ("body", "form", "image_data"),
    [
        # unknown tags are skipped, tag 0 found wherever it is
        (element(0x0003, b"mic!") + element(0x0000, b"fw") + element(0xF0A1, b"s"), True, b"fw"),
        # a valid chain without tag 0x0000 is raw
        (element(0x0004, b"picture"), False, None),
        # a chain that stops short of the end of the file is raw
        (element(0x0000, b"fw") + b"\x01\x02\x03", False, None),
        # a length running past the end of the file is raw
        (struct.pack("<HI", 0x0000, 100) + b"short", False, None),
        # two upgrade images: which one to trust would be a guess, so raw
        (element(0x0000, b"a") + element(0x0000, b"b"), False, None),
        # two signatures: raw
        (element(0x0000, b"a") + element(0xF0A1, b"s") + element(0xF0A1, b"t"), False, None),
        # all zeros: empty tag-0 elements repeated, raw
        (b"\x00" * 4096, False, None),
    ],
)
def test_subelement_form_is_decided_strictly(
    body: bytes, form: bool, image_data: bytes | None
) -> None:
    image = parse_image(raw_with_body(body))
    assert image.subelements is form
    expected = image_data if form else body
    assert bytes(image.manufacturer_image) == expected
    assert image.firmware_hash == hashlib.sha256(expected).digest()


def test_manufacturer_image_is_a_view_not_a_copy() -> None:
    buffer = bytearray(raw_with_body(b"\x11" * 100))
    image = parse_image(buffer)
    buffer[56] = 0x22
    assert image.manufacturer_image[0] == 0x22


def test_parse_accepts_bytes_bytearray_and_memoryview() -> None:
    data = build()
    images = [parse_image(kind(data)) for kind in (bytes, bytearray, memoryview)]
    assert len({image.firmware_hash for image in images}) == 1
    assert images[0] == images[2]


# --- size class and blocks ------------------------------------------------------------------


@pytest.mark.parametrize(("total", "large"), [(750_000, False), (750_001, True)])
def test_large_boundary_is_strictly_over_750000(total: int, large: bool) -> None:
    data = raw_with_body(seeded_body(total - 56))
    image = parse_image(data)
    assert image.size_bytes == len(data) == total
    assert image.is_large() is large
    assert image.is_large(threshold=total) is False
    assert image.is_large(threshold=total - 1) is True
    assert LARGE_IMAGE_BYTES == 750_000


@pytest.mark.parametrize(
    ("total", "block_size", "blocks"),
    [(56, 1024, 1), (1024, 1024, 1), (1025, 1024, 2), (750_000, 1024, 733), (2048, 512, 4)],
)
def test_blocks(total: int, block_size: int, blocks: int) -> None:
    image = parse_image(raw_with_body(b"\x01" * (total - 56)))
    assert image.blocks(block_size) == blocks
    assert DEFAULT_BLOCK_BYTES == 1024


def test_blocks_refuses_a_zero_block_size() -> None:
    with pytest.raises(ValueError, match="block_size"):
        parse_image(build()).blocks(0)


# --- signatures -----------------------------------------------------------------------------


def test_signed_message_is_header_then_firmware_hash() -> None:
    body = b"payload" * 50
    image = parse_image(build(body, hardware_versions=(3, 9)))
    assert signed_message(image) == image.header_bytes + hashlib.sha256(body).digest()
    assert len(image.header_bytes) == 60


def test_signature_verifies_with_the_right_key() -> None:
    image = parse_image(build())
    public_key = demo_private_key(MANUFACTURER).public_key()
    assert verify_signature(image, public_key)
    assert verify_signature(image, public_key, firmware_hash=image.firmware_hash)


def test_signature_with_a_precomputed_wrong_hash_fails() -> None:
    image = parse_image(build())
    public_key = demo_private_key(MANUFACTURER).public_key()
    assert not verify_signature(image, public_key, firmware_hash=b"\x00" * 32)


def test_tampered_body_fails() -> None:
    data = bytearray(build(seeded_body(4096)))
    data[56 + 6 + 2000] ^= 0x01
    assert not verify_signature(parse_image(data), demo_private_key(MANUFACTURER).public_key())


@pytest.mark.parametrize(
    ("offset", "fmt", "value"),
    [(12, "<H", 0x0002), (14, "<I", 0x01020305), (20, "<B", ord("X")), (58, "<H", 0x00FF)],
)
def test_tampered_header_fails(offset: int, fmt: str, value: int) -> None:
    data = build(hardware_versions=(1, 2))
    image = parse_image(patched(data, offset, fmt, value))
    assert not verify_signature(image, demo_private_key(MANUFACTURER).public_key())


def test_tampered_signature_fails() -> None:
    data = bytearray(build())
    data[-1] ^= 0x80
    assert not verify_signature(parse_image(data), demo_private_key(MANUFACTURER).public_key())


def test_wrong_key_fails() -> None:
    image = parse_image(build())
    assert not verify_signature(image, demo_private_key(MANUFACTURER + 1).public_key())
    assert not verify_signature(image, generate_private_key().public_key())


def test_unsigned_image_does_not_verify() -> None:
    for data in (build(private_key=None), build(private_key=None, subelements=True)):
        assert not verify_signature(parse_image(data), demo_private_key(MANUFACTURER).public_key())


def test_signature_element_of_the_wrong_length_fails_without_raising() -> None:
    body = b"fw"
    image = parse_image(raw_with_body(element(0x0000, body) + element(SIGNATURE_TAG, b"x" * 63)))
    assert image.subelements and image.signature == b"x" * 63
    assert not verify_signature(image, demo_private_key(MANUFACTURER).public_key())


def test_build_refuses_a_signature_on_a_raw_body() -> None:
    with pytest.raises(ValueError, match="sub-element"):
        build(subelements=False)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"hardware_versions": (5, 4)}, "hardware_versions"),
        ({"manufacturer_code": 0x10000}, "manufacturer_code"),
        ({"header_string": "é" * 17}, "header_string"),
        ({"security_credential_version": 256}, "security_credential_version"),
    ],
)
def test_build_refuses_values_that_do_not_fit(overrides: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        build(**overrides)


# --- summary and seeded bodies --------------------------------------------------------------

SUMMARY_KEYS = [
    "header_length",
    "field_control",
    "manufacturer_code",
    "image_type",
    "file_version",
    "stack_version",
    "header_string",
    "total_image_size",
    "security_credential_version",
    "upgrade_file_destination",
    "min_hardware_version",
    "max_hardware_version",
    "size_bytes",
    "sha256",
    "firmware_hash",
    "large",
    "blocks",
    "block_size",
    "body_form",
    "signed",
]


def test_summary_of_a_signed_image() -> None:
    body = seeded_body(800_000, seed=9)
    data = build(
        body,
        header_string="SMETS1 ESME v1.2.3",
        security_credential_version=2,
        upgrade_file_destination=DESTINATION,
        hardware_versions=(0x0100, 0x01FF),
    )
    summary = image_summary(data, block_size=4096)
    assert list(summary) == SUMMARY_KEYS
    assert summary == {
        "header_length": 69,
        "field_control": 7,
        "manufacturer_code": MANUFACTURER,
        "image_type": 1,
        "file_version": 0x01020304,
        "stack_version": 2,
        "header_string": "SMETS1 ESME v1.2.3",
        "total_image_size": len(data),
        "security_credential_version": 2,
        "upgrade_file_destination": "00-DB-12-34-56-78-90-A0",
        "min_hardware_version": 0x0100,
        "max_hardware_version": 0x01FF,
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "firmware_hash": hashlib.sha256(body).hexdigest(),
        "large": True,
        "blocks": -(-len(data) // 4096),
        "block_size": 4096,
        "body_form": "subelements",
        "signed": True,
    }


def test_summary_of_a_raw_image_and_a_custom_threshold() -> None:
    summary = image_summary(build(b"x" * 1000, private_key=None), large_threshold=1000)
    assert summary["body_form"] == "raw"
    assert summary["signed"] is False
    assert summary["large"] is True
    assert summary["upgrade_file_destination"] is None
    assert summary["min_hardware_version"] is None


def test_summary_escapes_a_header_string_that_is_not_utf8() -> None:
    data = bytearray(build(private_key=None))
    data[20:23] = b"a\xffb"
    assert image_summary(bytes(data))["header_string"] == "a\\xffb"


def test_format_eui64() -> None:
    assert format_eui64(DESTINATION) == "00-DB-12-34-56-78-90-A0"
    assert format_eui64(0) == "00-00-00-00-00-00-00-00"


def test_seeded_body_is_deterministic() -> None:
    assert seeded_body(0) == b""
    a = seeded_body(100_000, seed=1)
    assert len(a) == 100_000
    assert a == seeded_body(100_000, seed=1)
    assert a != seeded_body(100_000, seed=2)
    assert seeded_body(10, seed=1) == a[:10]
    assert isinstance(parse_image(build(a)), OtaImage)
