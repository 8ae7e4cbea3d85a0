"""smets1.image against references it did not write: fixtures built by an independent
script (tests/smets1/files/make_fixtures.py) and zigpy's ZigBee OTA parser."""

from __future__ import annotations

import hashlib

import pytest

from smets1.image import (
    OTA_MAGIC,
    SIGNATURE_TAG,
    FieldControl,
    parse_image,
    seeded_body,
    verify_signature,
)
from smets1.signing import demo_private_key
from tests.smets1.image_files import DESTINATION, FILES, MANUFACTURER, build

# --- fixtures written independently (tests/smets1/files/make_fixtures.py) ------------------


def test_dcc_sample_like_fixture() -> None:
    data = (FILES / "dcc_sample_like.ota").read_bytes()
    assert hashlib.sha256(data).hexdigest() == (
        "c866adbe884be5499fb4716d369c493227e35a7726462c6ba8d1caea5f9a6c7b"
    )
    image = parse_image(data)
    header = image.header
    assert header.header_length == 60
    assert header.field_control == FieldControl.HARDWARE_VERSIONS
    assert (header.manufacturer_code, header.image_type, header.file_version) == (
        0x1037,
        0x0001,
        0x01020304,
    )
    assert header.stack_version == 2
    assert header.header_string == "DCC SMETS1 sample image"
    assert header.total_image_size == len(data) == 3060
    assert (header.min_hardware_version, header.max_hardware_version) == (0x0001, 0x00FF)
    assert header.security_credential_version is None
    assert header.upgrade_file_destination is None
    assert not image.subelements
    assert image.signature is None
    assert image.manufacturer_image_offset == 60
    assert image.firmware_hash == hashlib.sha256(data[60:]).digest()
    assert image.firmware_hash.hex() == (
        "d071fe0864e76263c94b7d7412a1d3127a54571ee1c02a2725a9cf4336ff6a10"
    )
    assert not verify_signature(image, demo_private_key(0x1037).public_key())
    assert header.serialize() == data[:60]


def test_independently_signed_fixture_verifies() -> None:
    data = (FILES / "signed_subelements.ota").read_bytes()
    image = parse_image(data)
    assert image.header.header_length == 69
    assert image.header.security_credential_version == 3
    assert image.header.upgrade_file_destination == DESTINATION
    assert (image.header.min_hardware_version, image.header.max_hardware_version) == (
        0x0102,
        0x0210,
    )
    assert image.subelements
    assert image.manufacturer_image_offset == 69 + 6
    assert len(image.manufacturer_image) == 1500
    assert verify_signature(image, demo_private_key(0x1037).public_key())
    assert not verify_signature(image, demo_private_key(0x1038).public_key())


# --- independent ZigBee OTA tooling ---------------------------------------------------------


def test_zigpy_parses_our_signed_image() -> None:
    zigpy_image = pytest.importorskip("zigpy.ota.image")
    body = seeded_body(100_000, seed=5)
    data = build(
        body,
        header_string="zigpy check",
        security_credential_version=1,
        upgrade_file_destination=DESTINATION,
        hardware_versions=(1, 2),
    )
    parsed, rest = zigpy_image.parse_ota_image(data)
    assert rest == b""
    assert type(parsed) is zigpy_image.OTAImage
    header = parsed.header
    assert header.upgrade_file_id == OTA_MAGIC
    assert header.header_length == 69
    assert header.manufacturer_id == MANUFACTURER
    assert header.image_type == 1
    assert header.file_version == 0x01020304
    assert header.image_size == len(data)
    assert header.security_credential_version == 1
    assert str(header.upgrade_file_destination).upper().replace(":", "-") == (
        "00-DB-12-34-56-78-90-A0"
    )
    assert (header.minimum_hardware_version, header.maximum_hardware_version) == (1, 2)
    assert header.serialize() == data[:69]
    tags = [int(element.tag_id) for element in parsed.subelements]
    assert tags == [0x0000, SIGNATURE_TAG]
    assert bytes(parsed.subelements[0].data) == body
    assert bytes(parsed.subelements[1].data) == parse_image(data).signature


def test_zigpy_parses_our_unsigned_subelement_image() -> None:
    zigpy_image = pytest.importorskip("zigpy.ota.image")
    data = build(b"fw" * 100, private_key=None, subelements=True)
    parsed, rest = zigpy_image.parse_ota_image(data)
    assert rest == b""
    assert [bytes(element.data) for element in parsed.subelements] == [b"fw" * 100]


def test_zigpy_reads_the_dcc_sample_header_as_we_do() -> None:
    zigpy_image = pytest.importorskip("zigpy.ota.image")
    data = (FILES / "dcc_sample_like.ota").read_bytes()
    header, rest = zigpy_image.OTAImageHeader.deserialize(data)
    ours = parse_image(data).header
    assert len(data) - len(rest) == ours.header_length == 60
    assert header.manufacturer_id == ours.manufacturer_code
    assert header.file_version == ours.file_version
    assert header.image_size == ours.total_image_size
    assert header.minimum_hardware_version == ours.min_hardware_version
    assert header.maximum_hardware_version == ours.max_hardware_version
