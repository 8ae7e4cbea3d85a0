"""Config of the device side: models, their links and faults, and the groups of devices.

A link is a named profile (`link: gprs`), a mapping of its fields, or a named profile with
some fields changed (`link: {profile: gprs, latency_seconds: 3}`). Faults are off unless a
`faults:` mapping is given; a group's `link` and `faults` replace its model's.

    models:
      - name: acme-e1
        ...
        link: gprs
        faults: {block_loss_rate: 0.02, boot_failure_rate: 0.01}
    devices:
      - {model: acme-e1, count: 50, firmware_version: 0x01000000,
         link: gprs-poor,
         faults: {offline_windows: [{start_seconds: 0, duration_seconds: 3600}]}}
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, model_validator

from smets1.config_types import U16, U32, Eui64, FilePath, Number, Strict

#: Named link profiles: effective throughput of a SMETS1 WAN module as the DCO sees it.
#: GPRS carries roughly 10-40 kbit/s with a round trip near a second; the jitter is
#: the spread of that round trip.
LINK_PROFILES: dict[str, dict[str, float]] = {
    "gprs": {"bandwidth_bps": 20_000.0, "latency_seconds": 1.5, "jitter_seconds": 0.5},
    "gprs-poor": {"bandwidth_bps": 8_000.0, "latency_seconds": 3.0, "jitter_seconds": 2.0},
    "edge": {"bandwidth_bps": 100_000.0, "latency_seconds": 0.6, "jitter_seconds": 0.2},
    "umts": {"bandwidth_bps": 384_000.0, "latency_seconds": 0.2, "jitter_seconds": 0.1},
}


def _named_link(value: Any) -> Any:
    """`gprs` → the gprs mapping; `{profile: gprs, ...}` → gprs with those fields changed."""
    name = None
    if isinstance(value, str):
        name, value = value, {}
    elif isinstance(value, dict) and "profile" in value:
        value = dict(value)
        name = value.pop("profile")
    if name is None:
        return value
    base = LINK_PROFILES.get(name) if isinstance(name, str) else None
    if base is None:
        raise ValueError(f"unknown link profile {name!r}; known: {', '.join(LINK_PROFILES)}")
    return {**base, **value}


class LinkProfile(Strict):
    """The device's WAN link as the DCO sees it (GPRS-like by default)."""

    bandwidth_bps: float = Field(20_000.0, gt=0)
    #: Round trip; each direction takes half.
    latency_seconds: float = Field(1.0, ge=0)
    #: Up to this much is added, at random, to each frame's trip (0: none).
    jitter_seconds: float = Field(0.0, ge=0)


Link = Annotated[LinkProfile, BeforeValidator(_named_link)]

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class TimeWindow(Strict):
    """A stretch of time from the run's epoch, once or repeating."""

    start_seconds: float = Field(ge=0)
    duration_seconds: float = Field(gt=0)
    #: Repeat every this many seconds (86400: the same hours each day); none: once.
    every_seconds: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _fits(self) -> TimeWindow:
        if self.every_seconds is not None and self.duration_seconds >= self.every_seconds:
            raise ValueError("duration_seconds must be shorter than every_seconds")
        return self


class FaultConfig(Strict):
    """What goes wrong, and how often; every choice comes from the fleet's seed."""

    #: Each block of a run is lost on the way with this probability.
    block_loss_rate: Probability = 0.0
    #: Each block that arrives is corrupted (fails its CRC) with this probability.
    block_corruption_rate: Probability = 0.0
    #: Each frame the device is sent hangs its link with this probability.
    hang_probability: Probability = 0.0
    #: How long a hung link carries nothing, either way.
    hang_seconds: float = Field(1_800.0, gt=0)
    #: Each new transfer suffers a power cut part-way with this probability (a resumed
    #: transfer does not draw again).
    power_loss_during_transfer: Probability = 0.0
    #: Each activation suffers a power cut during its reboot with this probability.
    power_loss_during_activation: Probability = 0.0
    #: How long the power stays off.
    power_off_seconds: float = Field(600.0, gt=0)
    #: The new image fails to boot with this probability; the previous slot boots again.
    boot_failure_rate: Probability = 0.0
    #: The device refuses an INITIATE with this probability (Reason.REFUSED).
    refusal_rate: Probability = 0.0
    #: The device cannot be reached inside these windows.
    offline_windows: list[TimeWindow] = []
    #: If given, the device can be reached only inside these windows (e.g. a meter whose
    #: modem wakes two hours a night: `{start_seconds: 7200, duration_seconds: 7200,
    #: every_seconds: 86400}`); offline windows still apply inside them.
    online_windows: list[TimeWindow] = []


class DeviceModelConfig(Strict):
    name: str
    manufacturer_code: U16
    image_type: U16
    hardware_version: U16
    slot_capacity_bytes: Number = Field(gt=0)
    reboot_seconds: float = Field(60.0, ge=0)
    link: Link = LinkProfile()
    faults: FaultConfig | None = None
    #: PEM file with the manufacturer's public key; default: the demo key of the code.
    public_key: FilePath | None = None


class DeviceGroup(Strict):
    model: str
    count: int = Field(gt=0)
    firmware_version: U32
    #: First device id of the group; default: numbered on from the previous group.
    first_id: Eui64 | None = None
    #: Replaces the model's link for this group.
    link: Link | None = None
    #: Replaces the model's faults for this group.
    faults: FaultConfig | None = None
    #: The User (EUI-64) that supplies these devices: only it, or a Service Desk User
    #: acting for it, may send them 11.2 and 11.3. Required once the config has more than
    #: one supplying User; without it the group's devices belong to no one.
    supplier: Eui64 | None = None
