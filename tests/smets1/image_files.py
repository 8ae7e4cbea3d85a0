"""What the image tests share: the fixture folder and a builder with their defaults."""

from __future__ import annotations

from pathlib import Path

from smets1.image import build_image
from smets1.signing import demo_private_key

FILES = Path(__file__).parent / "files"
MANUFACTURER = 0x1037
DESTINATION = 0x00DB1234567890A0


def build(body: bytes = b"firmware" * 100, /, **overrides: object) -> bytes:
    """An OTA file around `body`, signed with the demo key, any argument changed."""
    kwargs: dict[str, object] = {
        "manufacturer_code": MANUFACTURER,
        "image_type": 0x0001,
        "file_version": 0x01020304,
        "body": body,
        "private_key": demo_private_key(MANUFACTURER),
    }
    kwargs.update(overrides)
    return build_image(**kwargs)  # type: ignore[arg-type]
