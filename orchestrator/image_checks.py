"""`smets1 image validate`: an image checked against a device model, check by check.

The checks are the device's own (emulator.device `Esme._check`), made before the image is
sent anywhere, each with its numbers: the header is well formed and its total size is the
file's; manufacturer code and image type are the model's; the hardware version range
covers the model's; the image fits the model's slot; the signature verifies with the
model's manufacturer key. The image is hashed and its signature checked for real.

A file that cannot be taken as an image at all (not an OTA file, cut short) is not a
failed check but unusable input: `ImageUnusable`, one line, exit status 2.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

from orchestrator.errors import ImageUnusable
from smets1.config_fleet import DeviceModelConfig
from smets1.errors import ImageError
from smets1.image import OtaHeader, OtaImage, parse_image, verify_signature
from smets1.signing import demo_private_key, load_verifying_key

__all__ = [
    "Check",
    "CheckName",
    "ImageUnusable",
    "Outcome",
    "model_key",
    "read_image",
    "validate",
]

_TRUNCATED = re.compile(r"file has \d+ left")
_TOTAL_SIZE_OFFSET = OtaHeader.LAYOUT.offset("total_image_size")


class CheckName(enum.Enum):
    HEADER = "header"
    MANUFACTURER = "manufacturer"
    IMAGE_TYPE = "image_type"
    HARDWARE = "hardware_version"
    SLOT = "slot"
    SIGNATURE = "signature"


class Outcome(enum.Enum):
    PASS = "PASS"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class Check:
    name: CheckName
    outcome: Outcome
    #: Why, with the numbers.
    reason: str

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASS

    def as_json(self) -> dict[str, Any]:
        return {"check": self.name.value, "result": self.outcome.value, "reason": self.reason}

    def line(self) -> str:
        return f"{self.outcome.value} {self.name.value}: {self.reason}"


def _check(name: CheckName, ok: bool, reason: str) -> Check:
    return Check(name, Outcome.PASS if ok else Outcome.FAIL, reason)


@dataclass(frozen=True, slots=True)
class ReadImage:
    """An image as far as it parses: `image` is None when the header is malformed."""

    image: OtaImage | None
    header_check: Check
    file_bytes: int


def read_image(data: bytes) -> ReadImage:
    """Parse `data` for validation. ImageUnusable for what is not an image or is cut
    short; a header that parses but is wrong gives a failed header check."""
    try:
        image = parse_image(data)
    except ImageError as exc:
        if exc.field == "magic" or _TRUNCATED.search(exc.message):
            raise ImageUnusable(_unusable(exc)) from None
        if exc.field != "total_image_size":
            return ReadImage(None, _check(CheckName.HEADER, False, str(exc)), len(data))
        header, _ = OtaHeader.decode_at(memoryview(data), 0)
        total = header.total_image_size
        if total > len(data):
            raise ImageUnusable(
                f"truncated: total_image_size at offset {_TOTAL_SIZE_OFFSET} says"
                f" {total:,} bytes, the file has {len(data):,} ({total - len(data):,} missing)"
            ) from None
        try:  # more bytes than the header says: the image itself can still be checked
            image = parse_image(memoryview(data)[:total])
        except ImageError as inner:
            return ReadImage(None, _check(CheckName.HEADER, False, str(inner)), len(data))
        return ReadImage(
            image,
            _check(
                CheckName.HEADER,
                False,
                f"total_image_size at offset {_TOTAL_SIZE_OFFSET} says {total:,} bytes, the"
                f" file has {len(data):,} ({len(data) - total:,} bytes past its end)",
            ),
            len(data),
        )
    h = image.header
    return ReadImage(
        image,
        _check(
            CheckName.HEADER,
            True,
            f"well formed: header {h.header_length} bytes, field control"
            f" 0x{int(h.field_control):04X}, total_image_size {h.total_image_size:,} = file"
            f" size {len(data):,}, body {'sub-elements' if image.subelements else 'raw'}",
        ),
        len(data),
    )


def _unusable(exc: ImageError) -> str:
    if exc.field == "magic":
        return f"not a ZigBee OTA image: {exc}"
    return f"truncated: {exc}"


def model_key(
    model: DeviceModelConfig, public_key: str | None
) -> tuple[EllipticCurvePublicKey, str]:
    """The key an image for `model` must verify with, and its name: `public_key` (a PEM
    public or private key) if given, else the model's `public_key`, else the demo key of
    its manufacturer code. SigningError for a file that cannot be used."""
    if public_key is not None:
        return load_verifying_key(public_key), public_key
    if model.public_key is not None:
        return load_verifying_key(model.public_key), f"{model.public_key} (model {model.name})"
    code = model.manufacturer_code
    return demo_private_key(code).public_key(), f"demo key of manufacturer 0x{code:04X}"


def validate(
    read: ReadImage, model: DeviceModelConfig, key: EllipticCurvePublicKey, key_name: str
) -> list[Check]:
    """Every check, in order; those after a malformed header fail as not checked."""
    checks = [read.header_check]
    image = read.image
    if image is None:
        why = "not checked: the header is not well formed"
        return checks + [Check(name, Outcome.FAIL, why) for name in list(CheckName)[1:]]
    h = image.header
    checks.append(
        _check(
            CheckName.MANUFACTURER,
            h.manufacturer_code == model.manufacturer_code,
            f"image 0x{h.manufacturer_code:04X}, model {model.name} 0x"
            f"{model.manufacturer_code:04X}",
        )
    )
    checks.append(
        _check(
            CheckName.IMAGE_TYPE,
            h.image_type == model.image_type,
            f"image 0x{h.image_type:04X}, model {model.name} 0x{model.image_type:04X}",
        )
    )
    lo, hi = h.min_hardware_version, h.max_hardware_version
    hw = model.hardware_version
    if lo is None or hi is None:
        checks.append(
            _check(
                CheckName.HARDWARE,
                True,
                f"the header names no range (field control bit 2 clear): the device takes"
                f" any hardware; model {model.name} is {hw}",
            )
        )
    else:
        checks.append(
            _check(
                CheckName.HARDWARE,
                lo <= hw <= hi,
                f"image covers {lo}..{hi}, model {model.name} is {hw}",
            )
        )
    size = image.size_bytes
    slot = model.slot_capacity_bytes
    if size <= slot:
        why = f"{size:,} bytes in a slot of {slot:,} ({slot - size:,} to spare)"
    else:
        why = f"{size:,} bytes, {size - slot:,} more than the slot of {slot:,}"
    checks.append(_check(CheckName.SLOT, size <= slot, why))
    firmware_hash = image.firmware_hash.hex()
    if image.signature is None:
        body = "sub-elements" if image.subelements else "raw"
        checks.append(
            _check(
                CheckName.SIGNATURE,
                False,
                f"not signed (body form {body}); FirmwareHash {firmware_hash}",
            )
        )
    else:
        ok = verify_signature(image, key)
        said = "verifies" if ok else "does NOT verify"
        checks.append(
            _check(
                CheckName.SIGNATURE,
                ok,
                f"{said} with {key_name}; FirmwareHash {firmware_hash}",
            )
        )
    return checks
