"""Config of the device side: models, their links, and the groups of devices."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from smets1.config_types import U16, U32, Eui64, Number, Strict


class LinkProfile(Strict):
    """The device's WAN link as the DCO sees it (GPRS-like by default)."""

    bandwidth_bps: float = Field(20_000.0, gt=0)
    latency_seconds: float = Field(1.0, ge=0)


class DeviceModelConfig(Strict):
    name: str
    manufacturer_code: U16
    image_type: U16
    hardware_version: U16
    slot_capacity_bytes: Number = Field(gt=0)
    reboot_seconds: float = Field(60.0, ge=0)
    link: LinkProfile = LinkProfile()
    #: PEM file with the manufacturer's public key; default: the demo key of the code.
    public_key: Path | None = None


class DeviceGroup(Strict):
    model: str
    count: int = Field(gt=0)
    firmware_version: U32
    #: First device id of the group; default: numbered on from the previous group.
    first_id: Eui64 | None = None
