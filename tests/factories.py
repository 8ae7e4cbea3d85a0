"""Builders the tests share: small signed images and tiny fleet configs."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from emulator.model import DeviceModel
from smets1.image import build_image, seeded_body
from smets1.signing import demo_private_key

ACME = 0x1234


def make_image(
    size_body: int = 20_000,
    *,
    manufacturer: int = ACME,
    image_type: int = 1,
    version: int = 0x02000000,
    hw: tuple[int, int] | None = (1, 5),
    seed: int = 7,
) -> bytes:
    return build_image(
        manufacturer_code=manufacturer,
        image_type=image_type,
        file_version=version,
        body=seeded_body(size_body, seed),
        private_key=demo_private_key(manufacturer),
        hardware_versions=hw,
    )


def tiny_config(**overrides: Any) -> dict[str, Any]:
    """A fleet config as the YAML would give it: 6 devices, a 20 KiB image, fast link."""
    cfg: dict[str, Any] = {
        "name": "tiny",
        "seed": 3,
        "models": [
            {
                "name": "acme-e1",
                "manufacturer_code": ACME,
                "image_type": 1,
                "hardware_version": 3,
                "slot_capacity_bytes": 65536,
                "reboot_seconds": 30,
                "link": {"bandwidth_bps": 100_000, "latency_seconds": 0.5},
            }
        ],
        "devices": [{"model": "acme-e1", "count": 6, "firmware_version": 0x01000000}],
        "images": [
            {
                "name": "acme-2",
                "manufacturer_code": ACME,
                "image_type": 1,
                "file_version": 0x02000000,
                "size_bytes": 20_480,
                "hardware_versions": [1, 5],
            }
        ],
        "campaigns": [
            {
                "name": "c1",
                "user": "90-B3-D5-1F-30-01-00-00",
                "image": "acme-2",
                "devices": {"model": "acme-e1"},
            }
        ],
    }
    cfg.update(overrides)
    return cfg


def device_model(**overrides: Any) -> DeviceModel:
    """The ACME test model (hardware 3, 64 KiB slots, 30 s reboot), with any field changed."""
    base = DeviceModel(
        name="acme-e1",
        manufacturer_code=ACME,
        image_type=1,
        hardware_version=3,
        slot_capacity_bytes=65_536,
        reboot_seconds=30.0,
        public_key=demo_private_key(ACME).public_key(),
        bandwidth_bps=1e5,
        latency_seconds=0.1,
    )
    return replace(base, **overrides)
