"""What the devices of a fleet are made of: their model, their link, their shared profile.

`DeviceModel` is what every meter of one model shares (codes, hardware version, slot size,
reboot time, the manufacturer's public key); `Link` is a WAN link as the DCO sees it;
`DeviceProfile` ties a model, a link and a `FaultModel` (emulator.faults) to the devices
of one config group. The device (emulator.device), the faults and the fleet host
(emulator.fleet) all stand on these types, and these import none of them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

from emulator.faults import FaultModel
from smets1.config_fleet import LinkProfile


@dataclass(frozen=True, slots=True)
class DeviceModel:
    """What every device of one model shares."""

    name: str
    manufacturer_code: int
    image_type: int
    hardware_version: int
    slot_capacity_bytes: int
    reboot_seconds: float
    public_key: EllipticCurvePublicKey
    bandwidth_bps: float
    latency_seconds: float


@dataclass(frozen=True, slots=True)
class Link:
    bandwidth_bps: float
    latency_seconds: float  # round trip; each direction takes half
    jitter_seconds: float = 0.0

    @classmethod
    def from_config(cls, cfg: LinkProfile) -> Link:
        return cls(cfg.bandwidth_bps, cfg.latency_seconds, cfg.jitter_seconds)


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """What the devices of one group share: model, link, faults, seed, counters."""

    model: DeviceModel
    link: Link
    faults: FaultModel | None = None
    seed: int = 0
    #: Entries into each state, by every device of this profile (shared per fleet).
    transitions: Counter[str] = field(default_factory=Counter)


def default_profile(model: DeviceModel) -> DeviceProfile:
    """A profile with the model's own link and no faults (devices built one by one)."""
    return DeviceProfile(model, Link(model.bandwidth_bps, model.latency_seconds))
