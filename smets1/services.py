"""What the DCC side asks of the DCO, and what it gets back (SRV 11.1, 11.2, 11.3).

The scheduler codes against `DcoApi`; the DCO mock implements it in process, and an HTTP
client implements it across processes. Neither component imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from smets1.codes import DeviceState, Reason


@dataclass(frozen=True, slots=True)
class StoredImage:
    """The 11.1 response: the DCO holds every block of this image."""

    firmware_hash: bytes
    size_bytes: int
    file_version: int
    manufacturer_code: int
    image_type: int
    blocks: int
    stored_at: float


@dataclass(frozen=True, slots=True)
class ActivationOutcome:
    """The 11.3 response: the image went to the device and was (or was not) activated."""

    device_id: int
    ok: bool
    state: DeviceState
    reason: Reason
    running_version: int
    blocks_sent: int
    bytes_sent: int
    started_at: float
    finished_at: float
    rounds: int


@dataclass(frozen=True, slots=True)
class VersionReading:
    """The 11.2 response."""

    device_id: int
    ok: bool
    running_version: int
    pending_version: int | None
    state: DeviceState
    reason: Reason
    read_at: float


class DcoApi(Protocol):
    async def update_firmware(self, image: bytes) -> StoredImage: ...

    async def activate_firmware(
        self, device_id: int, firmware_hash: bytes, execution_time: float = 0.0
    ) -> ActivationOutcome: ...

    async def read_firmware_version(self, device_id: int) -> VersionReading: ...
