"""The firmware image: the ZigBee OTA upgrade file that GBCS reuses for smart-meter images.

File layout (all integers little-endian, offsets in bytes)::

    0   magic                        u32   0x0BEEF11E
    4   header_version               u16   0x0100
    6   header_length                u16   56 + the optional fields below
    8   field_control                u16   bit0, bit1, bit2 announce the optional fields
    10  manufacturer_code            u16
    12  image_type                   u16
    14  file_version                 u32
    18  stack_version                u16   2 = ZigBee PRO
    20  header_string                32 bytes, UTF-8, NUL padded
    52  total_image_size             u32   the whole file, header included
    56  security_credential_version  u8    if bit0
        upgrade_file_destination     u64   if bit1 (an EUI-64)
        min_hardware_version         u16   if bit2
        max_hardware_version         u16   if bit2
    header_length: body

The body takes one of two forms:

* **sub-elements** (what `build_image` writes when it signs): a run of ``tag u16, length u32,
  data`` that ends exactly at the end of the file, with exactly one tag 0x0000 "upgrade image"
  holding the manufacturer image and at most one `SIGNATURE_TAG` (0xF0A1, from the
  manufacturer-specific range 0xF000-0xFFFF) holding a 64-byte raw ECDSA P-256 signature,
  r || s, 32 bytes each, big-endian. Other tags are skipped, as ZigBee OTA asks.
* **raw** (the DCC's own sample): anything else; the whole body is the manufacturer image and
  there is no signature.

The signed message is ``header bytes (header_length of them) || SHA-256(manufacturer image)``,
so a device hashes the body once, for the 11.3 check and the signature together, and the
signature still covers every header field (total_image_size included).

The header layout matches zigpy's ``zigpy/ota/image.py`` (``OTAImageHeader``, ``SubElement``),
so files built here parse in that tooling; zigpy reads the optional fields from field control
and ignores header_length, which is why this parser insists the two agree.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

from cryptography.hazmat.primitives.asymmetric.ec import (
    EllipticCurvePrivateKey,
    EllipticCurvePublicKey,
)

from smets1.errors import ImageError
from smets1.eui64 import format_eui64
from smets1.signing import SIGNATURE_BYTES, sign, verify
from smets1.structs import Const, Field, Flag, LVBytes, Struct, Text, binary, u8, u16, u32, u64

__all__ = [
    "DEFAULT_BLOCK_BYTES",
    "FIXED_HEADER_BYTES",
    "HEADER_STRING_BYTES",
    "HEADER_VERSION",
    "LARGE_IMAGE_BYTES",
    "OTA_MAGIC",
    "SIGNATURE_BYTES",
    "SIGNATURE_TAG",
    "SUBELEMENT_HEAD_BYTES",
    "UPGRADE_IMAGE_TAG",
    "FieldControl",
    "ImageError",
    "OtaHeader",
    "OtaImage",
    "SubElement",
    "build_image",
    "header_length_for",
    "image_summary",
    "parse_image",
    "seeded_body",
    "signed_message",
    "verify_signature",
]

OTA_MAGIC = 0x0BEEF11E
HEADER_VERSION = 0x0100
# MP230: a SMETS1 image over 750 kB is "large"; exactly 750,000 bytes is not.
LARGE_IMAGE_BYTES = 750_000
DEFAULT_BLOCK_BYTES = 1024
HEADER_STRING_BYTES = 32
UPGRADE_IMAGE_TAG = 0x0000
# Manufacturer-specific range (0xF000-0xFFFF) so it cannot collide with the ZigBee-defined
# Certicom signature tags 0x0001/0x0005, whose content (signer IEEE address, ECQV certificate)
# we do not produce; 0xF000 itself is avoided because zigpy treats it as Telink's encrypted tag.
SIGNATURE_TAG = 0xF0A1


class FieldControl(enum.IntFlag):
    """Header field control: which optional header fields follow total_image_size."""

    SECURITY_CREDENTIAL_VERSION = 0x0001
    DEVICE_SPECIFIC_FILE = 0x0002
    HARDWARE_VERSIONS = 0x0004


def _is_header_version(value: int, _: Mapping[str, Any]) -> str | None:
    if value == HEADER_VERSION:
        return None
    return f"expected 0x{HEADER_VERSION:04X}, got 0x{value:04X}"


def _announces_known_fields_only(value: int, _: Mapping[str, Any]) -> str | None:
    # An unknown bit announces a field of unknown size: the rest of the header cannot be
    # located with confidence, and a meter must not guess about firmware.
    fc = int(value)
    if not fc & ~_KNOWN_FIELD_CONTROL:
        return None
    return (
        f"reserved bits 0x{fc & ~_KNOWN_FIELD_CONTROL:04X} set in 0x{fc:04X};"
        f" expected only bits 0x{_KNOWN_FIELD_CONTROL:04X}"
    )


def _length_as_announced(length: int, fields: Mapping[str, Any]) -> str | None:
    fc = int(fields["field_control"])
    expected = header_length_for(fc)
    if length == expected:
        return None
    return f"field control 0x{fc:04X} announces {expected} bytes, header says {length}"


@binary(
    endian="<",
    error=ImageError,
    truncated="expected {size} bytes, file has {left} left",
    frozen=True,
)
class OtaHeader(Struct):
    """An OTA file header, declared once: the layout, the optional fields that field
    control announces, and the checks a parser makes as it reads. Construction checks that
    field control, the optional fields and header_length agree, so every instance
    serializes to a header this module parses."""

    MAGIC: ClassVar[
        Annotated[int, u32, Const("expected 0x{expected:08X}, got 0x{got:08X}", name="magic")]
    ] = OTA_MAGIC

    header_version: Annotated[int, u16, Field(check=_is_header_version)]
    # Checked once field control, which says how long the header is, has been read.
    header_length: Annotated[
        int, u16, Field(check=_length_as_announced, check_after="field_control")
    ]
    field_control: Annotated[FieldControl, u16, Field(check=_announces_known_fields_only)]
    manufacturer_code: Annotated[int, u16]
    image_type: Annotated[int, u16]
    file_version: Annotated[int, u32]
    stack_version: Annotated[int, u16]
    # Decoded with surrogateescape so bytes that are not UTF-8 survive a round trip exactly;
    # render with image_summary (backslash escapes) before printing.
    header_string: Annotated[str, Text(HEADER_STRING_BYTES)]
    total_image_size: Annotated[int, u32]
    security_credential_version: Annotated[
        int | None,
        u8,
        Field(requires=Flag("field_control", FieldControl.SECURITY_CREDENTIAL_VERSION)),
    ] = None
    upgrade_file_destination: Annotated[
        int | None, u64, Field(requires=Flag("field_control", FieldControl.DEVICE_SPECIFIC_FILE))
    ] = None
    min_hardware_version: Annotated[
        int | None, u16, Field(requires=Flag("field_control", FieldControl.HARDWARE_VERSIONS))
    ] = None
    max_hardware_version: Annotated[
        int | None, u16, Field(requires=Flag("field_control", FieldControl.HARDWARE_VERSIONS))
    ] = None

    def __post_init__(self) -> None:
        layout = OtaHeader.LAYOUT
        layout.check_ranges(self)
        fc = int(self.field_control)
        if fc & ~_KNOWN_FIELD_CONTROL:
            raise ValueError(f"field_control 0x{fc:04X} sets reserved bits")
        layout.check_presence(self)
        if self.header_length != header_length_for(fc):
            raise ValueError(
                f"header_length {self.header_length} disagrees with field_control 0x{fc:04X}"
                f" ({header_length_for(fc)} bytes)"
            )
        raw_string = self._header_string_bytes()
        if len(raw_string) > HEADER_STRING_BYTES:
            raise ValueError(
                f"header_string is {len(raw_string)} bytes in UTF-8, at most"
                f" {HEADER_STRING_BYTES} fit"
            )
        if raw_string.endswith(b"\x00"):
            raise ValueError("header_string must not end with NUL: NUL is the padding")
        if not isinstance(self.field_control, FieldControl):
            object.__setattr__(self, "field_control", FieldControl(fc))

    def _header_string_bytes(self) -> bytes:
        return self.header_string.encode("utf-8", "surrogateescape")


_KNOWN_FIELD_CONTROL = OtaHeader.LAYOUT.all_flags("field_control")


@functools.lru_cache(maxsize=64)
def header_length_for(field_control: int) -> int:
    """The header length in bytes that field control announces (cached: three bits
    of field control mean anything)."""
    return OtaHeader.LAYOUT.size(field_control=field_control)


FIXED_HEADER_BYTES = header_length_for(0)


@binary(endian="<", error=ImageError)
class SubElement(Struct):
    """One element of a sub-element body: a tag, then its data behind a u32 length
    (zigpy's ``SubElement``). `data` decodes as a view into the file."""

    tag: Annotated[int, u16]
    data: Annotated[bytes | memoryview, LVBytes(u32)]


SUBELEMENT_HEAD_BYTES = len(SubElement(UPGRADE_IMAGE_TAG, b"").serialize())


@dataclass(frozen=True, slots=True)
class OtaImage:
    """A parsed OTA file.

    ``manufacturer_image`` is a zero-copy view into the buffer given to `parse_image`: if that
    buffer is a bytearray the view follows later writes to it, and the bytearray cannot be
    resized while the view lives. Take ``bytes(image.manufacturer_image)`` to keep a copy.
    """

    header: OtaHeader
    header_bytes: bytes
    manufacturer_image: memoryview | bytes
    manufacturer_image_offset: int
    signature: bytes | None
    subelements: bool
    _firmware_hash: bytes | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def firmware_hash(self) -> bytes:
        """SHA-256 of the manufacturer image (32 bytes), computed once."""
        cached = self._firmware_hash
        if cached is None:
            cached = hashlib.sha256(self.manufacturer_image).digest()
            # A frozen dataclass forbids plain assignment; the cache is not part of equality.
            object.__setattr__(self, "_firmware_hash", cached)
        return cached

    @property
    def size_bytes(self) -> int:
        """The whole file, header included: what crosses the network block by block."""
        return self.header.total_image_size

    def is_large(self, threshold: int = LARGE_IMAGE_BYTES) -> bool:
        """MP230 large image: strictly over the threshold."""
        return self.size_bytes > threshold

    def blocks(self, block_size: int = DEFAULT_BLOCK_BYTES) -> int:
        """How many blocks of ``block_size`` bytes carry the whole file (the last may be short)."""
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        return math.ceil(self.size_bytes / block_size)


def _scan_subelements(
    mv: memoryview, start: int
) -> tuple[tuple[int, int], tuple[int, int] | None] | None:
    """Locate the upgrade image and signature data if the body from ``start`` is in strict
    sub-element form; None if it is not (then the body is raw manufacturer bytes).

    Steps element by element, never byte by byte. A second upgrade image or signature element
    also means "not sub-element form": which copy to trust would be a guess.
    """
    end = len(mv)
    pos = start
    image: tuple[int, int] | None = None
    signature: tuple[int, int] | None = None
    while pos < end:
        try:
            element, data_end = SubElement.decode_at(mv, pos)
        except ImageError:
            return None  # a short head, or a length that runs past the end
        data_start = data_end - len(element.data)
        tag = element.tag
        if tag == UPGRADE_IMAGE_TAG:
            if image is not None:
                return None
            image = (data_start, data_end)
        elif tag == SIGNATURE_TAG:
            if signature is not None:
                return None
            signature = (data_start, data_end)
        pos = data_end
    if image is None:
        return None
    return image, signature


def parse_image(data: bytes | bytearray | memoryview) -> OtaImage:
    """Parse a whole OTA file. The header strictly (`ImageError` naming field and offset);
    the body as sub-elements if it is strictly in that form, else as raw manufacturer bytes.

    Copies only the header and signature; the manufacturer image is a view into ``data``.
    """
    mv = memoryview(data).cast("B")
    header, _ = OtaHeader.decode_at(mv, 0)
    if header.total_image_size != len(mv):
        raise ImageError(
            "total_image_size",
            OtaHeader.LAYOUT.offset("total_image_size"),
            f"header says {header.total_image_size}, file has {len(mv)} bytes",
        )
    header_length = header.header_length
    found = _scan_subelements(mv, header_length)
    if found is None:
        return OtaImage(
            header=header,
            header_bytes=bytes(mv[:header_length]),
            manufacturer_image=mv[header_length:],
            manufacturer_image_offset=header_length,
            signature=None,
            subelements=False,
        )
    (image_start, image_end), signature_span = found
    signature = None
    if signature_span is not None:
        signature = bytes(mv[signature_span[0] : signature_span[1]])
    return OtaImage(
        header=header,
        header_bytes=bytes(mv[:header_length]),
        manufacturer_image=mv[image_start:image_end],
        manufacturer_image_offset=image_start,
        signature=signature,
        subelements=True,
    )


def signed_message(image: OtaImage, firmware_hash: bytes | None = None) -> bytes:
    """What the manufacturer signs: header bytes || SHA-256(manufacturer image)."""
    return image.header_bytes + (image.firmware_hash if firmware_hash is None else firmware_hash)


def verify_signature(
    image: OtaImage, public_key: EllipticCurvePublicKey, firmware_hash: bytes | None = None
) -> bool:
    """True if the image carries a signature that ``public_key`` verifies.

    False for a missing, malformed or wrong signature; never raises for those. Pass
    ``firmware_hash`` when the caller has already hashed the manufacturer image (a device
    checking 11.3's hash) so the body is not hashed twice.
    """
    if image.signature is None:
        return False
    return verify(public_key, signed_message(image, firmware_hash), image.signature)


def build_image(
    *,
    manufacturer_code: int,
    image_type: int,
    file_version: int,
    body: bytes,
    private_key: EllipticCurvePrivateKey | None,
    stack_version: int = 2,
    header_string: str = "",
    security_credential_version: int | None = None,
    upgrade_file_destination: int | None = None,
    hardware_versions: tuple[int, int] | None = None,
    subelements: bool | None = None,
) -> bytes:
    """Build an OTA file around the manufacturer image ``body``.

    Signed (``private_key`` given): sub-elements 0x0000 (body) then `SIGNATURE_TAG`.
    Unsigned: header + raw body like the DCC sample, unless ``subelements=True`` asks for a
    lone 0x0000 element (which, unlike a raw body, full ZigBee OTA parsers such as zigpy's
    accept). Raises ValueError for arguments that do not fit the format.
    """
    if subelements is None:
        subelements = private_key is not None
    if private_key is not None and not subelements:
        raise ValueError("a signature needs the sub-element body form; a raw body has no room")
    min_hw, max_hw = hardware_versions if hardware_versions is not None else (None, None)
    if min_hw is not None and max_hw is not None and min_hw > max_hw:
        raise ValueError(f"hardware_versions min {min_hw} is above max {max_hw}")
    optional = {
        "security_credential_version": security_credential_version,
        "upgrade_file_destination": upgrade_file_destination,
        "min_hardware_version": min_hw,
        "max_hardware_version": max_hw,
    }
    fc = FieldControl(OtaHeader.LAYOUT.flags("field_control", **optional))
    header_length = header_length_for(fc)
    body_bytes = len(body)
    if subelements:
        body_bytes += SUBELEMENT_HEAD_BYTES
        if private_key is not None:
            body_bytes += SUBELEMENT_HEAD_BYTES + SIGNATURE_BYTES
    header = OtaHeader(
        header_version=HEADER_VERSION,
        header_length=header_length,
        field_control=fc,
        manufacturer_code=manufacturer_code,
        image_type=image_type,
        file_version=file_version,
        stack_version=stack_version,
        header_string=header_string,
        total_image_size=header_length + body_bytes,
        **optional,
    )
    header_bytes = header.serialize()
    if not subelements:
        return header_bytes + body
    parts = [header_bytes, SubElement(UPGRADE_IMAGE_TAG, body).serialize()]
    if private_key is not None:
        signature = sign(private_key, header_bytes + hashlib.sha256(body).digest())
        parts.append(SubElement(SIGNATURE_TAG, signature).serialize())
    return b"".join(parts)


def image_summary(
    data: bytes | bytearray | memoryview,
    block_size: int = DEFAULT_BLOCK_BYTES,
    large_threshold: int = LARGE_IMAGE_BYTES,
) -> dict[str, Any]:
    """A JSON-ready description of an OTA file, for people and for manufacturers' tooling."""
    image = parse_image(data)
    header = image.header
    destination = header.upgrade_file_destination
    return {
        "header_length": header.header_length,
        "field_control": int(header.field_control),
        "manufacturer_code": header.manufacturer_code,
        "image_type": header.image_type,
        "file_version": header.file_version,
        "stack_version": header.stack_version,
        # backslashreplace: printable and JSON-safe even when the bytes are not UTF-8.
        "header_string": header._header_string_bytes().decode("utf-8", "backslashreplace"),
        "total_image_size": header.total_image_size,
        "security_credential_version": header.security_credential_version,
        "upgrade_file_destination": None if destination is None else format_eui64(destination),
        "min_hardware_version": header.min_hardware_version,
        "max_hardware_version": header.max_hardware_version,
        "size_bytes": image.size_bytes,
        "sha256": hashlib.sha256(data).hexdigest(),
        "firmware_hash": image.firmware_hash.hex(),
        "large": image.is_large(large_threshold),
        "blocks": image.blocks(block_size),
        "block_size": block_size,
        "body_form": "subelements" if image.subelements else "raw",
        "signed": image.signature is not None,
    }


def seeded_body(size: int, seed: int = 0) -> bytes:
    """``size`` bytes of pseudo-random content fixed by ``seed``: the same on every Python and
    every machine (SHAKE-256 output), so pods in a sharded run build identical images."""
    if size < 0:
        raise ValueError(f"size must not be negative, got {size}")
    return hashlib.shake_256(b"smets1-fleet seeded body:%d" % seed).digest(size)
