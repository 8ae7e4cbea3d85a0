"""What the DCC side asks of the DCO, and what it gets back (SRV 11.1, 11.2, 11.3).

The scheduler codes against `DcoApi`; the DCO mock implements it in process, and an HTTP
client implements it across processes. Neither component imports the other.

The answers are plain slotted dataclasses in process; their field types also say how each
value travels as JSON (a device id as EUI-64 text, a hash as hex, a state or reason as
its wire code), so `smets1.dco_http` validates and writes these very classes with
pydantic, and no second declaration of them exists to drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from pydantic import Field, PlainSerializer, PlainValidator

from smets1.codes import DeviceState, Reason
from smets1.config_types import U16, U32
from smets1.eui64 import format_eui64, parse_eui64


def _device_id(value: Any) -> int:
    if isinstance(value, str):
        return parse_eui64(value)
    if isinstance(value, int) and 0 <= value < 1 << 64:
        return value
    raise ValueError(f"expected an EUI-64 like 00-DB-12-34-56-78-90-A0, got {value!r}")


def _hash(value: Any) -> bytes:
    if isinstance(value, bytes) and len(value) == 32:
        return value
    if isinstance(value, str) and len(value) == 64:
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    raise ValueError(f"expected a SHA-256 as 64 hex digits, got {str(value)[:80]!r}")


def _code(enum: type[DeviceState] | type[Reason]) -> Any:
    def validate(value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0xFF:
            return enum(value)  # an unknown code becomes undefined_0x.., not an error
        raise ValueError(f"expected a {enum.__name__} code 0-255, got {value!r}")

    return validate


#: A device id: an int in process, EUI-64 text (`00-DB-12-...`) in JSON.
DeviceId = Annotated[
    int, PlainValidator(_device_id), PlainSerializer(format_eui64, return_type=str)
]
#: A FirmwareHash: 32 bytes in process, 64 hex digits in JSON.
FirmwareHash = Annotated[bytes, PlainValidator(_hash), PlainSerializer(bytes.hex, return_type=str)]
#: A state or reason: its open enum in process, its wire code in JSON.
StateCode = Annotated[
    DeviceState, PlainValidator(_code(DeviceState)), PlainSerializer(int, return_type=int)
]
ReasonCode = Annotated[Reason, PlainValidator(_code(Reason)), PlainSerializer(int, return_type=int)]
Count = Annotated[int, Field(ge=0)]


@dataclass(frozen=True, slots=True)
class StoredImage:
    """The 11.1 response: the DCO holds every block of this image."""

    firmware_hash: FirmwareHash
    size_bytes: Count
    file_version: U32
    manufacturer_code: U16
    image_type: U16
    blocks: Count
    stored_at: float


@dataclass(frozen=True, slots=True)
class ActivationOutcome:
    """The 11.3 response: the image went to the device and was (or was not) activated."""

    device_id: DeviceId
    ok: bool
    state: StateCode
    reason: ReasonCode
    running_version: U32
    blocks_sent: Count
    bytes_sent: Count
    started_at: float
    finished_at: float
    rounds: Count


@dataclass(frozen=True, slots=True)
class VersionReading:
    """The 11.2 response."""

    device_id: DeviceId
    ok: bool
    running_version: U32
    pending_version: U32 | None
    state: StateCode
    reason: ReasonCode
    read_at: float


class DcoApi(Protocol):
    async def update_firmware(self, image: bytes) -> StoredImage: ...

    async def activate_firmware(
        self,
        device_id: int,
        firmware_hash: bytes,
        execution_time: float = 0.0,
        originator: int | None = None,
    ) -> ActivationOutcome:
        """`originator`: the User whose 11.3 this is; the DCO never ends one originator's
        request because of another's."""
        ...

    async def read_firmware_version(self, device_id: int) -> VersionReading: ...
